"""Dashboard 1: "Gecko Advisor database — overview", the on-call view.

Top row: the four headline signals, each coloured against its alert threshold (scan lookup
p99 100 ms, report generation p99 2 s, pool utilization 80 %, longest running query 5 s).
Below: latency percentiles and heatmaps, pool utilization per pool, query age and slow
queries, firing Gecko alerts, and exporter / probe health.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import stat as stat_builder
from grafana_foundation_sdk.models import dashboard as dashboard_model

from grafana.panels import (
    ONE_IS_GOOD,
    Common,
    PanelBuilder,
    Query,
    Tile,
    bad_from,
    dashboard,
    good_bad,
    heatmap,
    probe_lanes,
    problem_count,
    rate,
    row,
    runbook_data_link,
    sel,
    stat,
    table,
    timeseries,
)

UID = "gecko-overview"
TITLE = "Gecko Advisor database — overview"

SCAN_LOOKUP_THRESHOLD = 0.1
REPORT_THRESHOLD = 2.0
POOL_THRESHOLD = 0.8
SLOW_QUERY_THRESHOLD = 5.0

SCAN_LOOKUP = "gecko_scan_lookup_duration_seconds"
REPORT = "gecko_report_generation_duration_seconds"

#: ALERTS series may lack job/instance (e.g. ``absent()``-based alerts): also match "no label".
ALERT_SELECTOR = (
    'ALERTS{alertname=~"Gecko.*", alertstate="firing", job=~"$job|", instance=~"$instance|"}'
)


def _quantile(q: float, histogram: str, by: str = "job, instance") -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) ({rate(histogram + '_bucket')}))"


def _worst_quantile(q: float, histogram: str) -> str:
    return f"max({_quantile(q, histogram)})"


#: The four headline signals, each with the alert threshold its tile turns red at.
HEADLINES = (
    (
        Tile(
            title="Scan lookup p99",
            description=(
                '99th percentile round trip of the app\'s dedupe lookup on "Scan", '
                "worst instance, measured by the exporter's scan_lookup probe. "
                "Bad: red at 100 ms or more (GeckoScanLookupSlow) — usually a missing or "
                'invalid index on "Scan" or a plan that stopped using it.'
            ),
            expr=_worst_quantile(0.99, SCAN_LOOKUP),
            legend="p99",
            runbooks=["GeckoScanLookupSlow"],
            unit="s",
        ),
        SCAN_LOOKUP_THRESHOLD,
    ),
    (
        Tile(
            title="Report generation p99",
            description=(
                "99th percentile of the three queries behind GET /api/report/:slug, "
                "worst instance. Bad: red at 2 s or more (GeckoReportGenerationSlow) — "
                "look at Evidence/Issue index use and row counts per report."
            ),
            expr=_worst_quantile(0.99, REPORT),
            legend="p99",
            runbooks=["GeckoReportGenerationSlow"],
            unit="s",
        ),
        REPORT_THRESHOLD,
    ),
    (
        Tile(
            title="Connection pool utilization (max)",
            description=(
                "Busiest connection pool: connections in use / usable pool size. "
                "Bad: red at 80 % or more (GeckoConnectionPoolSaturated); at 100 % new "
                "requests queue for a connection or fail."
            ),
            expr=f"max({sel('gecko_connection_pool_utilization_ratio')})",
            legend="max",
            runbooks=["GeckoConnectionPoolSaturated"],
            unit="percentunit",
        ),
        POOL_THRESHOLD,
    ),
    (
        Tile(
            title="Longest running query",
            description=(
                "Age of the oldest non-idle query on the server (exporter sessions "
                "excluded); 0 when nothing runs. Bad: red at 5 s or more "
                "(GeckoSlowQuery) — a stuck query holds locks and a pool connection."
            ),
            expr=f"max({sel('gecko_longest_active_query_seconds')})",
            legend="max",
            runbooks=["GeckoSlowQuery"],
            unit="s",
        ),
        SLOW_QUERY_THRESHOLD,
    ),
)


def _headline(tile: Tile, threshold: float) -> stat_builder.Panel:
    """Headline tile: orange from 80 % of its alert threshold, red at the threshold."""
    ratio = tile.unit == "percentunit"  # a ratio's scale is 0 to 1
    return stat(
        tile.spec(
            width=6,
            height=5,
            steps=bad_from(threshold, warn=round(threshold * 0.8, 6)),
            min=0 if ratio else None,
            max=1 if ratio else None,
        )
    )


def _latency_panels(
    *, name: str, histogram: str, threshold: float, alert: str, what: str
) -> list[PanelBuilder]:
    percentiles = [
        Query(_quantile(q, histogram), legend=f"p{round(q * 100)} {{{{instance}}}}")
        for q in (0.5, 0.9, 0.99)
    ]
    return [
        timeseries(
            Common(
                title=f"{name} latency percentiles",
                description=(
                    f"p50, p90 and p99 of {what} per instance; the dashed line is the alert "
                    f"threshold ({threshold:g} s). Bad: p99 at or above the line for minutes "
                    f"({alert}); p50 rising with p99 means every request is slower, p99 alone "
                    "means a slow minority (locks, cold cache)."
                ),
                queries=percentiles,
                runbooks=[alert],
                unit="s",
                steps=bad_from(threshold),
                min=0,
            ),
            threshold_line=True,
        ),
        heatmap(
            Common(
                title=f"{name} latency distribution",
                description=(
                    f"How many {what} samples fell in each histogram bucket per interval. "
                    f"Bad: the bright band moving up towards or past {threshold:g} s, or a "
                    "second band appearing above the usual one (a bimodal latency, e.g. some "
                    "lookups falling back to a sequential scan)."
                ),
                queries=[
                    Query(
                        f"sum by (le) ({rate(histogram + '_bucket', fn='increase')})",
                        legend="{{le}}",
                        heatmap=True,
                    )
                ],
                runbooks=[alert],
                unit="s",
            )
        ),
    ]


#: the three statements of a report (gecko_app_query_*{query}, issue 11)
REPORT_QUERIES = "report_scan|report_evidence|report_issues"


def _app_mean(query_matcher: str, by: str = "job, instance") -> str:
    """Mean execution time per call of the app's statements from real traffic (no calls: none)."""
    calls = rate("gecko_app_query_calls_total", query_matcher)
    seconds = rate("gecko_app_query_exec_time_seconds_total", query_matcher)
    return f"sum by ({by}) ({seconds})\n/\n(sum by ({by}) ({calls}) > 0)"


