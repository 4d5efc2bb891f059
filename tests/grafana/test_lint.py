"""Dashboard lint in the spirit of grafana/dashboard-linter, plus the metric contract.

Each rule is also run against a deliberately broken copy of a real dashboard, so a rule that
stopped detecting anything would fail here.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pytest
from grafana_foundation_sdk.models import units as sdk_units

from grafana import panels
from tests.grafana.dashboard_lint import (
    PROMETHEUS_SYNTHETIC,
    REPO,
    Target,
    all_targets,
    content_panels,
    documented_metrics,
    lint_dashboard,
    lint_expression,
    load_dashboards,
    metric_names,
    runbook_urls,
    variable_selectors,
)

UNITS = frozenset(
    value for key, value in vars(sdk_units).items() if isinstance(value, str) and key[0].isupper()
)
CONTRACT = documented_metrics()
ALERTS = frozenset(panels.ALERT_NAMES)
BOARDS = load_dashboards()
#: prometheus_client's process collector (documented by prometheus_client, not docs/metrics.md).
PROCESS_METRICS = frozenset(
    {
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
    }
)


def lint(name: str, board: dict[str, Any]) -> list[str]:
    return lint_dashboard(
        name,
        board,
        contract=CONTRACT,
        units=UNITS,
        runbook_base=panels.RUNBOOK_BASE_URL,
        alerts=ALERTS,
    )


def test_three_dashboards_are_committed() -> None:
    assert sorted(BOARDS) == ["gecko-exporter.json", "gecko-health.json", "gecko-overview.json"]


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_dashboard_passes_lint(name: str) -> None:
    assert lint(name, BOARDS[name]) == []


def test_every_metric_is_in_the_contract() -> None:
    allowed = set(CONTRACT) | PROMETHEUS_SYNTHETIC | PROCESS_METRICS
    unknown = {
        (t.where, metric) for t in all_targets() for metric in metric_names(t.expr) - allowed
    }
    unknown |= {
        (name, metric)
        for name, board in BOARDS.items()
        for selector in variable_selectors(board)
        for metric in metric_names(selector) - allowed
    }
    assert unknown == set()


def test_counters_in_the_contract_are_typed() -> None:
    """The contract parser sees the types the rules depend on."""
    assert CONTRACT["gecko_probe_runs_total"] == "counter"
    assert CONTRACT["gecko_scan_lookup_duration_seconds_bucket"] == "counter"
    assert CONTRACT["gecko_table_heap_blocks_read_total"] == "counter"
    assert CONTRACT["gecko_up"] == "gauge"
    assert CONTRACT["gecko_table_bloat_bytes"] == "gauge"


def test_headline_thresholds_are_drawn() -> None:
    """The four headline stats colour at 100 ms, 2 s, 80 % and 5 s."""
    overview = BOARDS["gecko-overview.json"]
    expected = {
        "Scan lookup p99": (0.1, "s"),
        "Report generation p99": (2, "s"),
        "Connection pool utilization (max)": (0.8, "percentunit"),
        "Longest running query": (5, "s"),
    }
    stats = {p["title"]: p for p in content_panels(overview) if p["title"] in expected}
    assert set(stats) == set(expected)
    for title, (threshold, unit) in expected.items():
        defaults = stats[title]["fieldConfig"]["defaults"]
        steps = defaults["thresholds"]["steps"]
        assert steps[-1] == {"color": "red", "value": threshold}, title
        assert defaults["unit"] == unit
        assert stats[title]["options"]["colorMode"] == "background"
        assert stats[title]["gridPos"]["y"] == 1, f"{title} is not in the top row"


def test_firing_alerts_query_selects_gecko_alerts() -> None:
    exprs = [t.expr for t in all_targets() if "ALERTS" in t.expr]
    assert exprs
    for expr in exprs:
        assert 'alertname=~"Gecko.*"' in expr
        assert 'alertstate="firing"' in expr


def test_runbook_links_name_known_alerts_and_existing_files() -> None:
    linked = set()
    for board in BOARDS.values():
        for panel in content_panels(board):
            for url in runbook_urls(panel):
                match = re.fullmatch(re.escape(panels.RUNBOOK_BASE_URL) + r"(\w+)\.md", url)
                if match:
                    linked.add(match.group(1))
    assert linked <= ALERTS
    assert len(linked) >= 10, f"only {sorted(linked)} are linked"
    runbooks = REPO / "docs" / "runbooks"
    missing = sorted(a for a in linked if not (runbooks / f"{a}.md").is_file())
    assert missing == []


def test_alert_names_match_the_alert_rules() -> None:
    """Every alert the rule files define, and only those, can get a runbook link."""
    rules = REPO / "alert_rules"
    files = [*rules.glob("**/*.yml"), *rules.glob("**/*.yaml")]
    assert files, "alert_rules/ has no rule files"
    text = "\n".join(f.read_text(encoding="utf-8") for f in files)
    defined = set(re.findall(r"alert:\s*['\"]?(Gecko\w+)", text))
    assert defined - ALERTS == set(), "alerts missing from grafana/panels.py ALERT_NAMES"
    assert ALERTS - defined == set(), "dashboards link runbooks of undefined alerts"
    assert len(panels.ALERT_NAMES) == len(ALERTS), "ALERT_NAMES holds a duplicate"


# --- the rules themselves catch what they should ------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _first_timeseries(board: dict[str, Any]) -> dict[str, Any]:
    return next(p for p in content_panels(board) if p["type"] == "timeseries")


def _set_expr(expr: str) -> Mutation:
    def mutate(board: dict[str, Any]) -> None:
        _first_timeseries(board)["targets"][0]["expr"] = expr

    return mutate


def _set_panel(key: str, value: object) -> Mutation:
    def mutate(board: dict[str, Any]) -> None:
        _first_timeseries(board)[key] = value

    return mutate


def _set_variable(name: str, key: str, value: object) -> Mutation:
    def mutate(board: dict[str, Any]) -> None:
        var = next(v for v in board["templating"]["list"] if v["name"] == name)
        var[key] = value

    return mutate


def _dup_ids(board: dict[str, Any]) -> None:
    for panel in board["panels"]:
        panel["id"] = 0


def _empty_ref_id(board: dict[str, Any]) -> None:
    _first_timeseries(board)["targets"][0]["refId"] = ""


def _hardcode_datasource(board: dict[str, Any]) -> None:
    _first_timeseries(board)["targets"][0]["datasource"] = {"type": "prometheus", "uid": "P1"}


SEL = 'job=~"$job", instance=~"$instance"'
BROKEN: dict[str, tuple[Mutation, str]] = {
    "no job matcher": (_set_expr('gecko_up{instance=~"$instance"}'), "target-job-rule"),
    "no instance matcher": (_set_expr('gecko_up{job=~"$job"}'), "target-instance-rule"),
    "fixed job": (_set_expr('gecko_up{job="gecko", instance=~"$instance"}'), "target-job-rule"),
    "fixed range": (
        _set_expr(f"rate(gecko_probe_runs_total{{{SEL}}}[5m])"),
        "target-rate-interval-rule",
    ),
    "over_time of a fixed range": (
        _set_expr(f"max_over_time(gecko_up{{{SEL}}}[10m])"),
        "target-rate-interval-rule",
    ),
    "over_time of a counter": (
        _set_expr(f"max_over_time(gecko_probe_runs_total{{{SEL}}}[$__range])"),
        "target-counter-agg-rule",
    ),
    "raw counter": (_set_expr(f"gecko_probe_runs_total{{{SEL}}}"), "target-counter-agg-rule"),
    "raw bucket": (
        _set_expr(f"gecko_report_generation_duration_seconds_bucket{{{SEL}}}"),
        "target-counter-agg-rule",
    ),
    "rate of gauge": (
        _set_expr(f"rate(gecko_up{{{SEL}}}[$__rate_interval])"),
        "target-counter-agg-rule",
    ),
    "bad promql": (_set_expr(f"sum(gecko_up{{{SEL}}}"), "target-promql-rule"),
    "unknown variable": (_set_expr(f'gecko_up{{{SEL}, pool=~"$pool"}}'), "target-promql-rule"),
    "no description": (_set_panel("description", ""), "panel-title-description-rule"),
    "vague description": (_set_panel("description", "Probe runs."), "what bad looks like"),
    "bad unit": (_set_panel("fieldConfig", {"defaults": {"unit": "furlongs"}}), "panel-units-rule"),
    "no targets": (_set_panel("targets", []), "panel-no-targets-rule"),
    "no runbook": (_set_panel("links", []), "runbook"),
    "fixed panel datasource": (
        _set_panel("datasource", {"type": "prometheus", "uid": "P1"}),
        "panel-datasource-rule",
    ),
    "hard-coded target datasource": (_hardcode_datasource, "hard-coded datasource"),
    "duplicate ids": (_dup_ids, "panel ids"),
    "empty refId": (_empty_ref_id, "refIds"),
    "job not multi": (_set_variable("job", "multi", False), "template-job-rule"),
    "instance allValue": (_set_variable("instance", "allValue", ".*"), "template-instance-rule"),
    "no reload": (_set_variable("job", "refresh", 1), "template-on-time-change-reload-rule"),
    "bad label_values": (
        _set_variable("instance", "query", "label_values(gecko_up{, instance)"),
        "template-label-promql-rule",
    ),
    "datasource label": (
        _set_variable("datasource", "label", "DS"),
        "template-datasource-rule",
    ),
    "editable": (lambda b: b.__setitem__("editable", True), "uneditable-dashboard"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_rule_catches(case: str) -> None:
    mutate, expected = BROKEN[case]
    board = copy.deepcopy(BOARDS["gecko-exporter.json"])
    mutate(board)
    problems = lint("broken.json", board)
    assert any(expected in p for p in problems), problems


def test_rate_interval_rule_accepts_only_the_variable() -> None:
    ok = Target("d", "p", "A", f"sum(rate(gecko_probe_runs_total{{{SEL}}}[$__rate_interval]))")
    assert lint_expression(ok, CONTRACT) == []
    braces = Target("d", "p", "A", f"rate(gecko_probe_runs_total{{{SEL}}}[${{__rate_interval}}])")
    assert lint_expression(braces, CONTRACT) == []
    whole_range = Target("d", "p", "A", f"max(max_over_time(gecko_up{{{SEL}}}[$__range]))")
    assert lint_expression(whole_range, CONTRACT) == []
