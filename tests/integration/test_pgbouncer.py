"""PgBouncer pools through a real PgBouncer in front of the test PostgreSQL (issue 11 §2)."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from gecko_demo import admin
from tests.conftest import GeckoDatabase, require_tool
from tests.support.exporter_proc import ExporterProcess, fast_probe_env
from tests.support.pgbouncer import DATABASE, PgBouncer
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

POOL = f"pgbouncer/{DATABASE}/postgres"


@pytest.fixture
def bouncer(gecko_db_any: GeckoDatabase) -> Iterator[PgBouncer]:
    tool = require_tool("pgbouncer", "/usr/sbin/pgbouncer")
    cluster = gecko_db_any.require_cluster()
    with PgBouncer(
        tool,
        backend_port=cluster.port,
        dbname=gecko_db_any.dbname,
        users={"postgres": cluster.password},
        pool_size=2,
    ) as pgb:
        yield pgb


def _queue(conn: admin.AdminConnection) -> None:
    """Wait for a server (a failing test closes the connection under it: not an error)."""
    with contextlib.suppress(Exception):
        conn.execute("SELECT 1")


def _exporter(db: GeckoDatabase, bouncer: PgBouncer) -> ExporterProcess:
    # PgBouncer read more often than the database: a failure of its lane counted against the
    # database's health would show as gecko_up 0 for most of each database probe interval
    env = fast_probe_env(pgbouncer=0.5, connections=1, slow_queries=2)
    env["GECKO_PGBOUNCER_URL"] = bouncer.admin_url()
    return ExporterProcess(db.monitor_dsn, env=env)


def test_saturated_pool_reads_utilization_waiting_clients_and_wait_time(
    gecko_db_any: GeckoDatabase, bouncer: PgBouncer
) -> None:
    cluster = gecko_db_any.require_cluster()
    client = bouncer.client_dsn("postgres", cluster.password)
    waiters: list[threading.Thread] = []
    with _exporter(gecko_db_any, bouncer) as exp, ExitStack() as st:
        exp.wait_ready()
        exp.wait_value("gecko_pgbouncer_up", lambda v: v == 1, timeout=15)
        assert exp.value("gecko_pgbouncer_pool_size", database=DATABASE) == 2
        # both server connections held by open transactions (transaction pooling)
        holders = []
        for _ in range(2):
            conn = st.enter_context(
                admin.connect(client, application_name="gecko-advisor-backend-1", autocommit=False)
            )
            conn.execute("SELECT 1")
            holders.append(conn)
        exp.wait_value("gecko_connection_pool_utilization_ratio", lambda v: v == 1.0, timeout=10,
                       labels={"pool": POOL})  # fmt: skip
        assert exp.value("gecko_pgbouncer_servers", database=DATABASE, user="postgres",
                         state="active") == 2  # fmt: skip
        assert exp.value("gecko_connection_pool_size", pool=POOL) == 2
        # two more clients queue for a server
        for _ in range(2):
            conn = st.enter_context(
                admin.connect(client, application_name="gecko-advisor-worker-7")
            )
            thread = threading.Thread(target=_queue, args=(conn,), daemon=True)
            thread.start()
            waiters.append(thread)
        labels = {"database": DATABASE, "user": "postgres"}
        exp.wait_value("gecko_pgbouncer_clients", lambda v: v == 2, timeout=10,
                       labels={**labels, "state": "waiting"})  # fmt: skip
        assert exp.value("gecko_pgbouncer_clients", **labels, state="active") >= 2  # type: ignore[operator]
        waited = exp.wait_value("gecko_pgbouncer_max_wait_seconds", lambda v: v > 1.0,
                                timeout=10, labels=labels)  # fmt: skip
        assert waited % 1 != 0  # microseconds, not whole seconds (maxwait + maxwait_us)
        assert exp.value("gecko_pgbouncer_waiting_clients",
                         application_name="gecko-advisor-worker-7") == 2  # fmt: skip
        assert exp.value("gecko_pgbouncer_waiting_clients",
                         application_name="gecko-advisor-backend-1") is None  # fmt: skip
        promtool = require_tool("promtool")
        check = subprocess.run(
            [promtool, "check", "metrics"],
            input=exp.metrics_text(),
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        # the holders finish: the queue drains
        for conn in holders:
            conn.close()  # PgBouncer ends the transaction and frees the servers
        for thread in waiters:
            thread.join(10)
        exp.wait_value("gecko_pgbouncer_clients", lambda v: v == 0, timeout=10,
                       labels={**labels, "state": "waiting"})  # fmt: skip
        assert exp.value("gecko_pgbouncer_max_wait_seconds", **labels) == 0
        assert exp.value("gecko_pgbouncer_waiting_clients",
                         application_name="gecko-advisor-worker-7") is None  # fmt: skip


def _database_probes_unaffected(exp: ExporterProcess, seconds: float) -> None:
    """For ``seconds``: gecko_up stays 1 and the database probes keep succeeding."""
    runs_before = exp.value("gecko_probe_runs_total", probe="connections") or 0
    failures_before = _database_connect_failures(exp)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples = exp.metrics()
        assert samples[("gecko_up", ())] == 1
        for probe in ("slow_queries", "connections"):
            assert samples[("gecko_probe_success", (("probe", probe),))] == 1, probe
        time.sleep(0.2)
    assert (exp.value("gecko_probe_runs_total", probe="connections") or 0) > runs_before + 3
    # PgBouncer's failed logins are not the database's
    assert _database_connect_failures(exp) == failures_before


def _database_connect_failures(exp: ExporterProcess) -> float:
    return sum(
        v
        for (name, _), v in exp.metrics().items()
        if name == "gecko_database_connect_failures_total"
    )


def test_pgbouncer_outage_does_not_disturb_the_database_probes(
    gecko_db_any: GeckoDatabase, bouncer: PgBouncer
) -> None:
    with _exporter(gecko_db_any, bouncer) as exp:
        exp.wait_ready()
        exp.wait_value("gecko_pgbouncer_up", lambda v: v == 1, timeout=15)
        assert exp.value("gecko_pgbouncer_pool_size", database=DATABASE) == 2
        # killed: refused connections
        bouncer.kill()
        exp.wait_value("gecko_pgbouncer_up", lambda v: v == 0, timeout=10)
        assert exp.value("gecko_probe_success", probe="pgbouncer") == 0
        _database_probes_unaffected(exp, 5)
        # its pool series go stale and disappear; the database's stay
        wait_until(
            lambda: exp.value("gecko_pgbouncer_pool_size", database=DATABASE) is None,
            timeout=10,
            message="PgBouncer series gone",
        )
        assert exp.value("gecko_connection_pool_utilization_ratio", pool="server") is not None
        assert exp.value("gecko_connection_pool_utilization_ratio", pool=POOL) is None
        # back: the console is read again
        bouncer.start()
        exp.wait_value("gecko_pgbouncer_up", lambda v: v == 1, timeout=15)
        exp.wait_value("gecko_pgbouncer_pool_size", lambda v: v == 2, timeout=10,
                       labels={"database": DATABASE})  # fmt: skip
        # frozen: runs time out at their deadline, the lane is abandoned, gecko_up stays 1
        bouncer.pause()
        try:
            exp.wait_value("gecko_pgbouncer_up", lambda v: v == 0, timeout=15)
            _database_probes_unaffected(exp, 5)
            assert (exp.value("gecko_probe_failures_total", probe="pgbouncer",
                              reason="timeout") or 0) >= 1  # fmt: skip
        finally:
            bouncer.resume()
        exp.wait_value("gecko_pgbouncer_up", lambda v: v == 1, timeout=20)
        assert exp.value("gecko_up") == 1