def _real_traffic_panels() -> list[PanelBuilder]:
    """The synthetic probe beside the application's own statements (pg_stat_statements)."""
    per_statement = _app_mean(f'query=~"{REPORT_QUERIES}"', by="job, instance, query")
    report_mean = f"sum by (job, instance) (\n{per_statement}\n)"
    return [
        timeseries(
            Common(
                title="Scan lookup: probe p99 and real traffic mean",
                description=(
                    "The exporter's synthetic lookup (p99 of its probe) beside the mean execution "
                    "time of the application's own dedupe lookups from pg_stat_statements (the "
                    "exporter's role left out). Bad: either line at or above the dashed 100 ms "
                    '(GeckoScanLookupSlow, label source="app" for real traffic); real traffic '
                    "slow while the probe is fast points at the app's parameters or plans."
                ),
                queries=[
                    Query(_quantile(0.99, SCAN_LOOKUP), legend="probe p99 {{instance}}"),
                    Query(
                        _app_mean('query="scan_lookup"'), legend="real traffic mean {{instance}}"
                    ),
                ],
                runbooks=["GeckoScanLookupSlow"],
                unit="s",
                steps=bad_from(SCAN_LOOKUP_THRESHOLD),
                min=0,
            ),
            threshold_line=True,
        ),
        timeseries(
            Common(
                title="Report generation: probe p99 and real traffic",
                description=(
                    "The exporter's synthetic report (p99 of its three statements together) beside "
                    "the application's own reports: the sum of the mean execution times of the "
                    "three statements (Scan, Evidence, Issue) from pg_stat_statements. Bad: either "
                    "line at or above the dashed 2 s (GeckoReportGenerationSlow)."
                ),
                queries=[
                    Query(_quantile(0.99, REPORT), legend="probe p99 {{instance}}"),
                    Query(report_mean, legend="real traffic mean {{instance}}"),
                ],
                runbooks=["GeckoReportGenerationSlow"],
                unit="s",
                steps=bad_from(REPORT_THRESHOLD),
                min=0,
            ),
            threshold_line=True,
        ),
        timeseries(
            Common(
                title="Application statements: mean execution time (real traffic)",
                description=(
                    "Mean execution time per call of each of the app's five named statements "
                    "(scan_lookup, report_scan, report_evidence, report_issues, recent_reports), "
                    "from pg_stat_statements. Bad: a statement climbing while its calls stay flat "
                    "(a plan or index problem); recent_reports growing with the Evidence table."
                ),
                queries=[
                    Query(
                        _app_mean('query=~".+"', by="job, instance, query"),
                        legend="{{query}} {{instance}}",
                    )
                ],
                runbooks=["GeckoScanLookupSlow", "GeckoReportGenerationSlow"],
                unit="s",
                min=0,
            )
        ),
        timeseries(
            Common(
                title="Application statements: calls per second (real traffic)",
                description=(
                    "Calls per second of each of the app's five named statements from "
                    "pg_stat_statements. Bad: a sudden drop to 0 while the app is up (the "
                    "statement changed shape, see gecko_app_query_identified) or a surge of "
                    "recent_reports (its Redis cache is down)."
                ),
                queries=[
                    Query(
                        f"sum by (query, instance) ({rate('gecko_app_query_calls_total')})",
                        legend="{{query}} {{instance}}",
                    )
                ],
                runbooks=["GeckoReportGenerationSlow"],
                unit="reqps",
                min=0,
            )
        ),
    ]


