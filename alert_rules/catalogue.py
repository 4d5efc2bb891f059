"""The rule catalogue: every recording and alerting rule, thresholds as placeholders.

Add an alert here (with ``<<thresholdKey>>`` markers), its key to ``thresholds.yaml``, a
runbook ``docs/runbooks/<Alert>.md`` and promtool tests, then run ``python -m
alert_rules.generate``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from alert_rules.tokens import T, from_markers, keys_in, map_strings

#: Prometheus ``job`` label of the exporter's scrape job (the chart's ServiceMonitor uses
#: app.kubernetes.io/name, i.e. "gecko-exporter").
DEFAULT_JOB = "gecko-exporter"

RECORDING_GROUP = "gecko-exporter.recording"
ALERTING_GROUP = "gecko-exporter.alerts"


def le_matcher(key: str) -> str:
    """``le`` matcher for the bucket whose bound is threshold ``key``.

    Go clients print bounds as ``2``, prometheus_client (this exporter) and Prometheus 3
    as ``2.0``; the optional ``.0`` matches both.
    """
    return f'le=~"{T(key)}(\\\\.0)?"'


@dataclass(frozen=True)
class Alert:
    name: str
    severity: str
    expr: str
    for_key: str
    summary: str
    description: str

    def rule(self, runbook_url: Callable[[str], str]) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": textwrap.dedent(self.expr).strip(),
            "for": T(self.for_key),
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": _clean(self.description, join=" "),
                "runbook_url": runbook_url(self.name),
            },
        }


@dataclass(frozen=True)
class Histogram:
    metric: str
    threshold_key: str
    quantiles: tuple[float, ...] = field(default=(0.5, 0.9, 0.99))


HISTOGRAMS = (
    Histogram("gecko_scan_lookup_duration_seconds", "scanLookupSeconds"),
    Histogram("gecko_report_generation_duration_seconds", "reportGenerationSeconds"),
)


def _clean(text: str, join: str = "\n") -> str:
    lines = [line.strip() for line in text.strip().splitlines()]
    return join.join(line for line in lines if line)


def recording_rules() -> list[dict[str, Any]]:
    """Rates and percentiles shared by alerts and dashboards, per (job, instance)."""
    rules: list[dict[str, Any]] = []
    for h in HISTOGRAMS:
        m = h.metric
        rules += [
            {
                "record": f"job:{m}_bucket:rate5m",
                "expr": f"sum by (job, instance, le) (rate({m}_bucket[5m]))",
            },
            {
                "record": f"job:{m}_count:rate5m",
                "expr": f"sum by (job, instance) (rate({m}_count[5m]))",
            },
            {
                "record": f"job:{m}_sum:rate5m",
                "expr": f"sum by (job, instance) (rate({m}_sum[5m]))",
            },
        ]
        for q in h.quantiles:
            rules.append(
                {
                    "record": f"job:{m}:p{round(q * 100)}_rate5m",
                    "expr": f"histogram_quantile({q}, job:{m}_bucket:rate5m)",
                }
            )
        rules.append(
            {
                # Fraction of observations at or under the alert threshold (an exact bucket).
                "record": f"job:{m}:under_threshold_ratio_rate5m",
                "expr": (
                    f"sum by (job, instance) (\n  job:{m}_bucket:rate5m"
                    f"{{{le_matcher(h.threshold_key)}}}\n)\n/\njob:{m}_count:rate5m"
                ),
            }
        )
    return rules + app_query_recording_rules()


#: the three statements of one report (gecko_app_query_*{query}, issue 11)
REPORT_QUERIES = ("report_scan", "report_evidence", "report_issues")


def app_query_recording_rules() -> list[dict[str, Any]]:
    """Mean execution time of the app's statements from real traffic, and of a report."""
    app = "job:gecko_app_query_exec_time_seconds:mean_rate5m"
    return [
        {
            # no calls in the window: no sample (not 0/0)
            "record": app,
            "expr": (
                "sum by (job, instance, query) (rate(gecko_app_query_exec_time_seconds_total[5m]))"
                "\n/\n(sum by (job, instance, query) (rate(gecko_app_query_calls_total[5m])) > 0)"
            ),
        },
        {
            # a report runs its three statements one after the other: the sum of their means
            "record": "job:gecko_app_report_exec_time_seconds:mean_rate5m",
            "expr": f'sum by (job, instance) ({app}{{query=~"{"|".join(REPORT_QUERIES)}"}})',
        },
    ]


