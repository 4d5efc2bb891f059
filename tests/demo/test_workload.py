"""The app-like workload on a real server: traffic, effects, faults and a clean stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from gecko_demo import admin, main
from gecko_demo.cluster import LocalCluster
from gecko_demo.workload import BACKEND_APP, CONNECT_TIMEOUT, WORKER_APP, Incidents, Workload
from tests.demo.conftest import DemoDatabase, build_demo_database, demo_cluster
from tests.support.exporter_proc import ExporterProcess
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

OBSERVER = "gecko-tests-observer"


def _sessions(dsn: str) -> dict[str, int]:
    with admin.connect(dsn, application_name=OBSERVER) as conn:
        rows = conn.fetchall(
            "SELECT application_name, count(*) FROM pg_stat_activity"
            " WHERE application_name = ANY(%s) GROUP BY 1",
            ([BACKEND_APP, WORKER_APP],),
        )
    return {str(r[0]): int(r[1]) for r in rows}


def _stalled(workload: Workload) -> Callable[[], bool]:
    """True once the statement counter did not move between two calls."""
    last: list[int] = []

    def check() -> bool:
        now = workload.stats()["statements"]
        stalled = bool(last) and last[-1] == now
        last.append(now)
        return stalled

    return check


def _fast_workload(db: DemoDatabase, **kwargs: object) -> Workload:
    return Workload(
        db.app_dsn,
        rate_per_second=25.0,
        seed=5,
        data_seed=7,
        scan_seconds=(0.3, 0.8),
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def workload_db(demo_server: LocalCluster) -> DemoDatabase:
    """A database of its own: the workload writes to it."""
    return build_demo_database(demo_server, "fresh", scans=300)


def test_workload_replays_app_traffic_and_stops_cleanly(workload_db: DemoDatabase) -> None:
    started_at = datetime.now(UTC).replace(tzinfo=None)
    threads_before = set(threading.enumerate())
    workload = _fast_workload(workload_db)
    workload.start()
    try:
        wait_until(
            lambda: (
                (s := workload.stats())["requests"] >= 30
                and s["scans_completed"] >= 2
                and s["report_reads"] >= 5
                and s["dedupe_lookups"] >= 1
                and s["status_polls"] >= 1
                and s["progress_updates"] >= 5
            ),
            timeout=60,
            message="workload counters",
        )
        sessions: dict[str, int] = wait_until(
            lambda: s if (s := _sessions(workload_db.superuser_dsn)).get(WORKER_APP) else None,
            timeout=10,
            message="backend and worker sessions",
        )
        assert sessions[BACKEND_APP] >= 2
    finally:
        assert workload.stop(timeout=10)
    assert not any(t.is_alive() for t in workload.threads)
    assert set(threading.enumerate()) == threads_before
    wait_until(
        lambda: not _sessions(workload_db.superuser_dsn),
        timeout=10,
        message="workload sessions closed",
    )
    stats = workload.stats()
    assert stats["errors"] == 0, stats
    assert stats["statements"] > stats["requests"]

    with admin.connect(workload_db.app_dsn, application_name="gecko-tests") as conn:
        new = conn.fetchall(
            'SELECT "status", count(*) FROM "Scan" WHERE "createdAt" >= %s GROUP BY 1',
            (started_at,),
        )
        done_without_issues = conn.fetchval(
            'SELECT count(*) FROM "Scan" s WHERE s."createdAt" >= %s AND s."status" = %s'
            ' AND s."targetType" = %s AND (s."score" IS NULL OR NOT EXISTS'
            ' (SELECT 1 FROM "Evidence" e WHERE e."scanId" = s."id"))',
            (started_at, "done", "url"),
        )
        calls = conn.fetchval(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
            " WHERE query LIKE %s AND userid = (SELECT oid FROM pg_roles WHERE rolname = %s)",
            ('%"normalizedInput" = $1 AND%', workload_db.app_role),
        )
    by_status = {str(r[0]): int(r[1]) for r in new}
    assert by_status.get("done", 0) >= stats["scans_completed"]
    assert sum(by_status.values()) >= stats["scans_submitted"] + stats["stub_scans"]
    assert done_without_issues == 0
    assert calls >= stats["dedupe_lookups"]  # bound parameters, one normalised statement


@pytest.fixture(scope="module")
def private_db() -> Iterator[DemoDatabase]:
    """A server of its own: these tests stop, restart and freeze it."""
    with demo_cluster("18") as cluster:
        yield build_demo_database(cluster, "fresh", scans=200)


def test_workload_reconnects_after_a_server_restart(private_db: DemoDatabase) -> None:
    workload = _fast_workload(private_db)
    workload.start()
    try:
        wait_until(lambda: workload.stats()["requests"] >= 10, timeout=30, message="traffic")
        private_db.cluster.stop(mode="fast")
        wait_until(lambda: workload.stats()["errors"] >= 1, timeout=30, message="errors counted")
        private_db.cluster.start()
        before = workload.stats()["report_reads"]
        wait_until(
            lambda: (s := workload.stats())["reconnects"] >= 1 and s["report_reads"] > before + 3,
            timeout=60,
            message="traffic after the restart",
        )
    finally:
        assert workload.stop(timeout=10)
    assert not any(t.is_alive() for t in workload.threads)


def test_workload_stops_even_when_the_server_is_frozen(private_db: DemoDatabase) -> None:
    workload = _fast_workload(private_db)
    workload.start()
    try:
        wait_until(lambda: workload.stats()["requests"] >= 10, timeout=30, message="traffic")
        private_db.cluster.pause()
        try:
            # let the threads block in statements on the frozen server
            wait_until(_stalled(workload), timeout=15, interval=1.0, message="traffic blocked")
            started = time.monotonic()
            # sockets are shut down after 3 s, connection attempts end after 3 s
            assert workload.stop(timeout=2 * CONNECT_TIMEOUT)
            assert time.monotonic() - started < 2 * CONNECT_TIMEOUT + 0.5
        finally:
            private_db.cluster.resume()
    finally:
        workload.stop(timeout=10)
    assert not any(t.is_alive() for t in workload.threads)


# ---- incidents: every headline signal moves, on a real server, seen by the real exporter ----

SLOW_THRESHOLD = 1.5  # the exporter's slow-query threshold in these tests (5 s in the demo)


def _exporter(db: DemoDatabase, **probes: float) -> ExporterProcess:
    """The exporter on the workload's database: the demo's backend pool, fast cadences."""
    return ExporterProcess(
        db.monitor_dsn,
        config={
            "slow_query_threshold_seconds": SLOW_THRESHOLD,
            "pools": [{"name": "backend", "application_name": BACKEND_APP, "size": 10}],
            "probes": {
                name: {"interval_seconds": interval, "timeout_seconds": interval}
                for name, interval in probes.items()
            },
        },
    )


def _seen(exporter: ExporterProcess, name: str, predicate: Callable[[float], bool],
          *, timeout: float, **labels: str) -> float:  # fmt: skip
    """The first exposed value of a (transient) gauge that satisfies ``predicate``."""

    def check() -> tuple[float] | None:  # a tuple: 0.0 is a value, not "not yet"
        value = exporter.value(name, **labels)
        return (value,) if value is not None and predicate(value) else None

    found = wait_until(check, timeout=timeout, interval=0.1, message=f"{name} {labels}")
    return found[0]


def _incident_workload(db: DemoDatabase, incidents: Incidents) -> Workload:
    return _fast_workload(db, incidents=incidents)


def test_incident_plan_and_limits() -> None:
    plan = Incidents().plan()
    assert [name for _, name, _ in plan] == ["migration", "pool_surge", "slow_request"]
    # the default cadence: every incident within the first five minutes, twice
    first = Incidents().first_after_seconds
    assert all(first + offset + Incidents().period_seconds < 300 for offset, _, _ in plan)
    assert Incidents().slow_request_seconds > 5  # the exporter's default threshold
    assert Incidents().surge_connections / 10 > 0.8  # the demo's backend pool has 10
    assert [n for _, n, _ in Incidents(lock_seconds=0, surge_seconds=0).plan()] == ["slow_request"]
    with pytest.raises(ValueError, match="third of period_seconds"):
        Incidents(period_seconds=9, slow_request_seconds=3)


def test_slow_request_runs_past_the_threshold_and_the_exporter_counts_it(
    workload_db: DemoDatabase,
) -> None:
    # the slow request two thirds into the first period: after 6.3 s
    incidents = Incidents(
        period_seconds=9.5, first_after_seconds=0, lock_seconds=0, surge_seconds=0,
        slow_request_seconds=SLOW_THRESHOLD + 1.5,
    )  # fmt: skip
    with _exporter(workload_db, slow_queries=0.5) as exporter:
        exporter.wait_ready()
        assert exporter.value("gecko_slow_queries_total") == 0
        workload = _incident_workload(workload_db, incidents)
        workload.start()
        try:
            # the statement really runs longer than the threshold, as the app's backend
            running: float = wait_until(
                lambda: (
                    _longest_running(workload_db.superuser_dsn, BACKEND_APP) > SLOW_THRESHOLD
                    and _longest_running(workload_db.superuser_dsn, BACKEND_APP)
                ),
                timeout=30,
                interval=0.2,
                message="a backend statement running past the threshold",
            )
            assert running > SLOW_THRESHOLD
            longest = _seen(
                exporter, "gecko_longest_active_query_seconds", lambda v: v > SLOW_THRESHOLD,
                timeout=15,
            )  # fmt: skip
            assert longest > SLOW_THRESHOLD
            exporter.wait_value("gecko_slow_queries_total", lambda v: v >= 1, timeout=15)
            wait_until(lambda: workload.stats()["slow_requests"] >= 1, timeout=15,
                       message="slow request done")  # fmt: skip
        finally:
            assert workload.stop(timeout=10)
    assert workload.stats()["errors"] == 0, workload.stats()


def test_pool_surge_pushes_backend_utilization_over_80_percent(
    workload_db: DemoDatabase,
) -> None:
    # the surge a third into the first period: after 5.2 s, until 10.2 s; the next at 20.7 s
    incidents = Incidents(
        period_seconds=15.5, first_after_seconds=0, lock_seconds=0, surge_seconds=5,
        surge_connections=9, slow_request_seconds=0,
    )  # fmt: skip
    with _exporter(workload_db, connections=0.5, slow_queries=0.5) as exporter:
        exporter.wait_ready()
        workload = _incident_workload(workload_db, incidents)
        workload.start()
        try:
            busy: int = wait_until(
                lambda: (
                    (n := _sessions_not_idle(workload_db.superuser_dsn, BACKEND_APP)) >= 9 and n
                ),
                timeout=30,
                interval=0.1,
                message="nine or more busy backend connections",
            )
            assert busy >= 9
            ratio = _seen(
                exporter, "gecko_connection_pool_utilization_ratio", lambda v: v > 0.8,
                timeout=15, pool="backend",
            )  # fmt: skip
            assert ratio > 0.8
            wait_until(lambda: workload.stats()["pool_surges"] >= 1, timeout=20,
                       message="surge over")  # fmt: skip
            # short statements back to back: the surge is no slow query
            assert exporter.value("gecko_slow_queries_total") == 0
            # and it was short: the pool is back to normal
            _seen(
                exporter, "gecko_connection_pool_utilization_ratio", lambda v: v <= 0.8,
                timeout=8, pool="backend",
            )  # fmt: skip
        finally:
            assert workload.stop(timeout=10)
    assert workload.stats()["errors"] == 0, workload.stats()


def _observed_above(exporter: ExporterProcess, histogram: str, threshold: float) -> float:
    """Observations of ``histogram`` above ``threshold`` (its count minus that bucket)."""
    samples = exporter.metrics()
    count = samples.get((f"{histogram}_count", ()), 0.0)
    within = [
        value
        for (name, labels), value in samples.items()
        if name == f"{histogram}_bucket" and float(dict(labels)["le"]) == threshold
    ]
    if not within:
        raise LookupError(f"{histogram} is not exposed (yet)")
    return count - within[0]


def test_migration_makes_app_lookups_and_reports_wait_but_never_the_exporter(
    workload_db: DemoDatabase,
) -> None:
    incidents = Incidents(
        period_seconds=60, first_after_seconds=1, lock_seconds=2.5, surge_seconds=0,
        slow_request_seconds=0,
    )  # fmt: skip
    with ExporterProcess(
        workload_db.monitor_dsn,
        config={
            "probes": {
                "scan_lookup": {"interval_seconds": 1, "timeout_seconds": 0.8},
                "report": {"interval_seconds": 3, "timeout_seconds": 2.5},
                "locks": {"interval_seconds": 0.5, "timeout_seconds": 0.5},
                "migrations": {"interval_seconds": 0.5, "timeout_seconds": 0.5},
            },
        },
    ) as exporter:
        exporter.wait_ready()
        before = wait_until(
            lambda: (
                _observed_above(exporter, "gecko_scan_lookup_duration_seconds", 0.1),
                _observed_above(exporter, "gecko_report_generation_duration_seconds", 2.0),
            ),
            timeout=15,
            message="both latency histograms exposed",
        )
        assert before == (0.0, 0.0)
        workload = _fast_workload(
            workload_db,
            incidents=incidents,
            next_probe_run=main._next_run_in(exporter.url, "report"),
        )
        workload.start()
        exporter_wait = 0.0  # longest lock wait of an exporter session seen
        seen = {"gecko_migration_in_progress": 0.0, "gecko_lock_waiting_backends": 0.0}
        try:
            deadline = time.monotonic() + 30
            while workload.stats()["migrations"] < 1 and time.monotonic() < deadline:
                exporter_wait = max(exporter_wait, _longest_lock_wait(workload_db.superuser_dsn))
                for name, most in list(seen.items()):
                    seen[name] = max(most, exporter.value(name) or 0.0)
            stats = workload.stats()
            assert stats["migrations"] == 1, stats
            # the app queued behind the lock: lookups past 100 ms, reports past 2 s
            assert stats["slow_lookups"] >= 1, stats
            assert stats["slow_reports"] >= 1, stats
            # the exporter's latency probes met the lock too: refused at lock_timeout, they
            # count at their deadline, above both thresholds
            wait_until(
                lambda: (
                    _observed_above(exporter, "gecko_scan_lookup_duration_seconds", 0.1) >= 1
                    and _observed_above(exporter, "gecko_report_generation_duration_seconds", 2.0)
                    >= 1
                ),
                timeout=15,
                message="lookup and report observations above their thresholds",
            )
        finally:
            assert workload.stop(timeout=10)
        # the exporter saw the migration and the queue behind it...
        assert seen["gecko_migration_in_progress"] == 1, seen
        assert seen["gecko_lock_waiting_backends"] >= 1, seen
        # ...and, first law, its own sessions waited at most about their lock_timeout (0.1 s)
        assert exporter_wait < 0.5, exporter_wait
    assert workload.stats()["errors"] == 0, workload.stats()


def _longest_running(dsn: str, application_name: str) -> float:
    with admin.connect(dsn, application_name=OBSERVER) as conn:
        value = conn.fetchval(
            "SELECT coalesce(max(extract(epoch FROM clock_timestamp() - query_start)), 0)"
            " FROM pg_stat_activity WHERE application_name = %s AND state = 'active'",
            (application_name,),
        )
    return float(value)


def _sessions_not_idle(dsn: str, application_name: str) -> int:
    with admin.connect(dsn, application_name=OBSERVER) as conn:
        value = conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
            " AND state IS DISTINCT FROM 'idle'",
            (application_name,),
        )
    return int(value)


def _longest_lock_wait(dsn: str) -> float:
    """How long an exporter session has been waiting for a lock right now (0 when none)."""
    with admin.connect(dsn, application_name=OBSERVER) as conn:
        value = conn.fetchval(
            "SELECT coalesce(max(extract(epoch FROM clock_timestamp() - state_change)), 0)"
            " FROM pg_stat_activity WHERE application_name = 'gecko-exporter'"
            " AND wait_event_type = 'Lock'"
        )
    return float(value)