def _connections_panels() -> list[PanelBuilder]:
    return [
        timeseries(
            Common(
                title="Connection pool utilization per pool",
                description=(
                    'In use / usable size for each pool (pool="server" is client backends / '
                    "(max_connections - reserved)). Bad: any pool above the dashed 80 % line "
                    "(GeckoConnectionPoolSaturated); flat at 100 % means requests wait for "
                    "connections."
                ),
                queries=[
                    Query(
                        sel("gecko_connection_pool_utilization_ratio"),
                        legend="{{pool}} {{instance}}",
                    )
                ],
                runbooks=["GeckoConnectionPoolSaturated"],
                unit="percentunit",
                steps=bad_from(POOL_THRESHOLD),
                min=0,
                max=1,
            ),
            threshold_line=True,
        ),
        timeseries(
            Common(
                title="Client connections by state",
                description=(
                    "Client backends on the server by state. Bad: idle_in_transaction "
                    "growing (sessions holding locks and snapshots), or active close to the "
                    "pool size."
                ),
                queries=[Query(f"sum by (state) ({sel('gecko_connections')})", legend="{{state}}")],
                runbooks=["GeckoConnectionPoolSaturated"],
                min=0,
            ),
            stack=True,
        ),
        timeseries(
            Common(
                title="Longest running query and idle transaction",
                description=(
                    "Age of the oldest running query and of the oldest idle-in-transaction "
                    "session. Bad: the query line above the dashed 5 s line (GeckoSlowQuery); "
                    "an idle transaction that keeps growing blocks vacuum and DDL."
                ),
                queries=[
                    Query(
                        sel("gecko_longest_active_query_seconds"),
                        legend="running query {{instance}}",
                    ),
                    Query(
                        sel("gecko_longest_idle_in_transaction_seconds"),
                        legend="idle in transaction {{instance}}",
                    ),
                ],
                runbooks=["GeckoSlowQuery"],
                unit="s",
                steps=bad_from(SLOW_QUERY_THRESHOLD),
                min=0,
            ),
            threshold_line=True,
        ),
        timeseries(
            Common(
                title="Slow queries per minute",
                description=(
                    "Queries newly seen running longer than the slow-query threshold "
                    "(default 5 s), per minute, and how many run that long right now. "
                    "Bad: anything above 0 that persists (GeckoSlowQuery)."
                ),
                queries=[
                    Query(
                        f"sum by (job, instance) ({rate('gecko_slow_queries_total')}) * 60",
                        legend="new slow queries/min {{instance}}",
                    ),
                    Query(sel("gecko_slow_queries_running"), legend="running now {{instance}}"),
                ],
                runbooks=["GeckoSlowQuery"],
                steps=bad_from(1),
                min=0,
            )
        ),
    ]


