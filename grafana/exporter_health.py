"""Dashboard 3: "gecko-exporter — self-monitoring".

Is the exporter scraped, are its probes running, succeeding and fresh, how long do scrapes
and probes take, and what does the process cost.
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as dashboard_model

from grafana.panels import (
    Common,
    PanelBuilder,
    Query,
    bad_from,
    dashboard,
    probe_lanes,
    rate,
    row,
    sel,
    state_lanes,
    table,
    timeseries,
)

UID = "gecko-exporter"
TITLE = "gecko-exporter — self-monitoring"


def _per_instance(expr: str) -> Query:
    return Query(expr, legend="{{instance}}")


def _per_probe(expr: str) -> Query:
    """The worst instance's ``expr`` for each probe."""
    return Query(f"max by (probe) ({expr})", legend="{{probe}}")


DURATION = sel("gecko_probe_duration_seconds")
INTERVAL = sel("gecko_probe_interval_seconds")
LAST_SUCCESS = sel("gecko_probe_last_success_timestamp_seconds")


def _scrape_panels() -> list[PanelBuilder]:
    return [
        state_lanes(
            "Exporter scraped (up)",
            "Whether Prometheus's last scrape of each exporter instance succeeded. "
            "Bad: a red DOWN lane (GeckoExporterDown) — the process is gone, "
            "unreachable, or answered /metrics with an error.",
            _per_instance(sel("up")),
            ["GeckoExporterDown"],
            good="UP",
            bad="DOWN",
            height=6,
        ),
        state_lanes(
            "Database reachable (gecko_up)",
            "Whether the exporter's database round trips succeed. Bad: DOWN while "
            "the exporter is UP (GeckoDatabaseDown) — PostgreSQL is down, "
            "unreachable, or refusing the exporter's role.",
            _per_instance(sel("gecko_up")),
            ["GeckoDatabaseDown"],
            good="UP",
            bad="DOWN",
            height=6,
        ),
        timeseries(
            Common(
                title="Scrape duration",
                description=(
                    "How long Prometheus's scrape of /metrics took. Metrics are served from "
                    "memory, so this should stay in milliseconds. Bad: growing towards the "
                    "scrape timeout (default 10 s; the dashed line marks 1 s) — the exporter "
                    "is starved or the series count exploded."
                ),
                queries=[_per_instance(sel("scrape_duration_seconds"))],
                runbooks=["GeckoExporterDown"],
                unit="s",
                steps=bad_from(1),
                min=0,
            ),
            threshold_line=True,
        ),
        timeseries(
            Common(
                title="Samples per scrape",
                description=(
                    "Series in each scrape. Bad: steady growth (a label without a bound) "
                    "or a sudden drop (probes no longer reporting)."
                ),
                queries=[_per_instance(sel("scrape_samples_scraped"))],
                runbooks=["GeckoProbeFailing"],
                min=0,
            )
        ),
    ]


def _probe_panels() -> list[PanelBuilder]:
    failures = f"sum by (probe, reason) ({rate('gecko_probe_failures_total')}) * 60"
    return [
        probe_lanes(
            "Probe success",
            "Whether each probe's last run succeeded (worst instance). Bad: a red "
            "FAILING lane (GeckoProbeFailing); the failures panel says why.",
        ),
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
                min=0,
            ),
            bars=True,
        ),
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
                min=0,
            )
        ),
        timeseries(
            Common(
                title="Probe duration",
                description=(
                    "Wall time of each probe's last run (worst instance). Bad: a probe "
                    "getting slower run after run, or durations close to the probe's "
                    "interval (next panel)."
                ),
                queries=[_per_probe(DURATION)],
                runbooks=["GeckoProbeFailing"],
                unit="s",
                min=0,
            )
        ),
        timeseries(
            Common(
                title="Probe duration / interval",
                description=(
                    "Last run's duration as a share of the probe's interval. Bad: above the "
                    "dashed 50 % line — runs start to overlap and get skipped (reason "
                    '"busy").'
                ),
                queries=[_per_probe(f"{DURATION} / {INTERVAL}")],
                runbooks=["GeckoProbeFailing"],
                unit="percentunit",
                steps=bad_from(0.5),
                min=0,
            ),
            threshold_line=True,
        ),
        timeseries(
            Common(
                title="Probe staleness",
                description=(
                    "Seconds since each probe's last success, as a multiple of its "
                    "interval. Bad: above the dashed line at 3 intervals — the probe's "
                    "metrics are stale: its runs fail (GeckoProbeFailing) or it has "
                    "stopped running (GeckoProbeStalled)."
                ),
                queries=[_per_probe(f"(time() - {LAST_SUCCESS}) / {INTERVAL}")],
                runbooks=["GeckoProbeFailing", "GeckoProbeStalled"],
                steps=bad_from(3, warn=2),
                min=0,
            ),
            threshold_line=True,
        ),
        timeseries(
            Common(
                title="Seconds since last probe success",
                description=(
                    "time() - last success per probe, in seconds. Bad: a line that keeps "
                    "rising instead of resetting at every interval (GeckoProbeFailing)."
                ),
                queries=[_per_probe(f"time() - {LAST_SUCCESS}")],
                runbooks=["GeckoProbeFailing"],
                unit="s",
                min=0,
            )
        ),
    ]


def _process_panels() -> list[PanelBuilder]:
    return [
        timeseries(
            Common(
                title="Resident memory",
                description=(
                    "Resident set size of the exporter process. Bad: steady growth over "
                    "hours (a leak, or unbounded label sets) — the pod will be OOM-killed."
                ),
                queries=[_per_instance(sel("process_resident_memory_bytes"))],
                runbooks=["GeckoExporterDown"],
                unit="bytes",
                min=0,
            )
        ),
        timeseries(
            Common(
                title="CPU usage",
                description=(
                    "CPU seconds per second used by the exporter. Bad: near 1 core — probes "
                    "and scrapes will be delayed."
                ),
                queries=[
                    _per_instance(f"sum by (job, instance) ({rate('process_cpu_seconds_total')})")
                ],
                runbooks=["GeckoExporterDown"],
                unit="percentunit",
                min=0,
            )
        ),
        timeseries(
            Common(
                title="Open file descriptors",
                description=(
                    "Open file descriptors as a share of the limit. Bad: above the dashed "
                    "80 % line — connections and sockets will start failing."
                ),
                queries=[_per_instance(f"{sel('process_open_fds')} / {sel('process_max_fds')}")],
                runbooks=["GeckoExporterDown"],
                unit="percentunit",
                steps=bad_from(0.8),
                min=0,
            ),
            threshold_line=True,
        ),
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
                        f"max by (job, instance, {labels}) ({sel(metric)})",
                        instant=True,
                        table=True,
                    )
                    for metric, labels in (
                        ("gecko_exporter_build_info", "version, python_version"),
                        ("gecko_postgres_server_info", "version, major"),
                    )
                ],
                runbooks=["GeckoExporterDown"],
            ),
            hide_columns=("Time", "Value"),
        ),
    ]


def build() -> dashboard_model.Dashboard:
    """Build the exporter self-monitoring dashboard model."""
    board = dashboard(
        UID,
        TITLE,
        "Health of gecko-exporter itself: scrapes, probe runs, failures, staleness and the "
        "process's resources.",
    )
    board = row(board, "Scrapes", _scrape_panels())
    board = row(board, "Probes", _probe_panels())
    board = row(board, "Process", _process_panels())
    return board.build()
