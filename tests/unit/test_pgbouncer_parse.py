"""PgBouncer SHOW output to families (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.probes.pgbouncer import (
    OTHER_APPLICATIONS,
    families,
    parse_pool_sizes,
    parse_pools,
    waiting_by_application,
)
from exporter.samples import Family


def pool_row(database: str, user: str, **counts: Any) -> dict[str, Any]:
    """A SHOW POOLS row of PgBouncer 1.18 (columns read by name)."""
    row: dict[str, Any] = {
        "database": database,
        "user": user,
        "cl_active": 0,
        "cl_waiting": 0,
        "cl_active_cancel_req": 0,
        "cl_waiting_cancel_req": 0,
        "sv_active": 0,
        "sv_active_cancel": 0,
        "sv_being_canceled": 0,
        "sv_idle": 0,
        "sv_used": 0,
        "sv_tested": 0,
        "sv_login": 0,
        "maxwait": 0,
        "maxwait_us": 0,
        "pool_mode": "transaction",
    }
    row.update(counts)
    return row


def values(fams: list[Family], name: str) -> dict[tuple[str, ...], float]:
    fam = next(f for f in fams if f.name == name)
    return {s.labels: s.value for s in fam.samples}


DATABASES = [
    {"name": "privacy", "pool_size": 20, "reserve_pool": 0},
    {"name": "pgbouncer", "pool_size": 2},
    {"name": "other", "pool_size": 0},
]


def test_pools_clients_servers_wait_and_utilization() -> None:
    rows = [
        pool_row("pgbouncer", "pgbouncer", cl_active=1),  # the admin console itself
        pool_row("privacy", "app", cl_active=17, cl_waiting=3, sv_active=17, sv_idle=2,
                 sv_used=1, sv_tested=0, sv_login=0, maxwait=1, maxwait_us=250_000),
    ]  # fmt: skip
    fams = families(parse_pools(rows), parse_pool_sizes(DATABASES), {}, max_pools=50)
    key = ("privacy", "app")
    assert values(fams, "gecko_pgbouncer_clients") == {(*key, "active"): 17, (*key, "waiting"): 3}
    servers = values(fams, "gecko_pgbouncer_servers")
    assert servers[(*key, "active")] == 17 and servers[(*key, "idle")] == 2
    assert set(servers) == {(*key, s) for s in ("active", "idle", "used", "tested", "login")}
    assert values(fams, "gecko_pgbouncer_max_wait_seconds") == {key: 1.25}
    assert values(fams, "gecko_connection_pool_utilization_ratio") == {
        ("pgbouncer/privacy/app",): 17 / 20
    }
    assert values(fams, "gecko_connection_pool_size") == {("pgbouncer/privacy/app",): 20}
    assert values(fams, "gecko_connection_pool_connections_in_use") == {
        ("pgbouncer/privacy/app",): 17
    }
    # the console's own database is no pool of the application
    assert values(fams, "gecko_pgbouncer_pool_size") == {("privacy",): 20, ("other",): 0}
    assert values(fams, "gecko_pgbouncer_pools") == {(): 1}


def test_microsecond_precision_and_missing_columns() -> None:
    """maxwait_us adds the microseconds; older versions without it (or sv_login) read 0."""
    pools = parse_pools([pool_row("d", "u", maxwait=0, maxwait_us=7)])
    assert pools[0].max_wait_seconds == 7e-6
    old = {"database": "d", "user": "u", "cl_active": "2", "cl_waiting": "1", "maxwait": "3"}
    (pool,) = parse_pools([old])
    assert pool.max_wait_seconds == 3 and pool.clients == {"active": 2, "waiting": 1}
    assert pool.servers["login"] == 0


def test_pool_without_size_gets_no_ratio() -> None:
    fams = families(
        parse_pools([pool_row("other", "u", sv_active=1), pool_row("gone", "u", sv_active=1)]),
        parse_pool_sizes(DATABASES),
        {},
        max_pools=50,
    )
    assert values(fams, "gecko_connection_pool_utilization_ratio") == {}
    assert values(fams, "gecko_pgbouncer_clients")[("gone", "u", "active")] == 0


@pytest.mark.parametrize("max_pools", [1, 2])
def test_label_values_bounded_busiest_pools_first(max_pools: int) -> None:
    rows = [pool_row(f"db{i}", "u", sv_active=i) for i in range(10)]
    rows.append(pool_row("db0", "w", cl_waiting=1))
    sizes = {f"db{i}": 10 for i in range(10)}
    fams = families(parse_pools(rows), sizes, {}, max_pools=max_pools)
    ratios = values(fams, "gecko_connection_pool_utilization_ratio")
    expected = ["pgbouncer/db0/w", "pgbouncer/db9/u"][:max_pools]
    assert sorted(ratios) == sorted((p,) for p in expected)
    assert len(values(fams, "gecko_pgbouncer_max_wait_seconds")) == max_pools
    assert len(values(fams, "gecko_pgbouncer_pool_size")) == max_pools
    assert values(fams, "gecko_pgbouncer_pools") == {(): 11}


def test_waiting_clients_per_application_bounded() -> None:
    rows = [
        {"state": "waiting", "application_name": "backend-1"},
        {"state": "waiting", "application_name": "backend-1"},
        {"state": "waiting", "application_name": "worker"},
        {"state": "waiting", "application_name": "cron"},
        {"state": "waiting", "application_name": ""},
        {"state": "active", "application_name": "backend-2"},
        {"state": "waiting"},  # PgBouncer without the column
    ]
    assert waiting_by_application(rows, 10) == {
        "backend-1": 2, "worker": 1, "cron": 1, "(none)": 2,
    }  # fmt: skip
    top = waiting_by_application(rows, 2)
    assert top == {"backend-1": 2, "(none)": 2, OTHER_APPLICATIONS: 2}
    assert sum(top.values()) == 6
    fams = families([], {}, top, max_pools=5)
    assert values(fams, "gecko_pgbouncer_waiting_clients")[(OTHER_APPLICATIONS,)] == 2
