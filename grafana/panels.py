"""Shared building blocks: variables, selectors, runbook links and panel factories.

Every panel made here uses the ``${datasource}`` variable, carries a description and links to
the runbooks of the alerts it explains. PromQL selectors are written with :func:`sel`, which
adds the ``job``/``instance`` matchers of the dashboard variables.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.builders import heatmap as heatmap_builder
from grafana_foundation_sdk.builders import prometheus as prometheus_builder
from grafana_foundation_sdk.builders import stat as stat_builder
from grafana_foundation_sdk.builders import statetimeline as statetimeline_builder
from grafana_foundation_sdk.builders import table as table_builder
from grafana_foundation_sdk.builders import timeseries as timeseries_builder
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dashboard_model
from grafana_foundation_sdk.models import heatmap as heatmap_model
from grafana_foundation_sdk.models import prometheus as prometheus_model

from alert_rules import catalogue

RUNBOOK_BASE_URL = "https://github.com/gecko-advisor/gecko-exporter/blob/main/docs/runbooks/"

#: Alerts defined in ``alert_rules/`` (its catalogue, in order); each has
#: ``docs/runbooks/<name>.md``. Only these can get a runbook link.
ALERT_NAMES: tuple[str, ...] = tuple(dict.fromkeys(alert.name for alert in catalogue.alerts()))

DATASOURCE = dashboard_model.DataSourceRef(type_val="prometheus", uid="${datasource}")

#: Label matchers every selector carries (grafana/dashboard-linter target-job/instance rules).
MATCHERS = 'job=~"$job", instance=~"$instance"'

#: Metric the job/instance variables are read from: exported even while the database is down.
VARIABLE_SOURCE_METRIC = "gecko_exporter_build_info"

TAGS = ["gecko", "postgresql", "gecko-exporter"]

#: What a dashboard's ``with_panel`` takes: any of the panel builders below.
PanelBuilder = Builder[dashboard_model.Panel]

GREEN = "green"
ORANGE = "orange"
RED = "red"
BLUE = "blue"


def sel(metric: str, *matchers: str) -> str:
    """Return ``metric{job=~"$job", instance=~"$instance", <matchers>}``."""
    extra = "".join(f", {m}" for m in matchers)
    return f"{metric}{{{MATCHERS}{extra}}}"


def rate(metric: str, *matchers: str, fn: str = "rate") -> str:
    """Return ``rate(metric{…}[$__rate_interval])`` (or ``increase``/``irate`` via ``fn``)."""
    return f"{fn}({sel(metric, *matchers)}[$__rate_interval])"


def runbook_url(alert: str) -> str:
    """Runbook address of ``alert`` (``docs/runbooks/<alert>.md`` on main)."""
    if alert not in ALERT_NAMES:
        raise ValueError(f"unknown alert {alert!r}")
    return f"{RUNBOOK_BASE_URL}{alert}.md"


def runbook_links(alerts: Sequence[str]) -> list[Builder[dashboard_model.DashboardLink]]:
    """Panel links (the panel header's link menu) to the runbooks of ``alerts``."""
    return [
        dashboard_builder.DashboardLink(f"Runbook: {alert}")
        .type(dashboard_model.DashboardLinkType.LINK)
        .url(runbook_url(alert))
        .target_blank(True)
        .tooltip(f"What to do when {alert} fires")
        for alert in alerts
    ]


def runbook_index_link() -> list[Builder[dashboard_model.DashboardLink]]:
    """Panel link to the list of all runbooks (for panels about every alert)."""
    return [
        dashboard_builder.DashboardLink("Runbooks: all Gecko alerts")
        .type(dashboard_model.DashboardLinkType.LINK)
        .url(RUNBOOK_BASE_URL)
        .target_blank(True)
    ]


def _query_variable(
    name: str, label: str, description: str, query: str
) -> dashboard_builder.QueryVariable:
    """A multi-value, all-by-default label variable read from :data:`VARIABLE_SOURCE_METRIC`."""
    return (
        dashboard_builder.QueryVariable(name)
        .label(label)
        .description(description)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(dashboard_model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard_model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".+")
        .current(dashboard_model.VariableOption(selected=True, text="All", value="$__all"))
    )


def variables() -> list[dashboard_builder.DatasourceVariable | dashboard_builder.QueryVariable]:
    """The datasource, job and instance variables shared by every dashboard."""
    job = _query_variable(
        "job",
        "Job",
        "Prometheus job(s) scraping gecko-exporter.",
        f"label_values({VARIABLE_SOURCE_METRIC}, job)",
    )
    instance = _query_variable(
        "instance",
        "Instance",
        "gecko-exporter instance(s), one per monitored database.",
        f'label_values({VARIABLE_SOURCE_METRIC}{{job=~"$job"}}, instance)',
    )
    datasource = (
        dashboard_builder.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .description("Prometheus server that scrapes gecko-exporter.")
    )
    return [datasource, job, instance]


@dataclass(frozen=True)
class Query:
    """One PromQL target of a panel."""

    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False
    heatmap: bool = False

    def build(self, ref_id: str) -> prometheus_builder.Dataquery:
        target = (
            prometheus_builder.Dataquery()
            .expr(self.expr)
            .ref_id(ref_id)
            .datasource(DATASOURCE)
            .editor_mode(prometheus_model.QueryEditorMode.CODE)
        )
        if self.legend:
            target = target.legend_format(self.legend)
        target = target.instant() if self.instant else target.range()
        if self.table:
            target = target.format(prometheus_model.PromQueryFormat.TABLE)
        elif self.heatmap:
            target = target.format(prometheus_model.PromQueryFormat.HEATMAP)
        return target


@dataclass(frozen=True)
class Step:
    """A threshold step: from ``value`` (``None`` = base) on, colour ``color``."""

    value: float | None
    color: str


def bad_from(limit: float, *, warn: float | None = None) -> tuple[Step, ...]:
    """Green below ``limit`` (orange from ``warn`` on, if given), red from ``limit`` on."""
    if warn is None:
        return (Step(None, GREEN), Step(limit, RED))
    return (Step(None, GREEN), Step(warn, ORANGE), Step(limit, RED))


#: Steps of a 0/1 state in which 1 is good (present, valid, up, succeeding).
ONE_IS_GOOD = (Step(None, RED), Step(1, GREEN))


def good_bad(good: str, bad: str) -> tuple[tuple[float, str, str], ...]:
    """Value mappings of a 0/1 state: 1 reads ``good`` in green, 0 reads ``bad`` in red."""
    return ((1, good, GREEN), (0, bad, RED))


@dataclass(frozen=True)
class Common:
    """What every panel needs: title, description ("what bad looks like"), queries, links."""

    title: str
    description: str
    queries: Sequence[Query]
    runbooks: Sequence[str] = ()
    unit: str = "short"
    width: int = 12
    height: int = 8
    steps: Sequence[Step] = field(default_factory=lambda: (Step(None, GREEN),))
    mappings: Sequence[tuple[float, str, str]] = ()
    min: float | None = None
    max: float | None = None
    decimals: int | None = None


def _ref_ids() -> Callable[[], str]:
    letters = iter("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return lambda: next(letters)


def _thresholds(steps: Sequence[Step]) -> dashboard_builder.ThresholdsConfig:
    return (
        dashboard_builder.ThresholdsConfig()
        .mode(dashboard_model.ThresholdsMode.ABSOLUTE)
        .steps([dashboard_model.Threshold(value=s.value, color=s.color) for s in steps])
    )


def _mappings(mappings: Sequence[tuple[float, str, str]]) -> list[dashboard_model.ValueMapping]:
    if not mappings:
        return []
    options = {
        _format_number(value): dashboard_model.ValueMappingResult(text=text, color=color, index=i)
        for i, (value, text, color) in enumerate(mappings)
    }
    return [dashboard_model.ValueMap(options=options)]


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


P = TypeVar(
    "P",
    timeseries_builder.Panel,
    stat_builder.Panel,
    heatmap_builder.Panel,
    statetimeline_builder.Panel,
    table_builder.Panel,
)


def _apply_common(panel: P, spec: Common) -> P:
    if not spec.description.strip():
        raise ValueError(f"panel {spec.title!r} needs a description")
    next_ref = _ref_ids()
    panel = (
        panel.title(spec.title)
        .description(spec.description)
        .datasource(DATASOURCE)
        .span(spec.width)
        .height(spec.height)
        .unit(spec.unit)
        .thresholds(_thresholds(spec.steps))
    )
    for query in spec.queries:
        panel = panel.with_target(query.build(next_ref()))
    panel = panel.links(runbook_links(spec.runbooks) if spec.runbooks else runbook_index_link())
    if spec.mappings:
        panel = panel.mappings(_mappings(spec.mappings))
    if spec.min is not None:
        panel = panel.min(spec.min)
    if spec.max is not None:
        panel = panel.max(spec.max)
    if spec.decimals is not None:
        panel = panel.decimals(spec.decimals)
    return panel


def timeseries(
    spec: Common,
    *,
    threshold_line: bool = False,
    stack: bool = False,
    bars: bool = False,
) -> timeseries_builder.Panel:
    """Time series; ``threshold_line`` draws the thresholds as dashed lines."""
    panel = _apply_common(timeseries_builder.Panel(), spec)
    panel = (
        panel.line_width(1)
        .fill_opacity(10)
        .show_points(common.VisibilityMode.NEVER)
        .legend(
            common_builder.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
        .tooltip(
            common_builder.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
    )
    if threshold_line:
        panel = panel.thresholds_style(
            common_builder.GraphThresholdsStyleConfig().mode(
                common.GraphThresholdsStyleMode.DASHED_AND_AREA
            )
        )
    if stack:
        panel = panel.stacking(
            common_builder.StackingConfig().mode(common.StackingMode.NORMAL).group("A")
        ).fill_opacity(40)
    if bars:
        panel = panel.draw_style(common.GraphDrawStyle.BARS).fill_opacity(60)
    return panel


def stat(
    spec: Common, *, color_background: bool = True, sparkline: bool = True
) -> stat_builder.Panel:
    """Single number coloured by its thresholds (the headline / state tiles)."""
    panel = _apply_common(stat_builder.Panel(), spec)
    mode = common.BigValueColorMode.VALUE
    if color_background:
        mode = common.BigValueColorMode.BACKGROUND
    return (
        panel.color_mode(mode)
        .graph_mode(common.BigValueGraphMode.AREA if sparkline else common.BigValueGraphMode.NONE)
        .text_mode(common.BigValueTextMode.AUTO)
        .justify_mode(common.BigValueJustifyMode.AUTO)
        .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )


def heatmap(spec: Common) -> heatmap_builder.Panel:
    """Heatmap of a Prometheus histogram; the query must return ``le``-labelled buckets."""
    panel = _apply_common(heatmap_builder.Panel(), spec)
    return (
        panel.calculate(False)
        .color(
            heatmap_builder.HeatmapColorOptions()
            .mode(heatmap_model.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .fill("dark-orange")
            .scale(heatmap_model.HeatmapColorScale.EXPONENTIAL)
            .exponent(0.5)
            .steps(64)
            .reverse(False)
        )
        .y_axis(
            heatmap_builder.YAxisConfig().unit(spec.unit).axis_placement(common.AxisPlacement.LEFT)
        )
        .rows_frame(heatmap_builder.RowsHeatmapOptions().layout(common.HeatmapCellLayout.AUTO))
        .cell_values(heatmap_builder.CellValues().unit("short"))
        .show_value(common.VisibilityMode.NEVER)
        .filter_values(heatmap_builder.FilterValueRange().le(1e-9))
        .show_legend()
        .mode(common.TooltipDisplayMode.SINGLE)
        .show_y_histogram()
        .show_color_scale(True)
    )


def state_timeline(spec: Common) -> statetimeline_builder.Panel:
    """One lane per series, coloured by value mappings / thresholds (index and probe states)."""
    panel = _apply_common(statetimeline_builder.Panel(), spec)
    return (
        panel.show_value(common.VisibilityMode.NEVER)
        .merge_values(True)
        .row_height(0.8)
        .line_width(0)
        .fill_opacity(80)
        .legend(
            common_builder.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    )


def table(spec: Common, *, hide_columns: Sequence[str] = ("Time",)) -> table_builder.Panel:
    """Instant table of the current series; ``hide_columns`` are removed by a transformation."""
    panel = _apply_common(table_builder.Panel(), spec)
    panel = panel.cell_height(common.TableCellHeight.SM).show_header(True)
    if hide_columns:
        panel = panel.with_transformation(
            dashboard_model.DataTransformerConfig(
                id_val="organize",
                options={"excludeByName": dict.fromkeys(hide_columns, True)},
            )
        )
    return panel


@dataclass(frozen=True)
class Tile:
    """A stat tile of one query: a row of the tile tables the dashboards declare."""

    title: str
    description: str
    expr: str
    legend: str
    runbooks: Sequence[str] = ()
    unit: str = "short"

    def spec(
        self,
        *,
        width: int,
        height: int,
        steps: Sequence[Step],
        min: float | None = None,
        max: float | None = None,
    ) -> Common:
        """The tile as a panel spec of the given size and thresholds."""
        return Common(
            title=self.title,
            description=self.description,
            queries=[Query(self.expr, legend=self.legend)],
            runbooks=self.runbooks,
            unit=self.unit,
            width=width,
            height=height,
            steps=steps,
            min=min,
            max=max,
        )


def problem_count(tile: Tile, *, width: int = 4, height: int = 5) -> stat_builder.Panel:
    """Tile counting problems: green at 0, red from 1 on."""
    return stat(tile.spec(width=width, height=height, steps=bad_from(1)))


def info_stat(tile: Tile, *, width: int = 4, height: int = 5) -> stat_builder.Panel:
    """Plain blue tile for a value that has no good or bad threshold."""
    return stat(
        tile.spec(width=width, height=height, steps=(Step(None, BLUE),)),
        color_background=False,
        sparkline=False,
    )


def state_lanes(
    title: str,
    description: str,
    query: Query,
    runbooks: Sequence[str],
    *,
    good: str,
    bad: str,
    width: int = 12,
    height: int = 8,
) -> statetimeline_builder.Panel:
    """State timeline of a 0/1 series per lane: ``good`` in green at 1, ``bad`` in red at 0."""
    return state_timeline(
        Common(
            title=title,
            description=description,
            queries=[query],
            runbooks=runbooks,
            unit="none",
            width=width,
            height=height,
            steps=ONE_IS_GOOD,
            mappings=good_bad(good, bad),
        )
    )


def probe_lanes(title: str, description: str) -> statetimeline_builder.Panel:
    """One lane per probe: whether its last run succeeded, on the worst instance."""
    return state_lanes(
        title,
        description,
        Query(f"min by (probe) ({sel('gecko_probe_success')})", legend="{{probe}}"),
        ["GeckoProbeFailing"],
        good="OK",
        bad="FAILING",
        width=24,
        height=9,
    )


def runbook_data_link() -> list[dashboard_model.DynamicConfigValue]:
    """Field override properties that turn alert-name cells into links to their runbooks."""
    return [
        dashboard_model.DynamicConfigValue(
            id_val="links",
            value=[
                {
                    "title": "Runbook for ${__value.text}",
                    "url": f"{RUNBOOK_BASE_URL}${{__value.text}}.md",
                    "targetBlank": True,
                }
            ],
        )
    ]


def dashboard(uid: str, title: str, description: str) -> dashboard_builder.Dashboard:
    """A read-only dashboard with the shared variables, time range and cross-links."""
    board = (
        dashboard_builder.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .readonly()
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("browser")
        .tooltip(dashboard_model.DashboardCursorSync.CROSSHAIR)
        .link(
            dashboard_builder.DashboardLink("Gecko dashboards")
            .type(dashboard_model.DashboardLinkType.DASHBOARDS)
            .tags(["gecko"])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
        .link(
            dashboard_builder.DashboardLink("Runbooks")
            .type(dashboard_model.DashboardLinkType.LINK)
            .url(RUNBOOK_BASE_URL.removesuffix("/"))
            .icon("doc")
            .target_blank(True)
        )
    )
    for variable in variables():
        board = board.with_variable(variable)
    return board


def row(
    board: dashboard_builder.Dashboard, title: str, panels: Sequence[PanelBuilder]
) -> dashboard_builder.Dashboard:
    """Add a row titled ``title`` followed by ``panels``, in order."""
    board = board.with_row(dashboard_builder.Row(title))
    for panel in panels:
        board = board.with_panel(panel)
    return board


GRID_WIDTH = 24


def layout(board: dashboard_model.Dashboard) -> dashboard_model.Dashboard:
    """Place panels left to right in declaration order, wrapping at the grid width.

    A row starts a new line. (The SDK's own placement lets a panel overflow the right edge.)
    """
    x = y = line_height = 0
    for panel in board.panels or []:
        pos = panel.grid_pos or dashboard_model.GridPos()
        if isinstance(panel, dashboard_model.RowPanel):
            y += line_height
            panel.grid_pos = dashboard_model.GridPos(x=0, y=y, w=GRID_WIDTH, h=1)
            x, y, line_height = 0, y + 1, 0
            continue
        if x + pos.w > GRID_WIDTH:
            x, y, line_height = 0, y + line_height, 0
        panel.grid_pos = dashboard_model.GridPos(x=x, y=y, w=pos.w, h=pos.h)
        x += pos.w
        line_height = max(line_height, pos.h)
    return board


def number_panels(board: dashboard_model.Dashboard) -> dashboard_model.Dashboard:
    """Give every panel and row a unique, stable id (the SDK leaves them all 0)."""
    next_id = 1
    for panel in board.panels or []:
        panel.id_val = next_id
        next_id += 1
        for child in getattr(panel, "panels", None) or []:
            child.id_val = next_id
            next_id += 1
    return board


def render(board: dashboard_model.Dashboard) -> str:
    """Serialise a built dashboard to the committed JSON form (sorted keys, trailing newline)."""
    board = number_panels(layout(board))
    return json.dumps(board, cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
