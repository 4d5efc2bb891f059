"""Application pools are per process: the busiest instance is the pool's ratio (issue 11 §3).

Real client connections with chosen application_names (a ``*`` prefix pool) and
client addresses (an exact-name pool: TCP from 127.0.0.1 vs the Unix socket).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from gecko_demo import admin
from tests.conftest import GeckoDatabase
from tests.support.exporter_proc import ExporterProcess, fast_probe_env

pytestmark = pytest.mark.integration


def _open(st: ExitStack, dsn: str, app: str, *, busy: int, idle: int) -> None:
    """``busy`` connections holding a transaction (in use) and ``idle`` idle ones."""
    for _ in range(busy):
        conn = st.enter_context(admin.connect(dsn, application_name=app, autocommit=False))
        conn.execute("SELECT 1")  # opens a transaction and leaves it open: in use
    for _ in range(idle):
        st.enter_context(admin.connect(dsn, application_name=app))


@pytest.fixture
def exporter(gecko_db_any: GeckoDatabase) -> Iterator[tuple[ExporterProcess, str]]:
    tag = secrets.token_hex(3)
    pools = [
        {"name": "backend", "application_name": f"it-{tag}-backend-*", "size": 4},
        {"name": "worker", "application_name": f"it-{tag}-worker", "size": 4},
    ]
    env = fast_probe_env(connections=0.5)
    with ExporterProcess(gecko_db_any.monitor_dsn, env=env, config={"pools": pools}) as exp:
        exp.wait_ready()
        yield exp, tag


def _wait_pool(exp: ExporterProcess, pool: str, ratio: float, instances: int, in_use: int) -> None:
    def settled() -> bool:
        return (
            exp.value("gecko_connection_pool_utilization_ratio", pool=pool) == ratio
            and exp.value("gecko_connection_pool_instances", pool=pool) == instances
            and exp.value("gecko_connection_pool_connections_in_use", pool=pool) == in_use
        )

    exp.wait_value("gecko_connection_pool_instances", lambda v: settled(), timeout=15,
                   labels={"pool": pool})  # fmt: skip
    assert exp.value("gecko_connection_pool_utilization_ratio", pool=pool) == ratio
    assert exp.value("gecko_connection_pool_size", pool=pool) == 4


def test_prefix_pool_one_saturated_instance_reads_1(
    gecko_db_any: GeckoDatabase, exporter: tuple[ExporterProcess, str]
) -> None:
    exp, tag = exporter
    with ExitStack() as st:
        _open(st, gecko_db_any.admin_dsn, f"it-{tag}-backend-a", busy=4, idle=0)
        _open(st, gecko_db_any.admin_dsn, f"it-{tag}-backend-b", busy=0, idle=4)
        _wait_pool(exp, "backend", 1.0, instances=2, in_use=4)  # not 4 / 4 / 2 = 0.5
    with ExitStack() as st:
        _open(st, gecko_db_any.admin_dsn, f"it-{tag}-backend-a", busy=3, idle=1)
        _open(st, gecko_db_any.admin_dsn, f"it-{tag}-backend-b", busy=3, idle=1)
        _wait_pool(exp, "backend", 0.75, instances=2, in_use=6)  # not 6 / 4 = 1.5


def test_exact_name_pool_instances_are_client_addresses(
    gecko_db_any: GeckoDatabase, exporter: tuple[ExporterProcess, str]
) -> None:
    exp, tag = exporter
    cluster = gecko_db_any.require_cluster()
    # the same application_name from two "hosts": TCP 127.0.0.1 and the Unix socket
    local = f"host={cluster.sockdir} port={cluster.port} dbname={gecko_db_any.dbname} user=postgres"
    app = f"it-{tag}-worker"
    with ExitStack() as st:
        _open(st, gecko_db_any.admin_dsn, app, busy=4, idle=0)
        _open(st, local, app, busy=0, idle=2)
        _wait_pool(exp, "worker", 1.0, instances=2, in_use=4)
    with ExitStack() as st:
        _open(st, gecko_db_any.admin_dsn, app, busy=3, idle=1)
        _open(st, local, app, busy=3, idle=0)
        _wait_pool(exp, "worker", 0.75, instances=2, in_use=6)
