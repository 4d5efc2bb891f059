"""The app-like workload on a real server: traffic, effects, faults and a clean stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from gecko_demo import admin
from gecko_demo.cluster import LocalCluster
from gecko_demo.workload import BACKEND_APP, CONNECT_TIMEOUT, WORKER_APP, Workload
from tests.demo.conftest import DemoDatabase, build_demo_database, demo_cluster
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