def _alerts_panels() -> list[PanelBuilder]:
    return [
        problem_count(
            Tile(
                title="Firing Gecko alerts (count)",
                description=(
                    "Number of Gecko alerts firing now (0 when none). Bad: anything above 0 — "
                    "the table next to it says which, with runbook links."
                ),
                expr=f"count({ALERT_SELECTOR}) or vector(0)",
                legend="firing",
            ),
            height=8,
        ),
        table(
            Common(
                title="Firing Gecko alerts",
                description=(
                    "Gecko alerts firing now, with their severity. Bad: any row. Click an alert "
                    "name for its runbook."
                ),
                queries=[
                    Query(
                        f"max by (alertname, severity, job, instance) ({ALERT_SELECTOR})",
                        instant=True,
                        table=True,
                    )
                ],
            ),
            hide_columns=("Time", "Value"),
        ).override_by_name("alertname", runbook_data_link()),
        stat(
            Common(
                title="Database reachable (gecko_up)",
                description=(
                    "1 while the exporter's round trips to PostgreSQL succeed, per instance. "
                    "Bad: DOWN (GeckoDatabaseDown); no value at all means the exporter itself "
                    "is not scraped (GeckoExporterDown)."
                ),
                queries=[Query(sel("gecko_up"), legend="{{instance}}")],
                runbooks=["GeckoDatabaseDown", "GeckoExporterDown"],
                unit="none",
                width=8,
                steps=ONE_IS_GOOD,
                mappings=good_bad("UP", "DOWN"),
            )
        ),
        probe_lanes(
            "Probe health",
            "Whether each probe's last run succeeded (worst instance). Bad: a red "
            "FAILING lane (GeckoProbeFailing); that probe's metrics are stale — see "
            "the exporter self-monitoring dashboard for the failure reason.",
        ),
    ]


def build() -> dashboard_model.Dashboard:
    """Build the overview dashboard model."""
    board = dashboard(
        UID,
        TITLE,
        "On-call view of the Gecko Advisor PostgreSQL database: headline latency, pool and "
        "query-age signals against their alert thresholds, firing alerts and probe health.",
    )
    board = row(board, "Headline signals", [_headline(*headline) for headline in HEADLINES])
    latency = [
        *_latency_panels(
            name="Scan lookup",
            histogram=SCAN_LOOKUP,
            threshold=SCAN_LOOKUP_THRESHOLD,
            alert="GeckoScanLookupSlow",
            what='the dedupe lookup on "Scan"',
        ),
        *_latency_panels(
            name="Report generation",
            histogram=REPORT,
            threshold=REPORT_THRESHOLD,
            alert="GeckoReportGenerationSlow",
            what="report generation (Scan + Evidence + Issue queries)",
        ),
    ]
    board = row(board, "Latency", latency)
    board = row(board, "Probe and real traffic", _real_traffic_panels())
    board = row(board, "Connections and queries", _connections_panels())
    board = row(board, "Alerts and exporter health", _alerts_panels())
    return board.build()
