"""Reading the committed dashboards, and lint rules in the spirit of grafana/dashboard-linter.

The rules work on the JSON as Grafana loads it; PromQL is parsed with ``promql-parser`` after
the dashboard variables are replaced by recognisable stand-ins (so a test can tell that a range
was ``$__rate_interval`` and that a matcher used ``$job``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.grafana.tools import require_module

promql_parser = require_module(
    "promql_parser", "pip install promql-parser==0.12.0 (it parses PromQL for the lint rules)"
)

REPO = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = REPO / "grafana" / "dashboards"
PROVISIONING_DIR = REPO / "grafana" / "provisioning"
METRICS_DOC = REPO / "docs" / "metrics.md"

#: Stand-ins used when parsing for lint: distinctive but valid PromQL.
RATE_INTERVAL_STANDIN = timedelta(seconds=1337)
RANGE_STANDIN = timedelta(seconds=1335)
LINT_VALUES = {
    "__rate_interval": "1337s",
    "__interval": "1336s",
    "__range": "1335s",
    "job": "__gecko_job__",
    "instance": "__gecko_instance__",
}
#: Values Grafana would send for "All" (allValue ".+") with a 1m rate interval: for promtool
#: and for running the queries against a real Prometheus.
QUERY_VALUES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
    "job": ".+",
    "instance": ".+",
}

RATE_FUNCTIONS = frozenset({"rate", "irate", "increase"})
#: Series Prometheus itself creates for each scrape target / alert; not exporter metrics.
PROMETHEUS_SYNTHETIC = frozenset(
    {"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS"}
)
_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


@dataclass(frozen=True)
class Target:
    """One PromQL expression of a dashboard: a panel target or an annotation."""

    dashboard: str
    panel: str
    ref_id: str
    expr: str
    instant: bool = False
    annotation: bool = False

    @property
    def where(self) -> str:
        kind = "annotation" if self.annotation else "panel"
        return f"{self.dashboard} / {kind} {self.panel!r} / {self.ref_id}"


def load_dashboards(directory: Path = DASHBOARD_DIR) -> dict[str, dict[str, Any]]:
    """File name -> parsed JSON of every committed dashboard."""
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(directory.glob("*.json"))
    }


def iter_panels(board: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel including rows and the panels inside collapsed rows."""
    for panel in board.get("panels") or []:
        yield panel
        yield from panel.get("panels") or []


