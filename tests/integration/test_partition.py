"""A network partition (packets dropped, not refused) never wedges a connection lane.

The partition is a loopback proxy that keeps accepting and silently discarding
(:mod:`tests.support.tcp_proxy`): no RST, no FIN, no error, like a middlebox that
lost its other side. Only deadlines can tell, so the lane must be abandoned and
reconnected, and the other lanes must keep reporting meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator

import psutil  # type: ignore[import-untyped]
import pytest

from exporter.db.session import Database, SessionOptions
from exporter.errors import DatabaseError
from gecko_demo import admin
from tests.conftest import GeckoDatabase
from tests.support.exporter_proc import ExporterProcess
from tests.support.tcp_proxy import TcpProxy
from tests.support.wait import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OPTIONS = SessionOptions(
    application_name="gecko-exporter",
    connect_timeout_seconds=5,
    lock_timeout_seconds=0.1,
    backoff_initial_seconds=0.25,
    backoff_max_seconds=2,
)


@pytest.fixture
def proxy(gecko_db: GeckoDatabase) -> Iterator[TcpProxy]:
    with TcpProxy.for_dsn(gecko_db.monitor_dsn) as p:
        yield p


async def _backend_pid(db: Database, lane: str) -> int:
    async with db.lane(lane).session(1.6) as s:
        row = await s.fetch_one("SELECT pg_backend_pid() AS pid")
    assert row is not None
    return int(row["pid"])


def test_abandoned_lane_reconnects_at_once(gecko_db: GeckoDatabase, proxy: TcpProxy) -> None:
    """Lane.abandon(): synchronous, the next session reconnects, the stuck run unwinds apart."""

    async def main() -> dict[str, float]:
        db = Database(proxy.proxied(gecko_db.monitor_dsn), OPTIONS)
        lane = db.lane("app")
        first_pid = await _backend_pid(db, "app")
        proxy.blackhole()

        async def stuck_run() -> None:
            async with lane.session(1.6) as s:
                await s.fetch("SELECT 1")

        task = asyncio.create_task(stuck_run())
        done, _ = await asyncio.wait({task}, timeout=1.0)  # the probe's deadline
        assert not done, "the query should hang on a silent network"
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=0.5)  # a short grace
        assert not done, "psycopg waits for the cancel's answer for a while"

        started = time.monotonic()
        lane.abandon()
        abandon_seconds = time.monotonic() - started

        # still partitioned: the next run fails at its own deadline instead of waiting behind
        # the stuck run (a fresh lock), and says why
        started = time.monotonic()
        with pytest.raises(DatabaseError, match="timed out"):
            async with lane.session(0.5):
                pass
        assert time.monotonic() - started < 1.5
        assert not task.done()

        proxy.heal()
        healed = time.monotonic()
        # no backoff on top of an attempt that timed out: the next run connects at once
        new_pid = await _backend_pid(db, "app")
        reconnect_seconds = time.monotonic() - healed
        assert new_pid != first_pid

        # the abandoned run unwinds on its own and leaves the new connection alone
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), timeout=15)
        assert await _backend_pid(db, "app") == new_pid
        await db.close()
        return {"abandon": abandon_seconds, "reconnect": reconnect_seconds}

    timings = asyncio.run(main())
    assert timings["abandon"] < 0.05  # never blocks
    print(
        f"abandon() took {timings['abandon'] * 1000:.2f} ms; "
        f"reconnected {timings['reconnect'] * 1000:.0f} ms after the partition healed"
    )


def test_cancelled_query_on_a_silent_network_is_bounded(
    gecko_db: GeckoDatabase, proxy: TcpProxy
) -> None:
    """psycopg >= 3.3.6: cancelling a run stuck on a silent connection ends in bounded time."""

    async def main() -> float:
        db = Database(proxy.proxied(gecko_db.monitor_dsn), OPTIONS)
        lane = db.lane("activity")
        await _backend_pid(db, "activity")
        proxy.blackhole()

        async def stuck_run() -> None:
            async with lane.session(1.6) as s:
                await s.fetch("SELECT 1")

        task = asyncio.create_task(stuck_run())
        await asyncio.sleep(0.5)
        task.cancel()
        started = time.monotonic()
        # psycopg < 3.3.6 waits for the cancelled query's end without a bound: this times out
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), timeout=20)
        unwound = time.monotonic() - started
        proxy.heal()
        await _backend_pid(db, "activity")  # the lane dropped that connection and reconnects
        await db.close()
        return unwound

    unwound = asyncio.run(main())
    print(f"a cancelled run on a silent network unwound after {unwound:.1f}s")


def test_every_connection_has_keepalives_and_a_user_timeout(gecko_db: GeckoDatabase) -> None:
    """The kernel sees the options on the socket itself (not just in a parameter dict)."""
    server_port = int(admin.dsn_params(gecko_db.monitor_dsn)["port"])
    me = psutil.Process()

    def socket_options() -> dict[str, int]:
        fds = [
            c.fd
            for c in me.net_connections(kind="tcp")
            if c.raddr and c.raddr.port == server_port and c.status == psutil.CONN_ESTABLISHED
        ]
        assert len(fds) == 1, fds
        with socket.socket(fileno=os.dup(fds[0])) as sock:
            return {
                "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                "idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                "interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                "count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                "user_timeout_ms": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
            }

    async def main(dsn: str) -> dict[str, int]:
        db = Database(dsn, OPTIONS)
        async with db.lane("catalog").session(1.6):
            found = socket_options()
        await db.close()
        return found

    assert asyncio.run(main(gecko_db.monitor_dsn)) == {
        "keepalive": 1,
        "idle": 5,
        "interval": 1,
        "count": 5,
        "user_timeout_ms": 10000,
    }
    # a parameter given in the DSN wins
    tuned = asyncio.run(main(admin.dsn_replace(gecko_db.monitor_dsn, keepalives_idle="42")))
    assert tuned["idle"] == 42
    assert tuned["user_timeout_ms"] == 10000


# -- the real exporter: one lane partitioned, the others keep reporting ------------------

#: the app lane runs scan_lookup only (every 5 s, 3 s timeout: the defaults); the catalog lane
#: one quick probe; the activity lane slow_queries (1 s) and connections
APP_INTERVAL = 5.0
ACTIVITY_INTERVAL = 1.0  # slow_queries (2 s timeout)
PROBES = {
    "report": {"enabled": False, "interval_seconds": 15, "timeout_seconds": 10},
    "migrations": {"enabled": False, "interval_seconds": 15, "timeout_seconds": 5},
    "plans": {"enabled": False, "interval_seconds": 60, "timeout_seconds": 10},
    "bloat": {"enabled": False, "interval_seconds": 600, "timeout_seconds": 30},
    "database": {"interval_seconds": 2, "timeout_seconds": 1.5},
}


def _lane_client_port(admin_dsn: str, dbname: str, pattern: str) -> int:
    """The client port of the one exporter backend whose last query matches ``pattern``."""
    with admin.connect(admin_dsn, application_name="gecko-tests") as conn:
        rows = conn.fetchall(
            "SELECT client_port FROM pg_stat_activity WHERE application_name = 'gecko-exporter'"
            " AND datname = %s AND query LIKE %s",
            (dbname, pattern),
        )
    assert len(rows) == 1, rows
    return int(rows[0][0])


def _partition_one_lane(
    exp: ExporterProcess,
    proxy: TcpProxy,
    db: GeckoDatabase,
    *,
    lane: str,
    pattern: str,
    probe: str,
    others: tuple[str, ...],
    hold: float,
) -> float:
    """Blackhole one lane's connection (and new connections) until it is abandoned and the
    other lanes have reported through the partition; heal; seconds until ``probe`` succeeds."""
    port = wait_until(lambda: _lane_client_port(db.admin_dsn, db.dbname, pattern), timeout=10)
    abandoned_before = sum(1 for e in exp.events() if e.get("event") == "db_lane_abandoned")
    assert proxy.blackhole(lambda link: link.upstream_port == port) == 1

    # the lane times out, is abandoned and keeps failing while the partition lasts...
    wait_until(lambda: exp.value("gecko_probe_success", probe=probe) == 0, timeout=10)
    wait_until(
        lambda: [e for e in exp.events() if e.get("event") == "db_lane_abandoned"][
            abandoned_before:
        ],
        timeout=15,
        message=f"lane {lane} abandoned",
    )
    # ... while the other lanes keep reporting
    runs = {p: exp.value("gecko_probe_runs_total", probe=p) or 0 for p in others}
    ok = dict.fromkeys(others, 0)
    samples = 0
    deadline = time.monotonic() + hold
    while time.monotonic() < deadline:
        metrics = exp.metrics()
        for other in others:
            ok[other] += metrics.get(("gecko_probe_success", (("probe", other),))) == 1
        assert metrics.get(("gecko_probe_success", (("probe", probe),))) == 0
        samples += 1
        time.sleep(0.25)
    for other, before in runs.items():
        assert (exp.value("gecko_probe_runs_total", probe=other) or 0) >= before + 2, other
        # a slow run on a busy test machine may fail now and then; a lane held up by the
        # partition of another would fail all along
        assert ok[other] >= 0.9 * samples, (other, ok[other], samples)

    healed_wall = time.time()
    proxy.heal()
    healed = time.monotonic()
    wait_until(
        lambda: (
            (exp.value("gecko_probe_last_success_timestamp_seconds", probe=probe) or 0)
            > healed_wall
        ),
        timeout=30,
        interval=0.05,
        message=f"{probe} succeeds again",
    )
    return time.monotonic() - healed


def test_partition_of_one_lane(gecko_db: GeckoDatabase, proxy: TcpProxy) -> None:
    with ExporterProcess(proxy.proxied(gecko_db.monitor_dsn), config={"probes": PROBES}) as exp:
        exp.wait_ready()
        for probe in ("scan_lookup", "database", "slow_queries"):
            exp.wait_value(
                "gecko_probe_success", lambda v: v == 1, timeout=20, labels={"probe": probe}
            )
        app = _partition_one_lane(
            exp,
            proxy,
            gecko_db,
            lane="app",
            pattern='%"Scan"%',
            probe="scan_lookup",
            others=("slow_queries", "database"),
            hold=3 * APP_INTERVAL,
        )
        activity = _partition_one_lane(
            exp,
            proxy,
            gecko_db,
            lane="activity",
            pattern="%pg_stat_activity%",
            probe="slow_queries",
            others=("scan_lookup", "database"),
            hold=3 * APP_INTERVAL,
        )
        events = exp.events()
        abandoned = [e.get("lane") for e in events if e.get("event") == "db_lane_abandoned"]
        assert abandoned == ["app", "activity"]
        # failed reconnects during a partition: one line per state change, not one per try
        failed = [e.get("lane") for e in events if e.get("event") == "db_connect_failed"]
        assert failed.count("app") <= 1
        assert failed.count("activity") <= 1
        assert "catalog" not in failed
        assert gecko_db.monitor_password not in exp.logs_text()
    print(
        f"lane back after the partition healed: app {app:.2f}s "
        f"(bound {2 * APP_INTERVAL:.0f}s), activity {activity:.2f}s "
        f"(bound {2 * ACTIVITY_INTERVAL:.0f}s)"
    )
    assert app <= 2 * APP_INTERVAL
    assert activity <= 2 * ACTIVITY_INTERVAL
