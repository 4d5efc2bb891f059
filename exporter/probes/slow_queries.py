"""Long-running queries from pg_stat_activity, sampled every second by default.

The headline "any query running > 5 s" covers **application queries in the
monitored database** (``datname = current_database()``, plus the databases named
in ``slow_query_databases``). Planned long work in those databases is classified
apart, with a bounded ``kind``, and never raises the headline gauges:

* a statement that builds or maintains (``CREATE INDEX``, ``REINDEX``, ``VACUUM``,
  ``ANALYZE``, ``CLUSTER``), recognised from ``pg_stat_progress_*`` or from the
  statement's leading keywords;
* a backup tool's session (``pg_dump``, ``pgBackRest`` …, by ``application_name``);
* sessions of the configured maintenance roles and application names (``other``).

``gecko_slow_queries_total`` counts each distinct application query (pid +
query_start) once, the first time it is seen running longer than the threshold;
the query text only ever goes to the log (truncated, and switchable off), never
to labels. The statement's first characters are read to classify it and dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import structlog

from exporter.probes.base import LaneName, Row, Session
from exporter.samples import Family, counter, gauge, keep_unchanged

log = structlog.get_logger("exporter.probes.slow_queries")

ACTIVE_STATES = frozenset({"active", "fastpath function call"})

MaintenanceKind = Literal[
    "index_build", "reindex", "vacuum", "analyze", "cluster", "backup", "other"
]
#: every ``kind`` label value of the maintenance gauges, in export order
MAINTENANCE_KINDS: tuple[MaintenanceKind, ...] = (
    "index_build", "reindex", "vacuum", "analyze", "cluster", "backup", "other",
)  # fmt: skip

#: application_name prefixes of backup and copy tools (matched case-insensitively, as the
#: whole name or followed by a non-alphanumeric character: ``pgBackRest [backup]``).
BACKUP_APPLICATIONS: tuple[str, ...] = (
    "pg_dump", "pg_dumpall", "pg_basebackup", "pgbackrest", "barman", "wal-g", "pg_probackup",
    "pgcopydb",
)  # fmt: skip

#: characters of the statement read to classify it (leading comments included)
QUERY_HEAD_LENGTH = 256

#: what may precede the statement's own keyword: whitespace, comments, parentheses, and
#: the ``BEGIN;`` / ``SET …;`` a migration script often starts with
_LEADING_NOISE = re.compile(
    r"(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/|\(|(?:BEGIN|START\s+TRANSACTION|SET)\b[^;]*;)*",
    re.DOTALL | re.IGNORECASE,
)
_STATEMENT_KINDS: tuple[tuple[re.Pattern[str], MaintenanceKind], ...] = (
    (re.compile(r"CREATE\s+(?:UNIQUE\s+)?INDEX\b", re.IGNORECASE), "index_build"),
    (re.compile(r"REINDEX\b", re.IGNORECASE), "reindex"),
    (re.compile(r"VACUUM\b", re.IGNORECASE), "vacuum"),
    (re.compile(r"ANALY[SZ]E\b", re.IGNORECASE), "analyze"),
    (re.compile(r"CLUSTER\b", re.IGNORECASE), "cluster"),
)


@cache  # one text per server version: the probe runs every second
def build_sql(server_version: int) -> str:
    """The activity query; ``query_id`` exists from PostgreSQL 14 on.

    Only sessions of the databases in scope; ``progress_command`` is the command a
    ``pg_stat_progress_*`` view reports for the backend (PostgreSQL 13+ has all four).
    """
    query_id = "query_id" if server_version >= 140000 else "NULL::bigint"
    return f"""
