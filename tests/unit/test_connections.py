"""Pool utilization parsing (pure)."""

from __future__ import annotations

from exporter.probes.connections import PoolMatcher, parse


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
