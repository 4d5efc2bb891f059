"""Pool utilization parsing (pure)."""

from __future__ import annotations

import pytest

from exporter.errors import SettingsError
from exporter.probes.connections import PoolMatcher, parse
from exporter.settings import load_config


def groups(*items: tuple[str, str, str, int]) -> list[dict]:  # type: ignore[type-arg]
    return [{"state": s, "application_name": a, "usename": u, "n": n} for s, a, u, n in items]


def values(families: list, name: str) -> dict:  # type: ignore[type-arg]
    fam = next(f for f in families if f.name == name)
    return {s.labels: s.value for s in fam.samples}


def test_server_and_app_pools() -> None:
    row = {
        "max_connections": 100,
        "superuser_reserved": 3,
        "reserved": 2,
        "groups": groups(
            ("active", "api", "app", 3),
            ("idle", "api", "app", 5),
            ("idle in transaction", "worker", "app", 1),
            ("idle", "", "postgres", 2),
            ("weird", "api", "other", 1),
        ),  # fmt: skip
    }
    pools = [PoolMatcher("backend", 10, application_name="api"),
             PoolMatcher("appuser", 20, usename="app"),
             PoolMatcher("both", 4, application_name="api", usename="other")]  # fmt: skip
    fams = parse(row, pools)
    ratio = values(fams, "gecko_connection_pool_utilization_ratio")
    assert ratio[("server",)] == 12 / 95
    assert ratio[("backend",)] == 4 / 10  # active + unknown state; idle ones are free
    assert ratio[("appuser",)] == 4 / 20
    assert ratio[("both",)] == 1 / 4
    states = values(fams, "gecko_connections")
    assert states[("idle",)] == 7 and states[("unknown",)] == 1
    assert states[("idle_in_transaction",)] == 1
    per_pool = values(fams, "gecko_connection_pool_connections")
    assert per_pool[("backend", "idle")] == 5
    assert values(fams, "gecko_connection_pool_size")[("server",)] == 95


def instance_groups(*items: tuple[str, str, str, int]) -> list[dict]:  # type: ignore[type-arg]
    """(state, application_name, client_addr, n) groups of user ``app``."""
    return [
        {"state": s, "application_name": a, "usename": "app", "client_addr": c, "n": n}
        for s, a, c, n in items
    ]


def pool_row(groups: list[dict]) -> dict:  # type: ignore[type-arg]
    return {"max_connections": 100, "superuser_reserved": 3, "reserved": 0, "groups": groups}


def test_prefix_pool_reads_its_busiest_instance() -> None:
    """One saturated process among idle ones reads 1.0, not the average."""
    row = pool_row(
        instance_groups(
            ("active", "gecko-advisor-backend-a", "10.0.0.1", 3),
            ("idle in transaction", "gecko-advisor-backend-a", "10.0.0.1", 1),
            ("idle", "gecko-advisor-backend-b", "10.0.0.2", 4),
            ("active", "gecko-advisor-worker-a", "10.0.0.1", 4),  # another pool
        )
    )
    fams = parse(row, [PoolMatcher("backend", 4, application_name="gecko-advisor-backend-*")])
    assert values(fams, "gecko_connection_pool_utilization_ratio")[("backend",)] == 1.0
    assert values(fams, "gecko_connection_pool_instances")[("backend",)] == 2
    assert values(fams, "gecko_connection_pool_connections_in_use")[("backend",)] == 4
    assert values(fams, "gecko_connection_pool_size")[("backend",)] == 4
    assert values(fams, "gecko_connection_pool_connections")[("backend", "idle")] == 4


def test_instances_at_three_of_four_read_075_not_the_sum() -> None:
    row = pool_row(
        instance_groups(
            ("active", "gecko-advisor-backend-a", "", 3),
            ("idle", "gecko-advisor-backend-a", "", 1),
            ("active", "gecko-advisor-backend-b", "", 2),
            ("idle in transaction", "gecko-advisor-backend-b", "", 1),
            ("idle", "gecko-advisor-backend-b", "", 1),
        )
    )
    fams = parse(row, [PoolMatcher("backend", 4, application_name="gecko-advisor-backend-*")])
    assert values(fams, "gecko_connection_pool_utilization_ratio")[("backend",)] == 0.75
    assert values(fams, "gecko_connection_pool_connections_in_use")[("backend",)] == 6
    assert values(fams, "gecko_connection_pool_instances")[("backend",)] == 2


def test_exact_name_pool_counts_client_addresses_as_instances() -> None:
    """Without '*' the application_name is shared: each client_addr is one process."""
    row = pool_row(
        instance_groups(
            ("active", "gecko-advisor-backend", "10.0.0.1", 3),
            ("active", "gecko-advisor-backend", "10.0.0.2", 3),
            ("idle", "gecko-advisor-backend", "10.0.0.3", 2),
            ("active", "gecko-advisor-backend-x", "10.0.0.4", 9),  # exact: not a match
        )
    )
    fams = parse(row, [PoolMatcher("backend", 4, application_name="gecko-advisor-backend")])
    assert values(fams, "gecko_connection_pool_utilization_ratio")[("backend",)] == 0.75
    assert values(fams, "gecko_connection_pool_instances")[("backend",)] == 3
    assert values(fams, "gecko_connection_pool_connections_in_use")[("backend",)] == 6


def test_usename_pool_and_unix_sockets_share_one_instance() -> None:
    row = pool_row(
        instance_groups(("active", "a", "", 2), ("active", "b", "", 1), ("active", "c", "::1", 1))
    )
    fams = parse(row, [PoolMatcher("app", 4, usename="app")])
    assert values(fams, "gecko_connection_pool_utilization_ratio")[("app",)] == 0.75
    assert values(fams, "gecko_connection_pool_instances")[("app",)] == 2


def test_pool_without_connections_reads_zero_instances() -> None:
    fams = parse(pool_row([]), [PoolMatcher("backend", 4, application_name="x-*")])
    assert values(fams, "gecko_connection_pool_utilization_ratio")[("backend",)] == 0
    assert values(fams, "gecko_connection_pool_instances")[("backend",)] == 0
    assert values(fams, "gecko_connection_pool_connections_in_use")[("backend",)] == 0


def test_prefix_matcher() -> None:
    pool = PoolMatcher("backend", 4, application_name="gecko-*", usename="app")
    assert pool.prefix == "gecko-"
    assert pool.matches("gecko-1", "app")
    assert not pool.matches("gecko-1", "other")
    assert not pool.matches("geck", "app")
    assert PoolMatcher("all", 4, application_name="*").matches("", "x")
    assert PoolMatcher("x", 4, application_name="a*").instance("ab", "10.0.0.1") == "ab"
    assert PoolMatcher("x", 4, application_name="a").instance("a", "10.0.0.1") == "10.0.0.1"


def test_star_only_at_the_end_of_a_pool_application_name() -> None:
    dsn = {"database_url": "postgresql://mon@127.0.0.1:1/privacy"}
    ok = load_config(
        overrides={**dsn, "pools": [{"name": "b", "application_name": "be-*", "size": 4}]}
    )
    assert ok.pools[0].application_name == "be-*"
    with pytest.raises(SettingsError, match=r"^pools\.0\.application_name: '\*' is allowed only"):
        load_config(
            overrides={**dsn, "pools": [{"name": "b", "application_name": "be-*-x", "size": 4}]}
        )