SELECT a.pid, a.usename::text AS usename, a.application_name, a.datname::text AS datname,
       a.state, a.query_start, a.xact_start,
       EXTRACT(EPOCH FROM clock_timestamp() - a.query_start)::float8 AS query_seconds,
       EXTRACT(EPOCH FROM clock_timestamp() - a.state_change)::float8 AS state_seconds,
       EXTRACT(EPOCH FROM clock_timestamp() - a.xact_start)::float8 AS xact_seconds,
       {query_id} AS query_id,
       CASE WHEN a.state IN ('active', 'fastpath function call')
            THEN left(a.query, {QUERY_HEAD_LENGTH}) END AS query_head,
       CASE WHEN a.state IN ('active', 'fastpath function call')
             AND clock_timestamp() - a.query_start > make_interval(secs => %(threshold)s)
            THEN left(a.query, %(text_length)s) END AS query,
       (SELECT p.command FROM (
            SELECT pid, command FROM pg_stat_progress_create_index
            UNION ALL SELECT pid, command FROM pg_stat_progress_cluster
            UNION ALL SELECT pid, 'VACUUM' FROM pg_stat_progress_vacuum
            UNION ALL SELECT pid, 'ANALYZE' FROM pg_stat_progress_analyze
        ) p WHERE p.pid = a.pid LIMIT 1) AS progress_command
FROM pg_stat_activity a
WHERE a.backend_type = 'client backend'
  AND a.state IS NOT NULL AND a.state <> 'idle'
  AND a.pid <> pg_backend_pid()
  AND a.application_name IS DISTINCT FROM %(own_application)s
  AND (a.datname = current_database() OR a.datname = ANY(%(databases)s::text[]))
