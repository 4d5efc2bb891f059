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

**Stable series.** The top-N set changes every interval; series that come and
go break ``rate()`` and grow the stored series without bound. A statement
*enters* the exported set when it ranks in the top ``top_n`` of an interval,
*stays* while it ranks in the top ``2 * top_n``, and *leaves* once it has been
out of the top ``2 * top_n`` (or out of pg_stat_statements) for
``retention_seconds``. At most ``max_series`` statements are exported: when the
set is full, a newcomer takes the place of the member longest out of the top
``2 * top_n``, and waits when every member still ranks there
(:class:`SeriesMembership`).

**The application's statements.** The same read feeds
:class:`~exporter.probes.app_statements.AppStatements` (the
``gecko_app_query_*`` families): pg_stat_statements is scanned once per
interval for both, and query texts are read only to classify queryids not seen
before (see that module).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import structlog

from exporter.errors import DatabaseError
from exporter.probes.app_statements import AppStatements, texts_sql
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
    """The entries of this database that changed since the previous read (pure).

    An entry is one (userid, queryid, toplevel) of this database. The previous
    read's entries are passed as four arrays (``%s``: userids, queryids,
    toplevel flags, calls) and joined (FULL JOIN) with the current ones; the
    server answers only the entries that are new or whose calls changed
    (``kind = 'entry'``: ``userid``, ``queryid`` (text), ``toplevel``, ``own``
    (the exporter's role), ``calls``, ``total_ms``, ``max_ms``, ``rows`` and, from
    extension 1.11 (PostgreSQL 17), ``since`` (``stats_since``: tells a re-created
    entry)) and those no longer there (``kind = 'gone'``: a reset, an eviction).
    Unchanged entries, most of them most of the time, are not sent: shipping
    every entry of a full pg_stat_statements to the client is what makes a naive
    read expensive (benchmarks/statement_reads.py). ``toplevel`` exists from 1.9
    (PostgreSQL 14); before, every entry is top-level.
    """
    version = version_tuple(extension_version)
    if version >= (1, 8):
        total, peak = "total_exec_time", "max_exec_time"
    else:
        total, peak = "total_time", "max_time"
    toplevel = "s.toplevel" if version >= (1, 9) else "true"
    since_in = ", s.stats_since AS since" if version >= (1, 11) else ""
    since_out = ",\n       c.since::text AS since" if since_in else ""
    own_oid = "(SELECT oid FROM pg_roles WHERE rolname = current_user)"
    own = f"AND s.userid <> {own_oid}"
    return f"""
SELECT CASE WHEN c.queryid IS NULL THEN 'gone' ELSE 'entry' END AS kind,
       coalesce(c.userid, p.userid)::text AS userid,
       coalesce(c.queryid, p.queryid)::text AS queryid,
       coalesce(c.toplevel, p.toplevel) AS toplevel,
       c.userid = {own_oid}::bigint AS own,
       c.calls, c.total_ms, c.max_ms, c.rows{since_out}
FROM (
  SELECT s.userid::bigint AS userid, s.queryid, {toplevel} AS toplevel,
         s.calls::float8 AS calls, s.{total}::float8 AS total_ms,
         s.{peak}::float8 AS max_ms, s.rows::float8 AS rows{since_in}
  FROM {quote_ident(schema)}.pg_stat_statements(showtext := false) s
  WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND s.queryid IS NOT NULL {own if exclude_own_role else ""}
) c
FULL JOIN unnest(%s::bigint[], %s::bigint[], %s::boolean[], %s::float8[])
  AS p(userid, queryid, toplevel, calls)
  ON p.userid = c.userid AND p.queryid = c.queryid AND p.toplevel = c.toplevel
WHERE p.calls IS DISTINCT FROM c.calls
"""


