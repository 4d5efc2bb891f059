"""Dashboard 3: "gecko-exporter — self-monitoring".

Is the exporter scraped, are its probes running, succeeding and fresh, how long do scrapes
and probes take, and what does the process cost.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.models import dashboard as dashboard_model

from grafana.panels import (
    GREEN,
    ORANGE,
    RED,
    Common,
    Query,
    Step,
    dashboard,
    rate,
    sel,
    state_timeline,
    table,
    timeseries,
)

UID = "gecko-exporter"
TITLE = "gecko-exporter — self-monitoring"


def _scrape_row(board: dashboard_builder.Dashboard) -> dashboard_builder.Dashboard:
    board = board.with_row(dashboard_builder.Row("Scrapes"))
    return (
        board.with_panel(
            state_timeline(
                Common(
                    title="Exporter scraped (up)",
                    description=(
                        "Whether Prometheus's last scrape of each exporter instance succeeded. "
                        "Bad: a red DOWN lane (GeckoExporterDown) — the process is gone, "
                        "unreachable, or answered /metrics with an error."
                    ),
                    queries=[Query(sel("up"), legend="{{instance}}")],
                    runbooks=["GeckoExporterDown"],
                    unit="none",
                    width=12,
                    height=6,
                    steps=(Step(None, RED), Step(1, GREEN)),
                    mappings=((1, "UP", GREEN), (0, "DOWN", RED)),
                )
            )
        )
        .with_panel(
            state_timeline(
                Common(
                    title="Database reachable (gecko_up)",
                    description=(
                        "Whether the exporter's database round trips succeed. Bad: DOWN while "
                        "the exporter is UP (GeckoDatabaseDown) — PostgreSQL is down, "
                        "unreachable, or refusing the exporter's role."
                    ),
                    queries=[Query(sel("gecko_up"), legend="{{instance}}")],
                    runbooks=["GeckoDatabaseDown"],
                    unit="none",
                    width=12,
                    height=6,
                    steps=(Step(None, RED), Step(1, GREEN)),
                    mappings=((1, "UP", GREEN), (0, "DOWN", RED)),
                )
            )
        )
        .with_panel(
            timeseries(
                Common(
                    title="Scrape duration",
                    description=(
                        "How long Prometheus's scrape of /metrics took. Metrics are served from "
                        "memory, so this should stay in milliseconds. Bad: growing towards the "
                        "scrape timeout (default 10 s; the dashed line marks 1 s) — the exporter "
                        "is starved or the series count exploded."
                    ),
                    queries=[
                        Query(sel("scrape_duration_seconds"), legend="{{instance}}"),
                    ],
                    runbooks=["GeckoExporterDown"],
                    unit="s",
                    steps=(Step(None, GREEN), Step(1, RED)),
                    min=0,
                ),
                threshold_line=True,
            )
        )
        .with_panel(
            timeseries(
                Common(
                    title="Samples per scrape",
                    description=(
                        "Series in each scrape. Bad: steady growth (a label without a bound) "
                        "or a sudden drop (probes no longer reporting)."
                    ),
                    queries=[
                        Query(sel("scrape_samples_scraped"), legend="{{instance}}"),
                    ],
                    runbooks=["GeckoProbeFailing"],
                    unit="short",
                    min=0,
                )
            )
        )
    )


def _probe_row(board: dashboard_builder.Dashboard) -> dashboard_builder.Dashboard:
    board = board.with_row(dashboard_builder.Row("Probes"))
    failures = f"sum by (probe, reason) ({rate('gecko_probe_failures_total')}) * 60"
    return (
        board.with_panel(
            state_timeline(
                Common(
                    title="Probe success",
                    description=(
                        "Whether each probe's last run succeeded (worst instance). Bad: a red "
                        "FAILING lane (GeckoProbeFailing); the failures panel says why."
                    ),
                    queries=[
                        Query(f"min by (probe) ({sel('gecko_probe_success')})", legend="{{probe}}")
                    ],
                    runbooks=["GeckoProbeFailing"],
                    unit="none",
                    width=24,
                    height=9,
                    steps=(Step(None, RED), Step(1, GREEN)),
                    mappings=((1, "OK", GREEN), (0, "FAILING", RED)),
                )
            )
        )
        .with_panel(
            timeseries(
                Common(
                    title="Probe failures per minute by reason",
                    description=(
                        "Failed probe runs per minute by probe and reason (timeout, "
                        "lock_timeout, unavailable, query_error, busy). Bad: any sustained "
                        "failures (GeckoProbeFailing): lock_timeout points at DDL or long "
                        "transactions, unavailable at the database, busy at runs overlapping."
                    ),
                    queries=[Query(failures, legend="{{probe}}: {{reason}}")],
                    runbooks=["GeckoProbeFailing", "GeckoLockQueueBehindDDL"],
                    unit="short",
                    min=0,
                ),
                bars=True,
            )
        )
        .with_panel(
            timeseries(
                Common(
                    title="Probe runs per minute",
                    description=(
                        "Probe runs started per minute. Bad: a probe whose rate drops below "
                        "60 / its interval — its scheduler is stuck or runs are skipped."
                    ),
                    queries=[
                        Query(
                            f"sum by (probe) ({rate('gecko_probe_runs_total')}) * 60",
                            legend="{{probe}}",
                        )
                    ],
                    runbooks=["GeckoProbeFailing"],
                    unit="short",
                    min=0,
                )
            )
        )
        .with_panel(
            timeseries(
                Common(
                    title="Probe duration",
                    description=(
                        "Wall time of each probe's last run (worst instance). Bad: a probe "
                        "getting slower run after run, or durations close to the probe's "
                        "interval (next panel)."
                    ),
                    queries=[
                        Query(
                            f"max by (probe) ({sel('gecko_probe_duration_seconds')})",
                            legend="{{probe}}",
                        )
                    ],
                    runbooks=["GeckoProbeFailing"],
                    unit="s",
                    min=0,
                )
            )
        )
        .with_panel(
            timeseries(
                Common(
                    title="Probe duration / interval",
                    description=(
                        "Last run's duration as a share of the probe's interval. Bad: above the "
                        "dashed 50 % line — runs start to overlap and get skipped (reason "
                        '"busy").'
                    ),
                    queries=[
                        Query(
                            f"max by (probe) ({sel('gecko_probe_duration_seconds')} "
                            f"/ {sel('gecko_probe_interval_seconds')})",
                            legend="{{probe}}",
                        )
                    ],
                    runbooks=["GeckoProbeFailing"],
                    unit="percentunit",
                    steps=(Step(None, GREEN), Step(0.5, RED)),
                    min=0,
                ),
                threshold_line=True,
            )
        )
        .with_panel(
            timeseries(
                Common(
                    title="Probe staleness",
                    description=(
                        "Seconds since each probe's last success, as a multiple of its "
                        "interval. Bad: above the dashed line at 3 intervals — the probe's "
                        "metrics are stale (GeckoProbeFailing)."
                    ),
                    queries=[
                        Query(
                            "max by (probe) ((time() - "
                            f"{sel('gecko_probe_last_success_timestamp_seconds')}) "
                            f"/ {sel('gecko_probe_interval_seconds')})",
                            legend="{{probe}}",
                        )
                    ],
                    runbooks=["GeckoProbeFailing"],
                    unit="short",
                    steps=(Step(None, GREEN), Step(2, ORANGE), Step(3, RED)),
                    min=0,
                ),
                threshold_line=True,
            )
        )
        .with_panel(
            timeseries(
                Common(
                    title="Seconds since last probe success",
                    description=(
                        "time() - last success per probe, in seconds. Bad: a line that keeps "
                        "rising instead of resetting at every interval (GeckoProbeFailing)."
                    ),
                    queries=[
                        Query(
                            "max by (probe) (time() - "
                            f"{sel('gecko_probe_last_success_timestamp_seconds')})",
                            legend="{{probe}}",
                        )
                    ],
                    runbooks=["GeckoProbeFailing"],
                    unit="s",
                    min=0,
                )
            )
        )
    )


def _process_row(board: dashboard_builder.Dashboard) -> dashboard_builder.Dashboard:
    board = board.with_row(dashboard_builder.Row("Process"))
    return (
        board.with_panel(
            timeseries(
                Common(
                    title="Resident memory",
                    description=(
                        "Resident set size of the exporter process. Bad: steady growth over "
                        "hours (a leak, or unbounded label sets) — the pod will be OOM-killed."
                    ),
                    queries=[Query(sel("process_resident_memory_bytes"), legend="{{instance}}")],
                    runbooks=["GeckoExporterDown"],
                    unit="bytes",
                    min=0,
                )
            )
        )
        .with_panel(
            timeseries(
                Common(
                    title="CPU usage",
                    description=(
                        "CPU seconds per second used by the exporter. Bad: near 1 core — probes "
                        "and scrapes will be delayed."
                    ),
                    queries=[
                        Query(
                            f"sum by (job, instance) ({rate('process_cpu_seconds_total')})",
                            legend="{{instance}}",
                        )
                    ],
                    runbooks=["GeckoExporterDown"],
                    unit="percentunit",
                    min=0,
                )
            )
        )
        .with_panel(
            timeseries(
                Common(
                    title="Open file descriptors",
                    description=(
                        "Open file descriptors as a share of the limit. Bad: above the dashed "
                        "80 % line — connections and sockets will start failing."
                    ),
                    queries=[
                        Query(
                            f"{sel('process_open_fds')} / {sel('process_max_fds')}",
                            legend="{{instance}}",
                        )
                    ],
                    runbooks=["GeckoExporterDown"],
                    unit="percentunit",
                    steps=(Step(None, GREEN), Step(0.8, RED)),
                    min=0,
                ),
                threshold_line=True,
            )
        )
        .with_panel(
            table(
                Common(
                    title="Versions",
                    description=(
                        "Exporter, Python and PostgreSQL versions per instance. Bad: instances "
                        "on different exporter versions after a rollout, or a PostgreSQL major "
                        "version the exporter was not tested with."
                    ),
                    queries=[
                        Query(
                            "max by (job, instance, version, python_version) "
                            f"({sel('gecko_exporter_build_info')})",
                            instant=True,
                            table=True,
                        ),
                        Query(
                            "max by (job, instance, version, major) "
                            f"({sel('gecko_postgres_server_info')})",
                            instant=True,
                            table=True,
                        ),
                    ],
                    runbooks=["GeckoExporterDown"],
                ),
                hide_columns=("Time", "Value"),
            )
        )
    )


def build() -> dashboard_model.Dashboard:
    """Build the exporter self-monitoring dashboard model."""
    board = dashboard(
        UID,
        TITLE,
        "Health of gecko-exporter itself: scrapes, probe runs, failures, staleness and the "
        "process's resources.",
    )
    board = _scrape_row(board)
    board = _probe_row(board)
    board = _process_row(board)
    return board.build()
