"""PgBouncer pools from its admin console: SHOW POOLS, SHOW DATABASES, SHOW CLIENTS.

Read on a lane of its own (:mod:`exporter.db.pgbouncer`), simple query protocol
only: every statement is sent without parameters and never prepared.

* ``SHOW POOLS``: one row per (database, user) pool: clients ``cl_active`` /
  ``cl_waiting`` (queued for a server), servers ``sv_active`` (linked to a
  client), ``sv_idle``, ``sv_used``, ``sv_tested``, ``sv_login``, and the oldest
  wait ``maxwait`` (whole seconds) + ``maxwait_us`` (its microsecond part).
* ``SHOW DATABASES``: ``pool_size`` per configured database.
* ``SHOW CLIENTS``: read only while some pool has waiting clients, to count them
  per ``application_name`` (which process queues).

Each pool is also ``gecko_connection_pool_utilization_ratio{pool="pgbouncer/<db>/<user>"}``
= ``sv_active / pool_size``, so the pool alert covers PgBouncer. The console's
own pseudo-database ``pgbouncer`` is left out. Columns are read by name (they
were added across PgBouncer versions); label values are bounded by
``max_pools`` (the busiest pools first) and ``max_applications``.

Parsing is pure; :class:`PgBouncerProbe` only sends the three statements.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from exporter.probes.base import LaneName, Row, Session
from exporter.samples import Family, gauge

SHOW_POOLS = "SHOW POOLS"
SHOW_DATABASES = "SHOW DATABASES"
SHOW_CLIENTS = "SHOW CLIENTS"
#: the admin console's own pseudo-database (not a pool of the application)
ADMIN_DATABASE = "pgbouncer"
#: ``pool`` label prefix of PgBouncer pools in the gecko_connection_pool_* families
POOL_PREFIX = "pgbouncer/"
CLIENT_STATES = ("active", "waiting")
SERVER_STATES = ("active", "idle", "used", "tested", "login")
#: waiting clients of application_names beyond ``max_applications``
OTHER_APPLICATIONS = "(other)"
#: waiting clients that sent no application_name
NO_APPLICATION = "(none)"


def _int(row: Mapping[str, Any], column: str) -> int:
    value = row.get(column)
    try:
        return int(value) if value is not None else 0
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True)
class Pool:
    """One (database, user) pool of SHOW POOLS."""

    database: str
    user: str
    clients: Mapping[str, int]
    servers: Mapping[str, int]
    max_wait_seconds: float

    @property
    def label(self) -> str:
        return f"{POOL_PREFIX}{self.database}/{self.user}"

    def busy_key(self) -> tuple[int, float, int, int, str, str]:
        """Sort key: pools with waiting clients, long waits and busy servers first."""
        return (
            -self.clients["waiting"],
            -self.max_wait_seconds,
            -self.servers["active"],
            -self.clients["active"],
            self.database,
            self.user,
        )


def parse_pools(rows: Iterable[Row]) -> list[Pool]:
    """SHOW POOLS rows to pools (the admin console's own pool left out)."""
    pools = []
    for row in rows:
        database = str(row.get("database") or "")
        if database == ADMIN_DATABASE:
            continue
        pools.append(
            Pool(
                database=database,
                user=str(row.get("user") or ""),
                clients={s: _int(row, f"cl_{s}") for s in CLIENT_STATES},
                servers={s: _int(row, f"sv_{s}") for s in SERVER_STATES},
                max_wait_seconds=_int(row, "maxwait") + _int(row, "maxwait_us") / 1e6,
            )
        )
    return pools


def parse_pool_sizes(rows: Iterable[Row]) -> dict[str, int]:
    """SHOW DATABASES rows to ``{database name: pool_size}``."""
    return {
        str(row.get("name") or ""): _int(row, "pool_size")
        for row in rows
        if row.get("name") != ADMIN_DATABASE
    }


def waiting_by_application(rows: Iterable[Row], max_applications: int) -> dict[str, int]:
    """Waiting clients of SHOW CLIENTS per application_name (the top ones, the rest summed)."""
    counts: Counter[str] = Counter()
    for row in rows:
        if row.get("state") == "waiting":
            counts[str(row.get("application_name") or "") or NO_APPLICATION] += 1
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    top = dict(ranked[:max_applications])
    rest = sum(n for _, n in ranked[max_applications:])
    if rest:
        top[OTHER_APPLICATIONS] = top.get(OTHER_APPLICATIONS, 0) + rest
    return top


def select_pools(pools: Sequence[Pool], max_pools: int) -> list[Pool]:
    """At most ``max_pools`` pools, the busiest first, in a stable order."""
    return sorted(pools, key=Pool.busy_key)[:max_pools]


def families(
    pools: Sequence[Pool],
    sizes: Mapping[str, int],
    waiting: Mapping[str, int],
    *,
    max_pools: int,
) -> list[Family]:
    """Every pool family (pure): ``pools`` as parsed, bounded here."""
    shown = select_pools(pools, max_pools)
    databases = list(dict.fromkeys(p.database for p in shown))
    databases += sorted(d for d in sizes if d not in databases)
    databases = [d for d in databases if d in sizes][:max_pools]
    utilization: dict[tuple[str, ...], float] = {}
    in_use: dict[tuple[str, ...], float] = {}
    size: dict[tuple[str, ...], float] = {}
    for p in shown:
        pool_size = sizes.get(p.database, 0)
        if pool_size <= 0:
            continue
        utilization[(p.label,)] = p.servers["active"] / pool_size
        in_use[(p.label,)] = float(p.servers["active"])
        size[(p.label,)] = float(pool_size)
    return [
        gauge(
            "gecko_pgbouncer_clients",
            "PgBouncer client connections per pool: active (linked to a server, or idle with "
            "nothing to wait for) or waiting (queued for a server).",
            labelnames=("database", "user", "state"),
            values={
                (p.database, p.user, s): float(p.clients[s]) for p in shown for s in CLIENT_STATES
            },
        ),
        gauge(
            "gecko_pgbouncer_servers",
            "PgBouncer server connections per pool: active (linked to a client), idle, used, "
            "tested, login.",
            labelnames=("database", "user", "state"),
            values={
                (p.database, p.user, s): float(p.servers[s]) for p in shown for s in SERVER_STATES
            },
        ),
        gauge(
            "gecko_pgbouncer_max_wait_seconds",
            "Wait of the oldest client queued for a server in the pool (microsecond "
            "precision), 0 when none waits.",
            labelnames=("database", "user"),
            values={(p.database, p.user): p.max_wait_seconds for p in shown},
        ),
        gauge(
            "gecko_pgbouncer_pool_size",
            "PgBouncer pool_size of the database: server connections per (database, user) pool.",
            labelnames=("database",),
            values={(d,): float(sizes[d]) for d in databases},
        ),
        gauge(
            "gecko_pgbouncer_pools",
            "(database, user) pools PgBouncer reports (the admin console left out); at most "
            "pgbouncer.max_pools of them get series.",
            float(len(pools)),
        ),
        gauge(
            "gecko_pgbouncer_waiting_clients",
            "Clients queued for a server, by application_name (read from SHOW CLIENTS while "
            "some pool has waiting clients; the least frequent beyond pgbouncer.max_applications "
            "as (other)).",
            labelnames=("application_name",),
            values={(app,): float(n) for app, n in waiting.items()},
        ),
        gauge(
            "gecko_connection_pool_utilization_ratio",
            "Connections in use / usable pool size, 0-1. pool=pgbouncer/<database>/<user>: "
            "PgBouncer server connections linked to a client / pool_size.",
            labelnames=("pool",),
            values=utilization,
        ),
        gauge(
            "gecko_connection_pool_connections_in_use",
            "Connections in use. pool=pgbouncer/<database>/<user>: active server connections.",
            labelnames=("pool",),
            values=in_use,
        ),
        gauge(
            "gecko_connection_pool_size",
            "Connections usable by the pool. pool=pgbouncer/<database>/<user>: PgBouncer's "
            "pool_size.",
            labelnames=("pool",),
            values=size,
        ),
    ]


class PgBouncerProbe:
    """Reads the PgBouncer admin console every interval (only when one is configured)."""

    name = "pgbouncer"
    lane: LaneName = "pgbouncer"

    def __init__(
        self, up: Callable[[], bool], *, max_pools: int = 50, max_applications: int = 20
    ) -> None:
        self._up = up
        self.max_pools = max_pools
        self.max_applications = max_applications

    async def collect(self, session: Session, now: float) -> list[Family]:
        del now
        pools = parse_pools(await session.fetch(SHOW_POOLS, prepare=False))
        sizes = parse_pool_sizes(await session.fetch(SHOW_DATABASES, prepare=False))
        waiting: dict[str, int] = {}
        if any(p.clients["waiting"] for p in pools):
            rows = await session.fetch(SHOW_CLIENTS, prepare=False)
            waiting = waiting_by_application(rows, self.max_applications)
        return families(pools, sizes, waiting, max_pools=self.max_pools)

    def persistent(self) -> list[Family]:
        return [
            gauge(
                "gecko_pgbouncer_up",
                "1 while the PgBouncer admin console answers the exporter's reads, 0 when it "
                "does not (down, refusing logins, frozen).",
                1.0 if self._up() else 0.0,
            )
        ]