"""


# -- classification (pure) --------------------------------------------------------------
def statement_kind(text: str | None) -> MaintenanceKind | None:
    """The maintenance kind of a statement from its leading keywords (comments skipped)."""
    if not text:
        return None
    noise = _LEADING_NOISE.match(text)
    rest = text[noise.end() :] if noise else text
    for pattern, kind in _STATEMENT_KINDS:
        if pattern.match(rest):
            return kind
    return None


def progress_kind(command: str | None) -> MaintenanceKind | None:
    """The kind of a ``pg_stat_progress_*`` command (``CREATE INDEX CONCURRENTLY``, …)."""
    if not command:
        return None
    command = command.upper()
    if command.startswith("REINDEX"):
        return "reindex"
    if command.startswith("CREATE INDEX"):
        return "index_build"
    if command.startswith("VACUUM"):  # VACUUM, and VACUUM FULL from the cluster view
        return "vacuum"
    if command.startswith("CLUSTER"):
        return "cluster"
    if command.startswith("ANALYZE"):
        return "analyze"
    return None


def is_backup_application(application_name: str) -> bool:
    name = application_name.lower()
    return any(
        name == tool or (name.startswith(tool) and not name[len(tool)].isalnum())
        for tool in BACKUP_APPLICATIONS
    )


@dataclass(frozen=True)
class MaintenanceMatcher:
    """Configured roles and application names whose sessions are maintenance (``other``)."""

    roles: frozenset[str] = frozenset()
    application_names: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls, roles: Sequence[str] = (), application_names: Sequence[str] = ()
    ) -> MaintenanceMatcher:
        return cls(frozenset(roles), frozenset(application_names))

    def session_kind(self, usename: str, application_name: str) -> MaintenanceKind | None:
        """Kind of a session recognised by who runs it, whatever its statement."""
        if is_backup_application(application_name):
            return "backup"
        if usename in self.roles or application_name in self.application_names:
            return "other"
        return None


def classify(row: Row, matcher: MaintenanceMatcher) -> MaintenanceKind | None:
    """The maintenance kind of an activity row, ``None`` for application work.

    A running statement's own kind (progress view first, then its text) wins over the
    session's (backup tool, configured role or application name).
    """
    if str(row.get("state") or "") in ACTIVE_STATES:
        kind = progress_kind(row.get("progress_command")) or statement_kind(row.get("query_head"))
        if kind is not None:
            return kind
    return matcher.session_kind(
        str(row.get("usename") or ""), str(row.get("application_name") or "")
    )


# -- tracking (pure) --------------------------------------------------------------------
@dataclass(frozen=True)
class SlowQuery:
    """A query seen running longer than the threshold."""

    pid: int
    query_start: Any
    usename: str
    application_name: str
    datname: str
    seconds: float
    query_id: int | None
    query: str | None

    @property
    def key(self) -> tuple[int, Any]:
        return (self.pid, self.query_start)


@dataclass(frozen=True)
class MaintenanceWork:
    """A maintenance session seen running longer than the slow-query threshold."""

    kind: MaintenanceKind
    pid: int
    start: Any
    usename: str
    application_name: str
    datname: str
    seconds: float

    @property
    def key(self) -> tuple[int, Any]:
        return (self.pid, self.start)


@dataclass(frozen=True)
class ActivitySummary:
    longest_active_seconds: float
    longest_idle_in_transaction_seconds: float
    slow_running: int
    new_slow: tuple[SlowQuery, ...]
    finished_slow: tuple[SlowQuery, ...]
    maintenance_running: dict[MaintenanceKind, int]
    maintenance_longest_seconds: dict[MaintenanceKind, float]
    new_maintenance: tuple[MaintenanceWork, ...] = ()


def _seconds(row: Row, column: str) -> float:
    return max(0.0, float(row.get(column) or 0.0))


class SlowQueryTracker:
    """Pure classification and de-duplication of slow queries across samples."""

    def __init__(
        self, threshold_seconds: float, maintenance: MaintenanceMatcher | None = None
    ) -> None:
        self.threshold = threshold_seconds
        self.maintenance = maintenance or MaintenanceMatcher()
        self.total = 0
        self._running: dict[tuple[int, Any], SlowQuery] = {}
        self._maintenance: set[tuple[int, Any]] = set()

    def update(self, rows: Iterable[Row]) -> ActivitySummary:
        longest_active = 0.0
        longest_idle_tx = 0.0
        current: dict[tuple[int, Any], SlowQuery] = {}
        new: list[SlowQuery] = []
        running = dict.fromkeys(MAINTENANCE_KINDS, 0)
        longest = dict.fromkeys(MAINTENANCE_KINDS, 0.0)
        seen_work: set[tuple[int, Any]] = set()
        new_work: list[MaintenanceWork] = []
        for row in rows:
            state = str(row.get("state") or "")
            active = state in ACTIVE_STATES
            kind = classify(row, self.maintenance)
            if kind is not None:
                work = self._work(row, kind)
                if work is None:
                    continue
                running[kind] += 1
                longest[kind] = max(longest[kind], work.seconds)
                if work.seconds > self.threshold:
                    seen_work.add(work.key)
                    if work.key not in self._maintenance:
                        new_work.append(work)
            elif active:
                seconds = _seconds(row, "query_seconds")
                longest_active = max(longest_active, seconds)
                if seconds > self.threshold and row.get("query_start") is not None:
                    sq = SlowQuery(
                        pid=int(row["pid"]),
                        query_start=row["query_start"],
                        usename=str(row.get("usename") or ""),
                        application_name=str(row.get("application_name") or ""),
                        datname=str(row.get("datname") or ""),
                        seconds=seconds,
                        query_id=int(row["query_id"]) if row.get("query_id") is not None else None,
                        query=row.get("query"),
                    )
                    current[sq.key] = sq
                    if sq.key not in self._running:
                        new.append(sq)
            elif state.startswith("idle in transaction"):
                longest_idle_tx = max(longest_idle_tx, _seconds(row, "state_seconds"))
        finished = tuple(sq for key, sq in self._running.items() if key not in current)
        self._running = current
        self._maintenance = seen_work
        self.total += len(new)
        return ActivitySummary(
            longest_active_seconds=longest_active,
            longest_idle_in_transaction_seconds=longest_idle_tx,
            slow_running=len(current),
            new_slow=tuple(new),
            finished_slow=finished,
            maintenance_running=running,
            maintenance_longest_seconds=longest,
            new_maintenance=tuple(new_work),
        )

    @staticmethod
    def _work(row: Row, kind: MaintenanceKind) -> MaintenanceWork | None:
        """How long the work has run.

        A statement kind (always a running statement) by its statement; a session kind
        (backup, other) by its transaction: a ``pg_dump`` runs one transaction of many
        statements, and a parallel dump's leader waits idle in it.
        """
        if kind in ("backup", "other") and row.get("xact_start") is not None:
            column, start = "xact_seconds", row.get("xact_start")
        elif str(row.get("state") or "") in ACTIVE_STATES:
            column, start = "query_seconds", row.get("query_start")
        else:
            return None
        return MaintenanceWork(
            kind=kind,
            pid=int(row["pid"]),
            start=start,
            usename=str(row.get("usename") or ""),
            application_name=str(row.get("application_name") or ""),
            datname=str(row.get("datname") or ""),
            seconds=_seconds(row, column),
        )


class SlowQueriesProbe:
    name = "slow_queries"
    lane: LaneName = "activity"

    def __init__(
        self,
        threshold_seconds: float,
        *,
        own_application_name: str,
        log_text: bool = True,
        text_max_length: int = 300,
        databases: Sequence[str] = (),
        maintenance: MaintenanceMatcher | None = None,
    ) -> None:
        self.tracker = SlowQueryTracker(threshold_seconds, maintenance)
        self.own_application_name = own_application_name
        self.log_text = log_text
        self.text_max_length = text_max_length if log_text else 0
        #: databases watched besides the one the exporter is connected to
        self.databases = list(databases)
        #: the last answers: families equal to them are returned as the same objects (the
        #: store and the renderers then skip them; most are equal from second to second)
        self._answer: tuple[Family, ...] = ()
        self._kept: tuple[Family, ...] = ()

    async def collect(self, session: Session, now: float) -> list[Family]:
        del now
        rows = await session.fetch(
            build_sql(session.server_version),
            {
                "threshold": self.tracker.threshold,
                "text_length": self.text_max_length,
                "own_application": self.own_application_name,
                "databases": self.databases,
            },
        )
        summary = self.tracker.update(rows)
        self._log(summary)
        families = [
            gauge(
                "gecko_longest_active_query_seconds",
                "Age of the longest-running application query in the monitored database "
                "(maintenance, backups and exporter sessions excluded); 0 when none "
                "(from pg_stat_activity).",
                summary.longest_active_seconds,
            ),
            gauge(
                "gecko_longest_idle_in_transaction_seconds",
                "Time the oldest idle-in-transaction application session has been idle; "
                "0 when none.",
                summary.longest_idle_in_transaction_seconds,
            ),
            gauge(
                "gecko_slow_queries_running",
                "Application queries running now for longer than the slow-query threshold.",
                float(summary.slow_running),
            ),
            gauge(
                "gecko_maintenance_running",
                "Maintenance and backup sessions running in the monitored database, by kind "
                "(from pg_stat_activity and pg_stat_progress_*).",
                labelnames=("kind",),
                values={(k,): float(v) for k, v in summary.maintenance_running.items()},
            ),
            gauge(
                "gecko_maintenance_longest_seconds",
                "Age of the longest maintenance work by kind: the statement, or a backup's "
                "transaction; 0 when none.",
                labelnames=("kind",),
                values={(k,): v for k, v in summary.maintenance_longest_seconds.items()},
            ),
        ]
        self._answer = keep_unchanged(families, self._answer)
        return list(self._answer)

    def _log(self, summary: ActivitySummary) -> None:
        for sq in summary.new_slow:
            fields: dict[str, Any] = {
                "pid": sq.pid,
                "user": sq.usename,
                "application": sq.application_name,
                "database": sq.datname,
                "duration_seconds": round(sq.seconds, 3),
                "query_id": sq.query_id,
                "threshold_seconds": self.tracker.threshold,
            }
            if self.log_text:
                fields["query"] = sq.query
            log.warning("slow_query_detected", **fields)
        for sq in summary.finished_slow:
            log.info(
                "slow_query_finished",
                pid=sq.pid,
                user=sq.usename,
                application=sq.application_name,
                database=sq.datname,
                last_seen_duration_seconds=round(sq.seconds, 3),
                query_id=sq.query_id,
            )
        for work in summary.new_maintenance:
            log.info(
                "maintenance_running",
                kind=work.kind,
                pid=work.pid,
                user=work.usename,
                application=work.application_name,
                database=work.datname,
                duration_seconds=round(work.seconds, 3),
            )

    def persistent(self) -> list[Family]:
        families = [
            counter(
                "gecko_slow_queries_total",
                "Distinct application queries (pid + query_start) seen running longer than the "
                "slow-query threshold.",
                float(self.tracker.total),
            ),
            gauge(
                "gecko_slow_query_threshold_seconds",
                "The configured slow-query threshold.",
                self.tracker.threshold,
            ),
        ]
        self._kept = keep_unchanged(families, self._kept)
        return list(self._kept)