def _which(app: str, probe: str) -> str:
    """Description text naming the source that crossed (template on the ``source`` label)."""
    return f'{{{{ if eq $labels.source "app" }}}}{app}{{{{ else }}}}{probe}{{{{ end }}}}'


def _from_app(expr: str, threshold: str) -> str:
    """The app-traffic side of a headline latency alert, labelled ``source="app"``."""
    return f'label_replace({expr}, "source", "app", "", "") > {threshold}'


def _alert(
    name: str, severity: str, expr: str, for_key: str, summary: str, description: str
) -> Alert:
    return Alert(name, severity, from_markers(expr), for_key, summary, from_markers(description))


def alerts(job: str = DEFAULT_JOB) -> list[Alert]:
    """Every alerting rule; ``job`` is the exporter's scrape job (for ``up``).

    Thresholds are written ``<<key>>``; descriptions are Prometheus templates.
    """
    no_index_build = "unless on (job, instance) (gecko_index_builds_in_progress > 0)"
    app_lookup = (
        "sum without (query) "
        '(job:gecko_app_query_exec_time_seconds:mean_rate5m{query="scan_lookup"})'
    )
    app_report = "job:gecko_app_report_exec_time_seconds:mean_rate5m"
    probe_report = "job:gecko_report_generation_duration_seconds:p99_rate5m"
    # which source crossed: real traffic (source="app") or the synthetic probe (no label)
    lookup_source = _which(
        "Mean execution time of the application's own dedupe scan lookups"
        " (real traffic, pg_stat_statements)",
        "p99 of the dedupe scan lookup",
    )
    report_source = _which(
        "Mean execution time of a report in the application's own traffic"
        " (sum of its three statements' means, pg_stat_statements)",
        "p99 of the three report queries",
    )
    return [
        # Headline latency: the exporter's synthetic probe (p99, no `source` label) or the
        # application's real traffic (mean per call from pg_stat_statements, source="app").
        _alert(
            "GeckoScanLookupSlow",
            "warning",
            f"""
            job:gecko_scan_lookup_duration_seconds:p99_rate5m > <<scanLookupSeconds>>
            or
            {_from_app(app_lookup, "<<scanLookupSeconds>>")}
            """,
            "scanLookupFor",
            "Gecko scan dedupe lookups are slow.",
            f"""
            {lookup_source} on {{{{ $labels.instance }}}} is
            {{{{ $value | humanizeDuration }}}} over the last 5m
            (threshold {{{{ <<scanLookupSeconds>> | humanizeDuration }}}}).
            """,
        ),
        _alert(
            "GeckoReportGenerationSlow",
            "warning",
            f"""
            job:gecko_report_generation_duration_seconds:p99_rate5m > <<reportGenerationSeconds>>
            or
            {_from_app(app_report, "<<reportGenerationSeconds>>")}
            """,
            "reportGenerationFor",
            "Gecko report generation is slow.",
            f"""
            {report_source} on {{{{ $labels.instance }}}} is
            {{{{ $value | humanizeDuration }}}} over the last 5m
            (warning threshold {{{{ <<reportGenerationSeconds>> | humanizeDuration }}}}).
            """,
        ),
        _alert(
            "GeckoReportGenerationSlow",
            "critical",
            f"""
            {probe_report} > <<reportGenerationCriticalSeconds>>
            or
            {_from_app(app_report, "<<reportGenerationCriticalSeconds>>")}
            """,
            "reportGenerationCriticalFor",
            "Gecko report generation is slow.",
            f"""
            {report_source} on {{{{ $labels.instance }}}} is
            {{{{ $value | humanizeDuration }}}} over the last 5m
            (critical threshold {{{{ <<reportGenerationCriticalSeconds>> | humanizeDuration }}}}):
            report pages are timing out for users.
            """,
        ),
        _alert(
            "GeckoConnectionPoolSaturated",
            "warning",
            "gecko_connection_pool_utilization_ratio > <<poolUtilizationRatio>>",
            "poolUtilizationFor",
            "A Gecko database connection pool is nearly full.",
            """
            Pool {{ $labels.pool }} on {{ $labels.instance }} is
            {{ $value | humanizePercentage }} in use
            (warning threshold {{ <<poolUtilizationRatio>> | humanizePercentage }}).
            """,
        ),
        _alert(
            "GeckoConnectionPoolSaturated",
            "critical",
            "gecko_connection_pool_utilization_ratio > <<poolUtilizationCriticalRatio>>",
            "poolUtilizationCriticalFor",
            "A Gecko database connection pool is nearly full.",
            """
            Pool {{ $labels.pool }} on {{ $labels.instance }} is
            {{ $value | humanizePercentage }} in use
            (critical threshold {{ <<poolUtilizationCriticalRatio>> | humanizePercentage }}):
            new connections are about to be refused.
            """,
        ),
        _alert(
            "GeckoSlowQuery",
            "warning",
            """
            gecko_longest_active_query_seconds > <<slowQuerySeconds>>
            or on (job, instance)
            (
              gecko_slow_query_threshold_seconds
              and on (job, instance)
              increase(gecko_slow_queries_total[<<slowQueryRecentWindow>>]) > 0
            )
            """,
            "slowQueryFor",
            "An application query on the Gecko database is running too long.",
            """
            An application query in the monitored database on {{ $labels.instance }} has run
            for at least {{ $value | humanizeDuration }}
            (threshold {{ <<slowQuerySeconds>> | humanizeDuration }};
            includes queries seen slow in the last <<slowQueryRecentWindow>>).
            Index builds, VACUUM, ANALYZE and backups are not counted here.
            """,
        ),
        _alert(
            "GeckoSlowQuery",
            "critical",
            "gecko_longest_active_query_seconds > <<slowQueryCriticalSeconds>>",
            "slowQueryCriticalFor",
            "An application query on the Gecko database is running too long.",
            """
            An application query in the monitored database on {{ $labels.instance }} has been
            running for {{ $value | humanizeDuration }}
            (critical threshold {{ <<slowQueryCriticalSeconds>> | humanizeDuration }}):
            it holds back vacuum and may block other sessions.
            """,
        ),
        _alert(
            "GeckoLongIndexBuild",
            "warning",
            'gecko_maintenance_longest_seconds{kind=~"index_build|reindex"}'
            " > <<indexBuildSeconds>>",
            "indexBuildFor",
            "An index build on the Gecko database is taking long.",
            """
            An index build ({{ $labels.kind }}) on {{ $labels.instance }} has run for
            {{ $value | humanizeDuration }}
            (threshold {{ <<indexBuildSeconds>> | humanizeDuration }}): the migration that
            started it is slow or waiting; this is not an application query.
            """,
        ),
        _alert(
            "GeckoLongBackup",
            "warning",
            'gecko_maintenance_longest_seconds{kind="backup"} > <<backupSeconds>>',
            "backupFor",
            "A backup of the Gecko database is taking long.",
            """
            A backup session on {{ $labels.instance }} has held its transaction for
            {{ $value | humanizeDuration }}
            (threshold {{ <<backupSeconds>> | humanizeDuration }}): its snapshot keeps vacuum
            from removing dead rows on every table.
            """,
        ),
        _alert(
            "GeckoExporterDown",
            "critical",
            f'up{{job="{job}"}} == 0 or absent(up{{job="{job}"}})',
            "exporterDownFor",
            "gecko-exporter is down; Gecko alerts cannot fire.",
            """
            {{ if $labels.instance }}Prometheus cannot scrape {{ $labels.instance }}
            (job {{ $labels.job }}, up = {{ $value }}).{{ else }}Prometheus has no target
            of job {{ $labels.job }} at all: the exporter is not deployed or not
            discovered.{{ end }} Every other Gecko alert for it is blind.
            """,
        ),
        _alert(
            "GeckoDatabaseDown",
            "critical",
            "gecko_up == 0",
            "databaseDownFor",
            "The Gecko PostgreSQL database is not answering.",
            """
            gecko-exporter {{ $labels.instance }} has had no successful round trip to
            PostgreSQL within its staleness window (gecko_up = {{ $value }}).
            """,
        ),
        _alert(
            "GeckoProbeFailing",
            "warning",
            """
            sum without (reason) (increase(gecko_probe_failures_total[<<probeFailureWindow>>]))
            /
            increase(gecko_probe_runs_total[<<probeFailureWindow>>])
            > <<probeFailureRatio>>
            """,
            "probeFailingFor",
            "A gecko-exporter probe keeps failing.",
            """
            Probe {{ $labels.probe }} on {{ $labels.instance }} failed
            {{ $value | humanizePercentage }} of its runs in the last <<probeFailureWindow>>
            (threshold {{ <<probeFailureRatio>> | humanizePercentage }});
            its metrics are stale.
            """,
        ),
        _alert(
            "GeckoProbeStalled",
            "warning",
            """
            (
              timestamp(gecko_probe_last_run_timestamp_seconds)
              - gecko_probe_last_run_timestamp_seconds
            )
            > on (job, instance, probe)
            clamp_min(3 * gecko_probe_interval_seconds, <<probeStalledMinSeconds>>)
            """,
            "probeStalledFor",
            "A gecko-exporter probe has stopped running.",
            """
            Probe {{ $labels.probe }} on {{ $labels.instance }} has not completed a run for
            {{ $value | humanizeDuration }} (more than 3 times its interval, and at least
            {{ <<probeStalledMinSeconds>> | humanizeDuration }}): its loop in the exporter is
            stuck or dead, and its metrics are stale.
            """,
        ),
        _alert(
            "GeckoCriticalIndexMissing",
            "critical",
            "gecko_index_present == 0",
            "criticalIndexMissingFor",
            "A critical Gecko index is missing.",
            """
            Index {{ $labels.index }} does not exist on {{ $labels.instance }}
            (gecko_index_present = {{ $value }}): its queries fall back to sequential scans.
            """,
        ),
        _alert(
            "GeckoInvalidIndex",
            "critical",
            f"""
            gecko_index_valid == 0
            and on (job, instance, index) (gecko_index_present == 1)
            {no_index_build}
            """,
            "criticalIndexInvalidFor",
            "A Gecko index is invalid.",
            """
            Critical index {{ $labels.index }} on {{ $labels.instance }} is invalid or
            not ready (gecko_index_valid = {{ $value }}) and no index build is running:
            the planner ignores it.
            """,
        ),
        _alert(
            "GeckoInvalidIndex",
            "warning",
            # the exporter already leaves out tables with a build running
            "gecko_invalid_indexes > 0",
            "invalidIndexFor",
            "A Gecko index is invalid.",
            """
            {{ $value }} invalid index(es) in the application schemas on {{ $labels.instance }},
            not counting tables with a build running: left over from a failed
            CREATE INDEX CONCURRENTLY?
            """,
        ),
        _alert(
            "GeckoQueryPlanRegression",
            "warning",
            """
            gecko_query_plan_uses_index == 0
            and on (job, instance, query, plan, index)
            (
              max_over_time(gecko_query_plan_uses_index[<<queryPlanRegressionLookbackWindow>>]) == 1
            )
            """,
            "queryPlanRegressionFor",
            "A critical Gecko query plan stopped using its index.",
            """
            The {{ $labels.plan }} plan of query {{ $labels.query }} on {{ $labels.instance }}
            no longer uses index {{ $labels.index }} (uses_index = {{ $value }};
            it did within the last <<queryPlanRegressionLookbackWindow>>).
            Plan changes in the last hour:
            {{ with printf
            "sum(increase(gecko_query_plan_changes_total{instance=%q,query=%q,plan=%q}[1h]))"
            $labels.instance $labels.query $labels.plan | query }}
            {{- . | first | value | printf "%.0f" }}{{ end }}.
            """,
        ),
        _alert(
            "GeckoMigrationFailed",
            "critical",
            "gecko_migrations_failed > 0",
            "migrationFailedFor",
            "A Prisma migration failed on the Gecko database.",
            """
            {{ $value }} Prisma migration(s) on {{ $labels.instance }} failed and are not
            rolled back: prisma migrate deploy refuses to run (P3009) and the schema may be
            half-applied.
            """,
        ),
        _alert(
            "GeckoLockQueueBehindDDL",
            "warning",
            "gecko_lock_waiting_behind_access_exclusive > <<lockQueueBackends>>",
            "lockQueueFor",
            "Gecko queries are queued behind a DDL lock request.",
            """
            {{ $value }} backend(s) on {{ $labels.instance }} have waited behind a pending
            ACCESS EXCLUSIVE lock request (DDL without lock_timeout?) for more than
            <<lockQueueFor>>.
            """,
        ),
        _alert(
            "GeckoLockQueueBehindDDL",
            "critical",
            "gecko_lock_waiting_behind_access_exclusive > <<lockQueueBackends>>",
            "lockQueueCriticalFor",
            "Gecko queries are queued behind a DDL lock request.",
            """
            {{ $value }} backend(s) on {{ $labels.instance }} have waited behind a pending
            ACCESS EXCLUSIVE lock request for more than <<lockQueueCriticalFor>>:
            queries on that table are stalled.
            """,
        ),
        # PgBouncer (issue 11 §2; only when the exporter reads a PgBouncer admin console).
        # Its pools' utilization is covered by GeckoConnectionPoolSaturated (pool="pgbouncer/…").
        _alert(
            "GeckoPgBouncerClientsWaiting",
            "warning",
            'gecko_pgbouncer_clients{state="waiting"} > 0',
            "pgbouncerWaitingFor",
            "Clients are queueing in PgBouncer for a database connection.",
            """
            {{ $value }} client(s) of PgBouncer pool {{ $labels.database }}/{{ $labels.user }}
            on {{ $labels.instance }} have been waiting for a server connection for
            <<pgbouncerWaitingFor>>: the pool is exhausted and queries queue.
            """,
        ),
        _alert(
            "GeckoPgBouncerClientsWaiting",
            "critical",
            "gecko_pgbouncer_max_wait_seconds > <<pgbouncerMaxWaitSeconds>>",
            "pgbouncerMaxWaitFor",
            "Clients are queueing in PgBouncer for a database connection.",
            """
            The oldest client waiting in PgBouncer pool {{ $labels.database }}/{{ $labels.user }}
            on {{ $labels.instance }} has waited {{ $value | humanizeDuration }}
            (critical threshold {{ <<pgbouncerMaxWaitSeconds>> | humanizeDuration }}):
            application requests are slowed by the queue.
            """,
        ),
        _alert(
            "GeckoPgBouncerDown",
            "critical",
            "gecko_pgbouncer_up == 0",
            "pgbouncerDownFor",
            "PgBouncer's admin console is not answering.",
            """
            gecko-exporter {{ $labels.instance }} cannot read the PgBouncer admin console
            (gecko_pgbouncer_up = {{ $value }}): PgBouncer is down, frozen or refusing the
            exporter's login, and the application may not reach its database through it.
            """,
        ),
    ]


def alert_names() -> list[str]:
    """Every alert name, in rule order, without duplicates."""
    return list(dict.fromkeys(a.name for a in alerts()))


def token_groups(job: str, runbook_url: Callable[[str], str]) -> dict[str, Any]:
    """The rule file as data, thresholds still as tokens."""
    return {
        "groups": [
            {"name": RECORDING_GROUP, "rules": recording_rules()},
            {"name": ALERTING_GROUP, "rules": [a.rule(runbook_url) for a in alerts(job)]},
        ]
    }


def required_keys() -> list[str]:
    """Threshold keys the rule definitions use, in order of first use."""
    keys: dict[str, None] = {}

    def collect(text: str) -> str:
        keys.update(dict.fromkeys(keys_in(text)))
        return text

    map_strings(token_groups(DEFAULT_JOB, str), collect)
    return list(keys)
