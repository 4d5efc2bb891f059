"""The DDL lock queue, provoked on a real server: A holds, B's ALTER waits, C queues."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from structlog.testing import capture_logs

from exporter.probes.locks import LocksProbe
from exporter.samples import Family
from tests.health.conftest import EXPORTER_APP, HealthDb, ProbeRunner, probe_runner, value
from tests.health.sessions import BackgroundStatement
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

Counts = tuple[float | None, float | None, float | None]


def sampler(runner: ProbeRunner, probe: LocksProbe) -> Callable[[Counts], list[Family]]:
    """Poll the probe until (waiting, access exclusive waiting, behind) equal ``want``."""

    def until(want: Counts) -> list[Family]:
        def check() -> list[Family] | None:
            fams = runner.collect(probe)
            got = (
                value(fams, "gecko_lock_waiting_backends"),
                value(fams, "gecko_lock_access_exclusive_waiting"),
                value(fams, "gecko_lock_waiting_behind_access_exclusive"),
            )
            return fams if got == want else None

        return wait_until(check, timeout=10, message=f"lock counts {want}")

    return until


def test_session_waiting_behind_access_exclusive(health_db: HealthDb) -> None:
    probe = LocksProbe(EXPORTER_APP)
    dsn = health_db.admin_dsn
    started: list[BackgroundStatement] = []
    with probe_runner(health_db.monitor_dsn) as runner, capture_logs() as logs:
        until = sampler(runner, probe)
        quiet = until((0, 0, 0))
        assert value(quiet, "gecko_lock_longest_wait_seconds") == 0
        # A: a long read transaction holds ACCESS SHARE on "Scan"
        holder = psycopg.connect(dsn, application_name="report")
        try:
            holder.execute('SELECT 1 FROM "Scan" LIMIT 1')
            # B: a migration's ALTER TABLE asks for ACCESS EXCLUSIVE and waits behind A
            ddl = BackgroundStatement(
                dsn,
                'ALTER TABLE "Scan" ADD COLUMN "healthProbe" integer',
                application_name="prisma-migrate",
            )
            started.append(ddl)
            until((1, 1, 0))
            # C: a plain SELECT of the app now queues behind B's request
            reader = BackgroundStatement(
                dsn, 'SELECT count(*) FROM "Scan"', application_name="", autocommit=True
            )
            started.append(reader)
            # the exporter's own session queued as well is not counted
            own = BackgroundStatement(
                dsn, 'SELECT 1 FROM "Scan" LIMIT 1', application_name=EXPORTER_APP, autocommit=True
            )
            started.append(own)
            fams = until((2, 1, 1))
            assert (value(fams, "gecko_lock_longest_wait_seconds") or 0) > 0
            assert not reader.done.is_set() and not own.done.is_set()
            # A ends: B gets ACCESS EXCLUSIVE (its transaction stays open); C now waits on a
            # granted lock, not behind a queued request
            holder.rollback()
            assert ddl.done.wait(10) and ddl.error is None
            until((1, 0, 0))
            ddl.rollback()
            assert reader.done.wait(10) and reader.error is None
            assert own.done.wait(10) and own.error is None
            until((0, 0, 0))
        finally:
            holder.close()
            for stmt in reversed(started):
                stmt.close(dsn)
    events = [e["event"] for e in logs]
    assert events.count("lock_queue_behind_access_exclusive") == 1
    assert "lock_queue_cleared" in events
    column = health_db.fetchval(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = '\"Scan\"'::regclass"
        " AND attname = 'healthProbe'"
    )
    assert column == 0
