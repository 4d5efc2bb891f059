"""Top statements by execution time in the last interval, from pg_stat_statements.

Reads ``pg_stat_statements(showtext := false)`` (no query texts) of the
monitored database, aggregated per ``queryid``, and keeps the previous totals
in memory: the ``top_n`` statements with the most execution time since the
last run get series labelled by ``queryid`` (a counter that went down, after a
reset or an eviction, counts from zero).

Column names follow the installed extension version, not the server version
(an upgraded cluster can keep an old extension): ``total_exec_time`` and
``max_exec_time`` from 1.8 (PostgreSQL 13), ``total_time``/``max_time`` before.
The columns used are stable from PostgreSQL 13 to 18.

Unavailable (extension not created in this database, library not in
``shared_preload_libraries``, no privilege) is a state, not a failure:
``gecko_statements_available 0``, the probe succeeds, and the reason is logged
once per change (``statements_unavailable``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from exporter.errors import DatabaseError
from exporter.probes.base import LaneName, Row, Session
from exporter.probes.sql import quote_ident
from exporter.samples import Family, counter, gauge

log = structlog.get_logger("exporter.probes.statements")

EXTENSION_SQL = """
SELECT n.nspname::text AS schema_name, e.extversion AS version,
       current_setting('shared_preload_libraries') AS preload
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'pg_stat_statements'
"""


def preloaded(setting: str) -> bool:
    """Whether ``shared_preload_libraries`` names pg_stat_statements (pure).

    Without it, reading the view fails with SQLSTATE 55000, which the session
    layer treats as a lost connection: check first instead.
    """
    for item in setting.split(","):
        name = item.strip().strip('"').rsplit("/", 1)[-1].removesuffix(".so")
        if name == "pg_stat_statements":
            return True
    return False


def version_tuple(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for part in version.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def build_sql(schema: str, extension_version: str, *, exclude_own_role: bool) -> str:
    """The per-queryid aggregate for the installed extension version (pure)."""
    if version_tuple(extension_version) >= (1, 8):
        total, peak = "total_exec_time", "max_exec_time"
    else:
        total, peak = "total_time", "max_time"
    own = "AND s.userid <> (SELECT oid FROM pg_roles WHERE rolname = current_user)"
    return f"""
SELECT s.queryid::text AS queryid,
       sum(s.calls)::float8 AS calls,
       sum(s.{total})::float8 AS total_ms,
       max(s.{peak})::float8 AS max_ms
FROM {quote_ident(schema)}.pg_stat_statements(showtext := false) s
WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND s.queryid IS NOT NULL {own if exclude_own_role else ""}
GROUP BY s.queryid
"""


@dataclass(frozen=True)
class Statement:
    queryid: str
    calls: float
    total_ms: float
    max_ms: float
    interval_ms: float

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.calls if self.calls > 0 else 0.0


class StatementTracker:
    """Deltas of total execution time between runs and the top-N selection (pure)."""

    def __init__(self, top_n: int) -> None:
        self.top_n = top_n
        self._previous: dict[str, float] = {}

    def update(self, rows: Sequence[Row]) -> tuple[list[Statement], int]:
        """Top statements of this interval (most time first) and the number tracked."""
        current: dict[str, float] = {}
        stats: list[Statement] = []
        for row in rows:
            qid = str(row["queryid"])
            total = float(row["total_ms"] or 0)
            current[qid] = total
            before = self._previous.get(qid, 0.0)
            delta = total - before if total >= before else total
            if delta > 0:
                stats.append(
                    Statement(
                        qid, float(row["calls"] or 0), total, float(row["max_ms"] or 0), delta
                    )
                )
        self._previous = current
        stats.sort(key=lambda s: (-s.interval_ms, s.queryid))
        return stats[: self.top_n], len(current)


def parse(top: Sequence[Statement], tracked: int) -> list[Family]:
    """Families of an available pg_stat_statements (pure)."""
    return [
        gauge("gecko_statements_available", "1 when pg_stat_statements can be read.", 1.0),
        gauge(
            "gecko_statements_tracked",
            "Distinct queryids of the monitored database in pg_stat_statements.",
            float(tracked),
        ),
        counter(
            "gecko_statement_calls_total",
            "Calls of the statement (top-N by execution time in the last interval).",
            labelnames=("queryid",),
            values={(s.queryid,): s.calls for s in top},
        ),
        counter(
            "gecko_statement_exec_time_seconds_total",
            "Total execution time of the statement (top-N).",
            labelnames=("queryid",),
            values={(s.queryid,): s.total_ms / 1000 for s in top},
        ),
        gauge(
            "gecko_statement_mean_exec_time_seconds",
            "Mean execution time of the statement since its statistics began (top-N).",
            labelnames=("queryid",),
            values={(s.queryid,): s.mean_ms / 1000 for s in top},
        ),
        gauge(
            "gecko_statement_max_exec_time_seconds",
            "Longest execution of the statement since its statistics began (top-N).",
            labelnames=("queryid",),
            values={(s.queryid,): s.max_ms / 1000 for s in top},
        ),
        gauge(
            "gecko_statement_interval_exec_time_seconds",
            "Execution time the statement used since the previous probe run (the top-N key).",
            labelnames=("queryid",),
            values={(s.queryid,): s.interval_ms / 1000 for s in top},
        ),
    ]


def unavailable() -> list[Family]:
    return [gauge("gecko_statements_available", "1 when pg_stat_statements can be read.", 0.0)]


def unavailable_reason(message: str) -> str:
    """A short reason for the log from a server error message."""
    text = message.lower()
    if "shared_preload_libraries" in text:
        return "not_preloaded"
    if "permission denied" in text or "42501" in text:
        return "permission_denied"
    return "query_error"


class StatementsProbe:
    """Top-N statements of the monitored database by recent execution time."""

    name = "statements"
    lane: LaneName = "catalog"

    def __init__(self, top_n: int = 20, *, exclude_own_role: bool = True) -> None:
        self.tracker = StatementTracker(top_n)
        self.exclude_own_role = exclude_own_role
        self._state: str | None = None

    def _transition(self, state: str, **fields: str) -> None:
        if state == self._state:
            return
        self._state = state
        if state == "available":
            log.info("statements_available", **fields)
        else:
            log.warning("statements_unavailable", reason=state, **fields)

    async def collect(self, session: Session, now: float) -> list[Family]:
        del now
        ext = await session.fetch_one(EXTENSION_SQL)
        if ext is None:
            self._transition("not_installed")
            return unavailable()
        if not preloaded(str(ext.get("preload") or "")):
            self._transition("not_preloaded")
            return unavailable()
        sql = build_sql(
            str(ext["schema_name"]), str(ext["version"]), exclude_own_role=self.exclude_own_role
        )
        try:
            rows = await session.fetch(sql)
        except DatabaseError as exc:
            if exc.reason != "query_error":  # timeouts and outages are probe failures
                raise
            self._transition(unavailable_reason(str(exc)), error=str(exc))
            return unavailable()
        self._transition("available", version=str(ext["version"]))
        top, tracked = self.tracker.update(rows)
        return parse(top, tracked)

    def persistent(self) -> list[Family]:
        return []