class EntrySnapshot:
    """The full set of entries, rebuilt from each read's changes (pure)."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str, bool], Row] = {}

    def params(self) -> tuple[list[int], list[int], list[bool], list[float]]:
        """The previous read, as the four arrays :func:`build_sql` takes."""
        keys = list(self.entries)
        return (
            [int(u) for u, _, _ in keys],
            [int(q) for _, q, _ in keys],
            [t for _, _, t in keys],
            [float(self.entries[k]["calls"] or 0) for k in keys],
        )

    def apply(self, changes: Sequence[Row]) -> list[Row]:
        """Every entry after ``changes`` (``kind`` ``entry`` or ``gone``)."""
        for row in changes:
            key = (str(row["userid"]), str(row["queryid"]), bool(row.get("toplevel", True)))
            if row.get("kind") == "gone":
                self.entries.pop(key, None)
            else:
                self.entries[key] = row
        return list(self.entries.values())


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
    """Deltas of total execution time between runs and the top-N selection (pure).

    Rows are per (userid, queryid); a statement is a queryid (its rows summed).
    """

    def __init__(self, top_n: int) -> None:
        self.top_n = top_n
        self._previous: dict[str, float] = {}

    def observe(self, rows: Sequence[Row]) -> dict[str, Statement]:
        """Every statement of this read with its execution time since the previous read."""
        calls: dict[str, float] = {}
        totals: dict[str, float] = {}
        peaks: dict[str, float] = {}
        for row in rows:
            qid = str(row["queryid"])
            calls[qid] = calls.get(qid, 0.0) + float(row["calls"] or 0)
            totals[qid] = totals.get(qid, 0.0) + float(row["total_ms"] or 0)
            peaks[qid] = max(peaks.get(qid, 0.0), float(row["max_ms"] or 0))
        stats: dict[str, Statement] = {}
        for qid, total in totals.items():
            before = self._previous.get(qid, 0.0)
            delta = total - before if total >= before else total
            stats[qid] = Statement(qid, calls[qid], total, peaks[qid], delta)
        self._previous = totals
        return stats

    def update(self, rows: Sequence[Row]) -> tuple[list[Statement], int]:
        """Top statements of this interval (most time first) and the number tracked."""
        stats = self.observe(rows)
        return ranked(stats.values())[: self.top_n], len(stats)


def ranked(stats: Iterable[Statement]) -> list[Statement]:
    """Statements that used time in the interval, most first (ties by queryid)."""
    return sorted(
        (s for s in stats if s.interval_ms > 0), key=lambda s: (-s.interval_ms, s.queryid)
    )


class SeriesMembership:
    """Which queryids get series: enter in the top N, leave after a while out of the top 2N.

    Pure; ``now`` is a monotonic time in seconds. See the module docstring.
    """

    def __init__(self, top_n: int, *, retention_seconds: float, max_series: int) -> None:
        if max_series < top_n:
            raise ValueError("max_series must be at least top_n")
        self.top_n = top_n
        self.retention_seconds = retention_seconds
        self.max_series = max_series
        #: queryid -> last time it ranked in the top 2N (or entered)
        self.members: dict[str, float] = {}
        #: newcomers that could not enter because every member still ranked (cumulative)
        self.refused = 0

    def update(self, ranking: Sequence[str], now: float) -> list[str]:
        """The members after an interval whose statements ranked as ``ranking``."""
        wide = set(ranking[: 2 * self.top_n])
        for qid in wide & self.members.keys():
            self.members[qid] = now
        self.members = {
            qid: last
            for qid, last in self.members.items()
            if qid in wide or now - last < self.retention_seconds
        }
        for qid in ranking[: self.top_n]:
            if qid in self.members:
                continue
            if len(self.members) >= self.max_series:
                outside = [(last, q) for q, last in self.members.items() if q not in wide]
                if not outside:
                    self.refused += 1
                    continue
                del self.members[min(outside)[1]]
            self.members[qid] = now
        return sorted(self.members)


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
            "Calls of the statement (exported set: entered in the top-N by execution time of "
            "an interval, kept while in the top 2N and for retention_seconds after).",
            labelnames=("queryid",),
            values={(s.queryid,): s.calls for s in top},
        ),
        counter(
            "gecko_statement_exec_time_seconds_total",
            "Total execution time of the statement (exported set).",
            labelnames=("queryid",),
            values={(s.queryid,): s.total_ms / 1000 for s in top},
        ),
        gauge(
            "gecko_statement_mean_exec_time_seconds",
            "Mean execution time of the statement since its statistics began (exported set).",
            labelnames=("queryid",),
            values={(s.queryid,): s.mean_ms / 1000 for s in top},
        ),
        gauge(
            "gecko_statement_max_exec_time_seconds",
            "Longest execution of the statement since its statistics began (exported set).",
            labelnames=("queryid",),
            values={(s.queryid,): s.max_ms / 1000 for s in top},
        ),
        gauge(
            "gecko_statement_interval_exec_time_seconds",
            "Execution time the statement used since the previous probe run (the ranking key).",
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
    """Statements of the monitored database by recent execution time, and the app's own."""

    name = "statements"
    lane: LaneName = "catalog"

    def __init__(
        self,
        top_n: int = 20,
        *,
        exclude_own_role: bool = True,
        retention_seconds: float = 900.0,
        max_series: int = 100,
        app_schema: str = "public",
        text_refresh_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tracker = StatementTracker(top_n)
        self.membership = SeriesMembership(
            top_n, retention_seconds=retention_seconds, max_series=max(max_series, top_n)
        )
        self.app = AppStatements(app_schema, text_refresh_seconds=text_refresh_seconds, clock=clock)
        self.exclude_own_role = exclude_own_role
        self.snapshot = EntrySnapshot()
        self.clock = clock
        self._state: str | None = None

    def _transition(self, state: str, **fields: str) -> None:
        if state == self._state:
            return
        self._state = state
        if state == "available":
            log.info("statements_available", **fields)
        else:
            log.warning("statements_unavailable", reason=state, **fields)

    def _unavailable(self, state: str, **fields: str) -> list[Family]:
        self._transition(state, **fields)
        self.app.unavailable()
        return unavailable() + self.app.families()

    async def collect(self, session: Session, now: float) -> list[Family]:
        del now
        ext = await session.fetch_one(EXTENSION_SQL)
        if ext is None:
            return self._unavailable("not_installed")
        if not preloaded(str(ext.get("preload") or "")):
            return self._unavailable("not_preloaded")
        schema = str(ext["schema_name"])
        sql = build_sql(schema, str(ext["version"]), exclude_own_role=self.exclude_own_role)
        try:
            rows = self.snapshot.apply(await session.fetch(sql, self.snapshot.params()))
            unknown = self.app.to_classify(rows)
            if unknown:
                texts = await session.fetch(
                    texts_sql(quote_ident(schema), exclude_own_role=True),
                    ([int(q) for q in unknown],),
                )
                self.app.learn(unknown, texts)
        except DatabaseError as exc:
            if exc.reason != "query_error":  # timeouts and outages are probe failures
                raise
            return self._unavailable(unavailable_reason(str(exc)), error=str(exc))
        self._transition("available", version=str(ext["version"]))
        stats = self.tracker.observe(rows)
        members = self.membership.update([s.queryid for s in ranked(stats.values())], self.clock())
        self.app.update(rows)
        exported = [stats[q] for q in members if q in stats]
        return parse(exported, len(stats)) + self.app.families()

    def persistent(self) -> list[Family]:
        return self.app.persistent()
