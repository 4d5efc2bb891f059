"""Connection-pool utilization: server-wide and per application pool.

``pool="server"``: every client backend occupies a slot, so the ratio is client
backends / connections usable by non-superusers (max_connections minus
superuser_reserved_connections and, on PostgreSQL 16+, reserved_connections).

Application pools (Prisma ``connection_limit``): a connection is *in use* while
it is not idle (running a query or holding a transaction); idle connections are
free slots of the pool.

A pool's ``size`` is one process's pool (a PrismaClient in one process), so
connections are grouped into *instances* of the pool: with an ``application_name``
ending in ``*`` (a prefix match) each distinct matched application_name is one
instance; otherwise each distinct ``client_addr`` is one (every Unix-socket
connection shares the empty address). The pool's ratio is its busiest instance's
in-use / size, so one saturated process is not diluted by idle ones and three
processes at 3 of 4 read 0.75, not 2.25. No label names an instance.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from exporter.probes.base import LaneName, Row, Session
from exporter.samples import Family, gauge, keep_unchanged

SQL = """
SELECT current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int AS superuser_reserved,
       COALESCE(NULLIF(current_setting('reserved_connections', true), ''), '0')::int
           AS reserved,
       (SELECT COALESCE(json_agg(g), '[]'::json) FROM (
            SELECT COALESCE(state, 'unknown') AS state,
                   COALESCE(application_name, '') AS application_name,
                   COALESCE(usename::text, '') AS usename,
                   COALESCE(host(client_addr), '') AS client_addr,
                   count(*)::int AS n
            FROM pg_stat_activity
            WHERE backend_type = 'client backend'
            GROUP BY 1, 2, 3, 4) g) AS groups
"""

STATES = {
    "active": "active",
    "idle": "idle",
    "idle in transaction": "idle_in_transaction",
    "idle in transaction (aborted)": "idle_in_transaction_aborted",
    "fastpath function call": "fastpath_function_call",
    "disabled": "disabled",
}


def normalize_state(state: str) -> str:
    """pg_stat_activity.state as a bounded label value."""
    return STATES.get(state, "unknown")


@dataclass(frozen=True)
class PoolMatcher:
    """A configured application pool; ``application_name`` ending in ``*`` is a prefix."""

    name: str
    size: int
    application_name: str | None = None
    usename: str | None = None

    @property
    def prefix(self) -> str | None:
        """The application_name prefix when the pattern ends in ``*`` (else None)."""
        name = self.application_name
        return name[:-1] if name is not None and name.endswith("*") else None

    def matches(self, application_name: str, usename: str) -> bool:
        prefix = self.prefix
        if prefix is not None:
            name_ok = application_name.startswith(prefix)
        else:
            name_ok = self.application_name is None or self.application_name == application_name
        return name_ok and (self.usename is None or self.usename == usename)

    def instance(self, application_name: str, client_addr: str) -> str:
        """Which instance (process) of the pool a matched connection belongs to."""
        return application_name if self.prefix is not None else client_addr


def parse(row: Row, pools: Sequence[PoolMatcher]) -> list[Family]:
    """The probe's single row to families (pure)."""
    usable = max(
        1, int(row["max_connections"]) - int(row["superuser_reserved"]) - int(row["reserved"])
    )
    by_state: Counter[str] = Counter()
    pool_states: dict[str, Counter[str]] = {p.name: Counter() for p in pools}
    #: pool -> instance -> connections in use (every matched instance, idle ones at 0)
    instances: dict[str, Counter[str]] = {p.name: Counter() for p in pools}
    for group in row["groups"] or []:
        state = normalize_state(str(group["state"]))
        n = int(group["n"])
        by_state[state] += n
        app = str(group["application_name"])
        for pool in pools:
            if pool.matches(app, str(group["usename"])):
                pool_states[pool.name][state] += n
                key = pool.instance(app, str(group.get("client_addr") or ""))
                instances[pool.name][key] += 0 if state == "idle" else n

    in_use = {"server": float(sum(by_state.values()))}
    busiest = dict(in_use)
    size = {"server": float(usable)}
    for pool in pools:
        per_instance = instances[pool.name]
        in_use[pool.name] = float(sum(per_instance.values()))
        busiest[pool.name] = float(max(per_instance.values(), default=0))
        size[pool.name] = float(pool.size)

    every_state = dict.fromkeys((*STATES.values(), "unknown"), 0.0)
    return [
        gauge(
            "gecko_connection_pool_utilization_ratio",
            "Connections in use / usable pool size, 0-1. pool=server counts every "
            "client backend against max_connections minus reserved slots; an application "
            "pool reads its busiest instance (process).",
            labelnames=("pool",),
            values={(name,): min(busiest[name] / size[name], 1e6) for name in busiest},
        ),
        gauge(
            "gecko_connection_pool_connections_in_use",
            "Connections in use, summed over every instance of the pool.",
            labelnames=("pool",),
            values={(name,): v for name, v in in_use.items()},
        ),
        gauge(
            "gecko_connection_pool_size",
            "Connections usable by one instance of the pool, denominator of the utilization ratio.",
            labelnames=("pool",),
            values={(name,): v for name, v in size.items()},
        ),
        gauge(
            "gecko_connection_pool_instances",
            "Instances (processes) of an application pool with at least one connection: "
            "distinct application_names for a prefix pattern, else distinct client addresses.",
            labelnames=("pool",),
            values={(p.name,): float(len(instances[p.name])) for p in pools},
        ),
        gauge(
            "gecko_connections",
            "Client backends by state, all databases (from pg_stat_activity).",
            labelnames=("state",),
            values={(s,): every_state[s] + by_state.get(s, 0) for s in every_state},
        ),
        gauge(
            "gecko_connection_pool_connections",
            "Application pool connections by state (from pg_stat_activity).",
            labelnames=("pool", "state"),
            values={
                (p, s): float(n) for p, states in pool_states.items() for s, n in states.items()
            },
        ),
        gauge(
            "gecko_max_connections",
            "The server's max_connections setting.",
            float(row["max_connections"]),
        ),
    ]


class ConnectionsProbe:
    name = "connections"
    lane: LaneName = "activity"

    def __init__(self, pools: Sequence[PoolMatcher]) -> None:
        self.pools = tuple(pools)
        #: the last answer: families equal to it are returned as the same objects
        self._last: tuple[Family, ...] = ()

    async def collect(self, session: Session, now: float) -> list[Family]:
        del now
        row = await session.fetch_one(SQL)
        if row is None:
            return []
        self._last = keep_unchanged(parse(row, self.pools), self._last)
        return list(self._last)

    def persistent(self) -> list[Family]:
        return []