def content_panels(board: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that shows data (rows left out)."""
    return (p for p in iter_panels(board) if p.get("type") != "row")


def targets(name: str, board: Mapping[str, Any]) -> list[Target]:
    """All PromQL of a dashboard: panel targets and annotation queries."""
    out = [
        Target(
            dashboard=name,
            panel=panel.get("title", ""),
            ref_id=target.get("refId", ""),
            expr=target.get("expr", ""),
            instant=bool(target.get("instant")),
        )
        for panel in content_panels(board)
        for target in panel.get("targets") or []
    ]
    out.extend(
        Target(
            dashboard=name,
            panel=annotation.get("name", ""),
            ref_id="annotation",
            expr=annotation["expr"],
            annotation=True,
        )
        for annotation in (board.get("annotations") or {}).get("list") or []
        if annotation.get("expr")
    )
    return out


def variable_selectors(board: Mapping[str, Any]) -> list[str]:
    """The series selectors inside the ``label_values(<selector>, <label>)`` variable queries."""
    out = []
    for var in (board.get("templating") or {}).get("list") or []:
        query = var.get("query")
        if var.get("type") == "query" and isinstance(query, str):
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
            if match:
                out.append(match.group(1))
    return out


def all_targets() -> list[Target]:
    return [t for name, board in load_dashboards().items() for t in targets(name, board)]


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replace ``$var`` / ``${var}`` with ``values``; an unknown variable raises KeyError."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"unknown dashboard variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(replace, expr)


def parse(expr: str) -> Any:
    """Parse dashboard PromQL (variables replaced by lint stand-ins)."""
    return promql_parser.parse(substitute(expr, LINT_VALUES))


def children(node: Any) -> list[Any]:
    """Direct sub-expressions of a promql-parser node."""
    kind = type(node).__name__
    if kind in {"AggregateExpr"}:
        kids = [node.expr]
        if node.param is not None and not isinstance(node.param, (int, float, str)):
            kids.append(node.param)
        return kids
    if kind in {"UnaryExpr", "ParenExpr", "SubqueryExpr"}:
        return [node.expr]
    if kind == "BinaryExpr":
        return [node.lhs, node.rhs]
    if kind == "Call":
        return [node.args[i] for i in range(len(node.args))]
    if kind == "MatrixSelector":
        return [node.vector_selector]
    return []


def walk(node: Any, parent: Any = None) -> Iterator[tuple[Any, Any]]:
    """Depth-first (node, parent) pairs."""
    yield node, parent
    for child in children(node):
        yield from walk(child, node)


def selectors(node: Any) -> list[Any]:
    """Every VectorSelector in an expression (inside range selectors too)."""
    return [n for n, _ in walk(node) if type(n).__name__ == "VectorSelector"]


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects."""
    return {s.name for s in selectors(parse(expr)) if s.name}


# --- the metric contract (docs/metrics.md) -------------------------------------------------

_ROW = re.compile(r"^\|\s*(`[^|]+)\|\s*([^|]+)\|")


def documented_metrics(doc: Path = METRICS_DOC) -> dict[str, str]:
    """Series name -> type for every metric in the contract (histograms expanded)."""
    out: dict[str, str] = {}
    for line in doc.read_text(encoding="utf-8").splitlines():
        match = _ROW.match(line)
        if not match:
            continue
        kind = match.group(2).strip().split()[0]
        previous = ""
        for written in re.findall(r"`([a-z_:][a-z0-9_:]*)`", match.group(1)):
            name = written
            if written.startswith("_") and previous:
                # "`gecko_table_heap_blocks_hit_total` / `_read_total`": swap the last parts
                parts = written.strip("_").split("_")
                name = "_".join(previous.split("_")[: -len(parts)] + parts)
            previous = name
            if kind == "histogram":
                for suffix in ("_bucket", "_sum", "_count"):
                    out[name + suffix] = "counter"
                out[name] = "histogram"
            else:
                out[name] = kind
    return out


def is_counter_series(name: str, contract: Mapping[str, str]) -> bool:
    """Counters and histogram series: only meaningful through rate/irate/increase."""
    if name in contract:
        return contract[name] == "counter"
    return name.endswith(("_total", "_bucket", "_count", "_sum"))


# --- lint rules ------------------------------------------------------------------------------


def lint_variables(board: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    variables = {v.get("name"): v for v in (board.get("templating") or {}).get("list") or []}
    datasources = [v for v in variables.values() if v.get("type") == "datasource"]
    if len(datasources) != 1 or datasources[0].get("name") != "datasource":
        problems.append(
            "template-datasource-rule: need exactly one datasource variable 'datasource'"
        )
    else:
        ds = datasources[0]
        if ds.get("label") != "Data source" or ds.get("query") != "prometheus":
            problems.append("template-datasource-rule: label 'Data source', query 'prometheus'")
    for name in ("job", "instance"):
        var = variables.get(name)
        if var is None:
            problems.append(f"template-{name}-rule: no '{name}' variable")
            continue
        if var.get("type") != "query":
            problems.append(f"template-{name}-rule: '{name}' must be a query variable")
        if (var.get("datasource") or {}).get("uid") != "${datasource}":
            problems.append(f"template-{name}-rule: '{name}' must query ${{datasource}}")
        if var.get("multi") is not True or var.get("includeAll") is not True:
            problems.append(f"template-{name}-rule: '{name}' must be multi-select with All")
        if var.get("allValue") != ".+":
            problems.append(f"template-{name}-rule: '{name}' allValue must be '.+'")
        if var.get("refresh") != 2:
            problems.append(f"template-on-time-change-reload-rule: '{name}' refresh must be 2")
        query = var.get("query")
        match = re.fullmatch(
            r"label_values\((.+),\s*(\w+)\)", query if isinstance(query, str) else ""
        )
        if match is None or match.group(2) != name:
            problems.append(f"template-label-promql-rule: bad query {query!r} for '{name}'")
        else:
            try:
                parse(match.group(1))
            except (ValueError, KeyError) as exc:
                problems.append(f"template-label-promql-rule: {query!r}: {exc}")
    return problems


def _datasource_uids(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        ds = node.get("datasource")
        if isinstance(ds, dict) and "uid" in ds:
            yield path, str(ds["uid"])
        elif isinstance(ds, str):
            yield path, ds
        for key, value in node.items():
            yield from _datasource_uids(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _datasource_uids(value, f"{path}[{i}]")


def lint_expression(target: Target, contract: Mapping[str, str]) -> list[str]:
    """PromQL rules for one target: parse, rate interval, job/instance matchers, counters."""
    where = target.where
    try:
        tree = parse(target.expr)
    except (ValueError, KeyError) as exc:
        return [f"target-promql-rule: {where}: {exc}"]
    problems = []
    for node, parent in walk(tree):
        kind = type(node).__name__
        if kind == "MatrixSelector":
            problems.extend(_lint_range(where, node, parent, contract))
        elif kind == "VectorSelector":
            problems.extend(_lint_matchers(where, node))
            in_range = type(parent).__name__ == "MatrixSelector"
            if node.name and not in_range and is_counter_series(node.name, contract):
                problems.append(
                    f"target-counter-agg-rule: {where}: counter {node.name} outside rate/increase"
                )
    return problems


def _lint_range(where: str, node: Any, parent: Any, contract: Mapping[str, str]) -> list[str]:
    """Ranges: rate/irate/increase of counters and changes() of gauges over $__rate_interval;
    ``<agg>_over_time`` of gauges over $__rate_interval or the panel's whole $__range."""
    problems = []
    function = parent.func.name if type(parent).__name__ == "Call" else None
    over_time = function is not None and function.endswith("_over_time")
    allowed = {RATE_INTERVAL_STANDIN, RANGE_STANDIN} if over_time else {RATE_INTERVAL_STANDIN}
    if node.range not in allowed:
        problems.append(f"target-rate-interval-rule: {where}: range is not $__rate_interval")
    name = node.vector_selector.name
    counter = bool(name) and is_counter_series(name, contract)
    if counter and function not in RATE_FUNCTIONS:
        problems.append(f"target-counter-agg-rule: {where}: {name} range outside rate/increase")
    if not counter and function != "changes" and not over_time:
        problems.append(f"target-counter-agg-rule: {where}: {function}() over gauge {name}")
    return problems


def _lint_matchers(where: str, node: Any) -> list[str]:
    problems = []
    matchers = {m.name: m for m in node.matchers.matchers}
    for label in ("job", "instance"):
        matcher = matchers.get(label)
        if (
            matcher is None
            or matcher.op != promql_parser.MatchOp.Re
            or not matcher.value.startswith(LINT_VALUES[label])
        ):
            problems.append(f'target-{label}-rule: {where}: {node.name} lacks {label}=~"${label}"')
    return problems


def lint_dashboard(
    name: str,
    board: Mapping[str, Any],
    *,
    contract: Mapping[str, str],
    units: frozenset[str],
    runbook_base: str,
    alerts: frozenset[str],
) -> list[str]:
    """All problems of one dashboard; an empty list means it passes."""
    problems = [f"{name}: {p}" for p in lint_variables(board)]
    if board.get("editable") is not False:
        problems.append(f"{name}: uneditable-dashboard: editable must be false")
    if not board.get("uid"):
        problems.append(f"{name}: dashboard needs a fixed uid")
    for path, uid in _datasource_uids(board):
        if uid != "${datasource}":
            problems.append(f"{name}: hard-coded datasource {uid!r} at {path}")
    ids = [p.get("id") for p in iter_panels(board)]
    if any(not isinstance(i, int) or i <= 0 for i in ids) or len(set(ids)) != len(ids):
        problems.append(f"{name}: panel ids must be unique positive integers, got {ids}")
    titles = [p.get("title") for p in content_panels(board)]
    if len(set(titles)) != len(titles):
        problems.append(f"{name}: duplicate panel titles")
    for panel in content_panels(board):
        where = f"{name} / panel {panel.get('title')!r}"
        if (panel.get("datasource") or {}).get("uid") != "${datasource}":
            problems.append(f"{where}: panel-datasource-rule: use ${{datasource}}")
        if not str(panel.get("title", "")).strip():
            problems.append(f"{where}: panel-title-description-rule: no title")
        description = str(panel.get("description", ""))
        if not description.strip():
            problems.append(f"{where}: panel-title-description-rule: no description")
        elif "Bad:" not in description:
            problems.append(f"{where}: description must say what bad looks like ('Bad: ...')")
        unit = ((panel.get("fieldConfig") or {}).get("defaults") or {}).get("unit")
        if unit not in units:
            problems.append(f"{where}: panel-units-rule: invalid unit {unit!r}")
        panel_targets = panel.get("targets") or []
        if not panel_targets:
            problems.append(f"{where}: panel-no-targets-rule: no targets")
        ref_ids = [t.get("refId") for t in panel_targets]
        if any(not r for r in ref_ids) or len(set(ref_ids)) != len(ref_ids):
            problems.append(f"{where}: refIds must be non-empty and unique, got {ref_ids}")
        if not any(t.get("expr") for t in panel_targets):
            problems.append(f"{where}: target without expr")
        problems.extend(_lint_runbooks(where, panel, runbook_base, alerts))
    for target in targets(name, board):
        problems.extend(lint_expression(target, contract))
    return problems


def runbook_urls(panel: Mapping[str, Any]) -> list[str]:
    """URLs of the panel's links and of its field-override data links."""
    urls = [str(link.get("url", "")) for link in panel.get("links") or []]
    for override in (panel.get("fieldConfig") or {}).get("overrides") or []:
        for prop in override.get("properties") or []:
            if prop.get("id") == "links":
                urls.extend(str(link.get("url", "")) for link in prop.get("value") or [])
    return urls


def _lint_runbooks(
    where: str, panel: Mapping[str, Any], base: str, alerts: frozenset[str]
) -> list[str]:
    urls = [u for u in runbook_urls(panel) if u.startswith(base)]
    if not urls:
        return [f"{where}: no link to an alert runbook"]
    problems = []
    for url in urls:
        page = url.removeprefix(base)
        if page in {"", "${__value.text}.md"}:
            continue  # the runbook index, or a data link templated on the alertname column
        if not page.endswith(".md") or page.removesuffix(".md") not in alerts:
            problems.append(f"{where}: runbook link to unknown alert page {page!r}")
    return problems
