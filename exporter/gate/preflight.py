"""``gecko-exporter preflight``: is it safe to run this migration **now**?

Input: the parsed migrations (:mod:`exporter.gate.sql`): per statement the
relations it touches, the lock it takes and whether it scans or rewrites the
table. Against the live database, on one read-only session that never opens
an application table (so it never queues behind a migration's lock):

``tables``
    size (``pg_class.relpages x block_size`` of heap, TOAST and indexes;
    never ``pg_relation_size()``, which takes a lock) and row estimate
    (``reltuples``, else ``n_live_tup``). An **estimated** lock duration:
    scanned bytes / ``gate.scan_bytes_per_second`` (default 200 MiB/s) for a
    statement that scans under its lock, heap+TOAST+index bytes /
    ``gate.rewrite_bytes_per_second`` (default 50 MiB/s) for a rewrite, 0 for
    catalog-only changes. Disk, CPU, WAL and concurrent load change the real
    figure: it is an order of magnitude, not a promise.
``blockers``
    sessions holding a conflicting lock on a target table (``pg_locks`` joined
    to ``pg_stat_activity``) or waiting for any lock on it (a queue already
    exists). A conflicting holder is a blocker when it is idle in a transaction
    or its transaction is at least ``TRANSIENT_SECONDS`` old; younger active
    holders are listed as transient (warning). Autovacuum holders are a
    warning: the DDL's lock request cancels them (unless they prevent
    wraparound).
``old_transactions``
    client transactions (and prepared transactions) of this database older
    than the migration's ``lock_timeout`` (its ``SET lock_timeout``, else
    ``gate.default_lock_timeout_seconds``).
``traffic`` / ``pools``
    statements per second on each table: ``pg_stat_statements`` calls (statements
    whose text names the table; reads vs writes by the first keyword) over a
    ``gate.traffic_sample_seconds`` window, else the table's scan and tuple
    counters over the same window. The statements the migration's lock would
    block (reads behind ACCESS EXCLUSIVE, writes behind SHARE and stronger),
    times (lock_timeout + estimated lock duration), is the number of queries
    that would queue; each configured pool (``settings.pools``) is assumed to
    receive all of them in its busiest instance (worst case) and must stay below
    ``gate.pool_max_ratio``.
``connections``
    client backends vs usable ``max_connections`` (the ``connections`` probe).
``prisma``, ``index_builds``, ``invalid_indexes``
    the ``migrations`` probe's catalog: Prisma's advisory lock held, failed or
    unfinished ``_prisma_migrations`` rows, builds running and invalid indexes
    (on a target table: no-go; elsewhere in the app schemas: warning).
``backup``
    ``pg_stat_archiver``: last archived WAL age (``gate.archive_max_age_seconds``)
    and failures. With ``archive_mode=off`` or without privilege the status is
    ``not_visible`` (a no-go only with ``gate.require_backup_visibility``).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.config import Config
from exporter.errors import DatabaseError, DatabaseUnavailable
from exporter.gate import live_locks
from exporter.gate.live_report import (
    SCHEMA_VERSION,
    Check,
    Status,
    failures,
    fmt_bytes,
    fmt_seconds,
    render_checks,
)
from exporter.gate.sql import Migration, Statement
from exporter.probes import connections as connections_probe
from exporter.probes import migrations as migrations_probe
from exporter.probes import statements as statements_probe
from exporter.probes.base import Row, Session
from exporter.probes.sql import qualified, quote_ident

#: A conflicting lock held by an active transaction younger than this is "transient".
TRANSIENT_SECONDS = 1.0

# -- lock_timeout of a migration (pure) ------------------------------------------------
_SET_LOCK_TIMEOUT = re.compile(
    r"^\s*SET\s+(?:SESSION\s+|LOCAL\s+)?lock_timeout\s*(?:=|\bTO\b)\s*(.+?)\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
_UNITS = {"": 0.001, "us": 1e-6, "ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: str) -> float | None:
    """A PostgreSQL time setting (``'5s'``, ``5000``, ``'1min'``) in seconds; None if unknown."""
    text = value.strip().strip("'\"")
    match = _DURATION.match(text)
    if not match:
        return None
    unit = match.group(2).lower()
    if unit not in _UNITS:
        return None
    return float(match.group(1)) * _UNITS[unit]


def statement_lock_timeout(statement: Statement) -> str | None:
    """The value of a ``SET lock_timeout`` statement, as written; None otherwise."""
    if statement.kind != "set":
        return None
    match = _SET_LOCK_TIMEOUT.match(statement.text)
    return match.group(1) if match else None


@dataclass(frozen=True)
class LockTimeout:
    seconds: float  # effective value used for the checks
    source: str  # "migration" | "default"
    unlimited: bool = False  # the file sets lock_timeout = 0 (wait forever)
    written: str | None = None


def migration_lock_timeout(migration: Migration, default_seconds: float) -> LockTimeout:
    """The first ``SET lock_timeout`` of the file (what its locking statements run under)."""
    for st in migration.statements:
        written = statement_lock_timeout(st)
        if written is None:
            continue
        if written.strip().strip("'\"").upper() == "DEFAULT":
            break
        seconds = parse_duration(written)
        if seconds is None:
            break
        if seconds == 0:
            return LockTimeout(default_seconds, "migration", unlimited=True, written=written)
        return LockTimeout(seconds, "migration", written=written)
    return LockTimeout(default_seconds, "default")


# -- targets (pure) ------------------------------------------------------------------
@dataclass(frozen=True)
class StatementRef:
    migration: str
    file: str
    line: int
    kind: str
    lock: str
    rewrites: bool
    scans: bool
    concurrent: bool
    tables: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "migration": self.migration,
            "file": self.file,
            "line": self.line,
            "kind": self.kind,
            "lock": self.lock,
            "rewrites": self.rewrites,
            "scans": self.scans,
            "concurrent": self.concurrent,
            "tables": list(self.tables),
        }


def regclass_name(name: str, default_schema: str) -> str:
    """A relation name as the parse gives it (``Scan``, ``app.Scan``) -> quoted for to_regclass."""
    schema, sep, rel = name.partition(".")
    if sep and rel:
        return qualified(schema, rel)
    return qualified(default_schema, name)


def statement_refs(migrations: Sequence[Migration]) -> list[StatementRef]:
    return [
        StatementRef(
            m.name,
            str(st.file),
            st.line,
            st.kind,
            st.lock,
            st.rewrites,
            st.scans,
            st.concurrent,
            tuple(st.tables),
        )
        for m in migrations
        for st in m.statements
    ]


def written_names(refs: Sequence[StatementRef]) -> list[str]:
    """Every relation name a locking statement touches, in first-seen order."""
    return list(dict.fromkeys(t for r in refs if r.lock for t in r.tables))


# -- SQL ----------------------------------------------------------------------------
RELATIONS_SQL = """
WITH w AS (
    SELECT w.ord, w.name, to_regclass(w.regname) AS roid
    FROM unnest(%(names)s::text[], %(regnames)s::text[]) WITH ORDINALITY AS w(name, regname, ord)
),
r AS (
    SELECT w.ord, w.name, (i.indexrelid IS NOT NULL) AS via_index,
           COALESCE(i.indrelid, w.roid) AS oid
    FROM w LEFT JOIN pg_index i ON i.indexrelid = w.roid
)
SELECT r.ord, r.name, r.via_index, c.oid::bigint AS oid,
       n.nspname::text AS schema_name, c.relname::text AS table_name,
       c.relpages::float8 * current_setting('block_size')::float8 AS heap_bytes,
       COALESCE(t.relpages, 0)::float8 * current_setting('block_size')::float8 AS toast_bytes,
       COALESCE((SELECT sum(ic.relpages) FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid
                 WHERE x.indrelid = c.oid), 0)::float8
           * current_setting('block_size')::float8 AS index_bytes,
       c.reltuples::float8 AS reltuples,
       pg_stat_get_live_tuples(c.oid)::float8 AS live_tuples
FROM r
LEFT JOIN pg_class c ON c.oid = r.oid
LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class t ON t.oid = c.reltoastrelid
ORDER BY r.ord
"""

LOCKS_SQL = """
SELECT l.pid, l.relation::bigint AS relation, l.mode, l.granted,
       COALESCE(a.application_name, '') AS application_name,
       COALESCE(a.usename::text, '') AS usename,
       COALESCE(a.state, '') AS state,
       COALESCE(a.backend_type, '') AS backend_type,
       EXTRACT(EPOCH FROM clock_timestamp() - a.xact_start)::float8 AS xact_seconds,
       EXTRACT(EPOCH FROM clock_timestamp() - a.state_change)::float8 AS state_seconds,
       CASE WHEN %(show)s THEN left(a.query, 1000) END AS query
FROM pg_locks l
LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'relation'
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.relation = ANY(%(oids)s::oid[])
  AND l.pid IS DISTINCT FROM pg_backend_pid()
ORDER BY l.pid
"""

OLD_TRANSACTIONS_SQL = """
SELECT a.pid, COALESCE(a.application_name, '') AS application_name,
       COALESCE(a.usename::text, '') AS usename, COALESCE(a.state, '') AS state,
       EXTRACT(EPOCH FROM clock_timestamp() - a.xact_start)::float8 AS xact_seconds,
       EXTRACT(EPOCH FROM clock_timestamp() - a.state_change)::float8 AS state_seconds,
       CASE WHEN %(show)s THEN left(a.query, 1000) END AS query
FROM pg_stat_activity a
WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
  AND a.backend_type = 'client backend' AND a.xact_start IS NOT NULL
  AND clock_timestamp() - a.xact_start > make_interval(secs => %(seconds)s)
ORDER BY a.xact_start
LIMIT 50
"""

#: sessions of other roles this role may not see (all their columns are NULL, any database)
HIDDEN_SQL = """
SELECT count(*)::int AS n FROM pg_stat_activity
WHERE query = '<insufficient privilege>' AND pid <> pg_backend_pid()
"""

PREPARED_SQL = """
SELECT gid, owner::text AS owner,
       EXTRACT(EPOCH FROM clock_timestamp() - prepared)::float8 AS xact_seconds
FROM pg_prepared_xacts
WHERE database = current_database()
  AND clock_timestamp() - prepared > make_interval(secs => %(seconds)s)
ORDER BY prepared
LIMIT 50
"""

COUNTERS_SQL = """
SELECT c.oid::bigint AS oid,
       (pg_stat_get_numscans(c.oid)
        + COALESCE((SELECT sum(pg_stat_get_numscans(i.indexrelid)) FROM pg_index i
                    WHERE i.indrelid = c.oid), 0))::float8 AS reads,
       (pg_stat_get_tuples_inserted(c.oid) + pg_stat_get_tuples_updated(c.oid)
        + pg_stat_get_tuples_deleted(c.oid))::float8 AS writes
FROM pg_class c
WHERE c.oid = ANY(%(oids)s::oid[])
"""

ARCHIVER_SQL = """
SELECT current_setting('archive_mode') AS archive_mode,
       pg_is_in_recovery() AS in_recovery,
       archived_count::bigint AS archived_count, failed_count::bigint AS failed_count,
       EXTRACT(EPOCH FROM clock_timestamp() - last_archived_time)::float8 AS last_archived_age,
       EXTRACT(EPOCH FROM clock_timestamp() - last_failed_time)::float8 AS last_failed_age,
       (last_failed_time IS NOT NULL
        AND (last_archived_time IS NULL OR last_failed_time > last_archived_time)) AS failing
FROM pg_stat_archiver
"""

READS = frozenset({"select", "with", "values", "table"})
WRITES = frozenset({"insert", "update", "delete", "merge", "copy"})


def table_pattern(schema: str, table: str) -> str:
    """A POSIX regex finding the table in statement text (pure).

    Quoted mixed-case names (Prisma writes ``"public"."Scan"``) match as quoted;
    a lower-case name matches quoted or not, any case, as a whole word.
    """
    del schema
    escaped = "".join(ch if ch.isalnum() else "\\" + ch for ch in table)
    if table == table.lower():
        return f'(?i)(^|[^a-z0-9_$])"?{escaped}"?($|[^a-z0-9_$])'
    return f'"{escaped}"'


def pgss_sql(extension_schema: str) -> str:
    """Calls per statement naming one of ``%(patterns)s`` (pg_stat_statements texts)."""
    return f"""
SELECT s.queryid::text AS queryid, sum(s.calls)::float8 AS calls,
       lower(substring(s.query from '^\\s*([A-Za-z]+)')) AS verb,
       array(SELECT p.ord::int
             FROM unnest(%(patterns)s::text[]) WITH ORDINALITY AS p(re, ord)
             WHERE s.query ~ p.re) AS tables,
       s.query = '<insufficient privilege>' AS hidden
FROM {quote_ident(extension_schema)}.pg_stat_statements(showtext := true) s
WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND s.userid <> (SELECT oid FROM pg_roles WHERE rolname = current_user)
  AND s.queryid IS NOT NULL
GROUP BY s.queryid, s.query
"""


# -- pure evaluation -----------------------------------------------------------------
@dataclass
class Table:
    """A live relation touched by the migrations, with the strongest lock each takes."""

    name: str  # as written in the migration
    schema: str | None = None
    table: str | None = None
    oid: int | None = None
    heap_bytes: float = 0.0
    toast_bytes: float = 0.0
    index_bytes: float = 0.0
    rows: float = 0.0
    lock: str = ""
    rewrites: bool = False
    scans: bool = False
    concurrent_only: bool = True
    estimated_lock_seconds: float = 0.0
    reads_per_second: float | None = None
    writes_per_second: float | None = None

    @property
    def exists(self) -> bool:
        return self.oid is not None

    @property
    def label(self) -> str:
        return self.table if self.table else self.name

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "schema": self.schema,
            "table": self.table,
            "exists": self.exists,
            "size_bytes": self.heap_bytes + self.toast_bytes + self.index_bytes,
            "heap_bytes": self.heap_bytes + self.toast_bytes,
            "index_bytes": self.index_bytes,
            "rows_estimate": self.rows,
            "lock": self.lock,
            "rewrites": self.rewrites,
            "scans": self.scans,
            "estimated_lock_seconds": round(self.estimated_lock_seconds, 3),
            "reads_per_second": self.reads_per_second,
            "writes_per_second": self.writes_per_second,
        }


def estimate_seconds(ref: StatementRef, table: Table, scan_bps: float, rewrite_bps: float) -> float:
    """Estimated time ``ref`` holds its lock on ``table`` (an order of magnitude)."""
    if ref.concurrent:
        return 0.0  # SHARE UPDATE EXCLUSIVE: blocks neither reads nor writes
    heap = table.heap_bytes + table.toast_bytes
    if ref.rewrites:
        return (heap + table.index_bytes) / rewrite_bps
    if ref.scans:
        return heap / scan_bps
    return 0.0


def build_tables(
    rows: Sequence[Row], refs: Sequence[StatementRef], scan_bps: float, rewrite_bps: float
) -> dict[str, Table]:
    """Catalog rows of :data:`RELATIONS_SQL` + statements -> tables keyed by written name."""
    tables: dict[str, Table] = {}
    by_oid: dict[int, Table] = {}
    for row in rows:
        name = str(row["name"])
        if row["oid"] is None:
            tables[name] = Table(name=name)
            continue
        oid = int(row["oid"])
        existing = by_oid.get(oid)
        if existing is not None:  # an index name and its table: one entry
            tables[name] = existing
            continue
        reltuples = float(row["reltuples"] or 0)
        table = Table(
            name=name,
            schema=str(row["schema_name"]),
            table=str(row["table_name"]),
            oid=oid,
            heap_bytes=float(row["heap_bytes"] or 0),
            toast_bytes=float(row["toast_bytes"] or 0),
            index_bytes=float(row["index_bytes"] or 0),
            rows=reltuples if reltuples >= 0 else float(row["live_tuples"] or 0),
        )
        tables[name] = by_oid[oid] = table
    for ref in refs:
        if not ref.lock:
            continue
        for name in ref.tables:
            target = tables.get(name)
            if target is None:
                continue
            target.lock = live_locks.strongest([target.lock, ref.lock])
            target.rewrites |= ref.rewrites
            target.scans |= ref.scans
            target.concurrent_only &= ref.concurrent
            target.estimated_lock_seconds += estimate_seconds(ref, target, scan_bps, rewrite_bps)
    return tables


def unique_tables(tables: dict[str, Table]) -> list[Table]:
    seen: dict[int, Table] = {}
    for t in tables.values():
        seen.setdefault(id(t), t)
    return list(seen.values())


def session_dict(row: Row) -> dict[str, Any]:
    out = {
        "pid": row.get("pid"),
        "application_name": row.get("application_name", ""),
        "usename": row.get("usename", ""),
        "state": row.get("state", ""),
        "transaction_age_seconds": _round(row.get("xact_seconds")),
        "state_age_seconds": _round(row.get("state_seconds")),
    }
    if row.get("query") is not None:
        out["query"] = row["query"]
    return out


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def _who(row: Row) -> str:
    app = row.get("application_name") or "-"
    age = row.get("xact_seconds")
    state = row.get("state") or "?"
    return f"pid {row['pid']} ({app}, {state}, transaction {fmt_seconds(_round(age))})"


def blocker_checks(tables: Sequence[Table], lock_rows: Sequence[Row]) -> tuple[Check, list[Row]]:
    """Sessions holding conflicting locks on, or waiting for, the target tables."""
    by_oid = {t.oid: t for t in tables if t.oid is not None}
    blockers: list[dict[str, Any]] = []
    transient: list[dict[str, Any]] = []
    reasons: list[str] = []
    notes: list[str] = []
    blocking_rows: list[Row] = []
    for row in lock_rows:
        table = by_oid.get(int(row["relation"]))
        if table is None:
            continue
        mode = live_locks.normalize(str(row["mode"])) or str(row["mode"])
        entry = {**session_dict(row), "table": table.label, "mode": mode, "granted": row["granted"]}
        entry["backend_type"] = row.get("backend_type", "")
        if not row["granted"]:
            blockers.append(entry)
            blocking_rows.append(row)
            reasons.append(f"{_who(row)} waits for {mode} on {table.label} (a lock queue exists)")
            continue
        if not table.lock or not live_locks.conflicts(mode, table.lock):
            continue
        state = str(row.get("state") or "")
        age = float(row.get("xact_seconds") or 0)
        if row.get("backend_type") == "autovacuum worker":
            transient.append(entry)
            notes.append(f"autovacuum pid {row['pid']} holds {mode} on {table.label}")
        elif not state and row.get("xact_seconds") is None:
            # another role's session without pg_read_all_stats: its age is hidden
            blockers.append(entry)
            blocking_rows.append(row)
            reasons.append(
                f"pid {row['pid']} holds {mode} on {table.label}, conflicting with {table.lock} "
                "(its activity is not visible to this role: grant pg_monitor)"
            )
        elif state.startswith("idle in transaction") or age >= TRANSIENT_SECONDS:
            blockers.append(entry)
            blocking_rows.append(row)
            reasons.append(
                f"{_who(row)} holds {mode} on {table.label}, conflicting with {table.lock}"
            )
        else:
            transient.append(entry)
            notes.append(f"pid {row['pid']} holds {mode} on {table.label} (active, brief)")
    details = {"blockers": blockers, "transient": transient}
    if reasons:
        return Check("blockers", "fail", "; ".join(reasons), details), blocking_rows
    if notes:
        return Check("blockers", "warn", "; ".join(notes), details), blocking_rows
    return Check(
        "blockers", "pass", "no session holds or waits for a conflicting lock", details
    ), []


def old_transaction_check(
    rows: Sequence[Row], prepared: Sequence[Row], lock_timeout: LockTimeout, hidden: int = 0
) -> Check:
    """Old transactions; ``hidden``: client sessions whose activity this role cannot see."""
    limit = fmt_seconds(lock_timeout.seconds)
    reasons = [f"{_who(r)} older than lock_timeout {limit}" for r in rows]
    reasons += [
        f"prepared transaction {p['gid']!r} ({fmt_seconds(_round(p['xact_seconds']))} old)"
        for p in prepared
    ]
    details = {
        "lock_timeout_seconds": lock_timeout.seconds,
        "transactions": [session_dict(r) for r in rows],
        "prepared": [
            {"gid": p["gid"], "owner": p["owner"], "age_seconds": _round(p["xact_seconds"])}
            for p in prepared
        ],
    }
    details["hidden_sessions"] = hidden
    if reasons:
        return Check("old_transactions", "fail", "; ".join(reasons), details)
    if hidden:
        return Check(
            "old_transactions",
            "not_visible",
            f"{hidden} session(s) of other roles are not visible to this role (grant pg_monitor): "
            "their transaction ages are unknown",
            details,
        )
    return Check("old_transactions", "pass", f"none older than {limit}", details)


def traffic_rates(
    tables: Sequence[Table],
    first: Sequence[Row],
    second: Sequence[Row],
    window: float,
    source: str,
) -> None:
    """Fill each table's reads/writes per second from two samples (mutates ``tables``)."""
    window = max(window, 1e-3)
    if source == "pg_stat_statements":
        before = {str(r["queryid"]): float(r["calls"] or 0) for r in first}
        reads = [0.0] * len(tables)
        writes = [0.0] * len(tables)
        for row in second:
            calls = float(row["calls"] or 0)
            prev = before.get(str(row["queryid"]), 0.0)
            delta = calls - prev if calls >= prev else calls
            verb = str(row.get("verb") or "")
            for ordinal in row.get("tables") or []:
                idx = int(ordinal) - 1
                if verb in READS:
                    reads[idx] += delta
                elif verb in WRITES:
                    writes[idx] += delta
        for i, t in enumerate(tables):
            t.reads_per_second = round(reads[i] / window, 3)
            t.writes_per_second = round(writes[i] / window, 3)
        return
    prev_rows = {int(r["oid"]): r for r in first}
    for row in second:
        old = prev_rows.get(int(row["oid"]))
        table = next((t for t in tables if t.oid == int(row["oid"])), None)
        if old is None or table is None:
            continue
        table.reads_per_second = round(
            max(0.0, float(row["reads"]) - float(old["reads"])) / window, 3
        )
        table.writes_per_second = round(
            max(0.0, float(row["writes"]) - float(old["writes"])) / window, 3
        )


def blocked_rate(table: Table) -> float:
    """Statements per second that would wait behind the table's lock."""
    rate = 0.0
    if table.lock and live_locks.blocks_reads(table.lock):
        rate += table.reads_per_second or 0.0
    if table.lock and live_locks.blocks_writes(table.lock):
        rate += table.writes_per_second or 0.0
    return rate


@dataclass(frozen=True)
class QueueEstimate:
    migration: str
    lock_timeout_seconds: float
    hold_seconds: float
    blocked_per_second: float

    @property
    def during_lock_timeout(self) -> float:
        return self.blocked_per_second * self.lock_timeout_seconds

    @property
    def during_hold(self) -> float:
        return self.blocked_per_second * self.hold_seconds

    @property
    def peak(self) -> float:
        return self.during_lock_timeout + self.during_hold

    def as_dict(self) -> dict[str, Any]:
        return {
            "migration": self.migration,
            "lock_timeout_seconds": self.lock_timeout_seconds,
            "estimated_lock_seconds": round(self.hold_seconds, 3),
            "blocked_statements_per_second": round(self.blocked_per_second, 3),
            "queued_during_lock_timeout": round(self.during_lock_timeout, 1),
            "queued_during_lock": round(self.during_hold, 1),
            "queued_peak": round(self.peak, 1),
        }


def queue_estimates(
    migrations: Sequence[Migration],
    refs: Sequence[StatementRef],
    tables: dict[str, Table],
    timeouts: dict[str, LockTimeout],
    scan_bps: float,
    rewrite_bps: float,
) -> list[QueueEstimate]:
    """Per migration (one transaction in Prisma): what would queue while it waits and holds."""
    out = []
    for m in migrations:
        mine = [r for r in refs if r.migration == m.name and r.lock]
        touched: dict[int, tuple[Table, str]] = {}
        hold = 0.0
        for ref in mine:
            for name in ref.tables:
                table = tables.get(name)
                if table is None or not table.exists:
                    continue
                prev = touched.get(id(table))
                lock = live_locks.strongest([prev[1] if prev else "", ref.lock])
                touched[id(table)] = (table, lock)
                hold += estimate_seconds(ref, table, scan_bps, rewrite_bps)
        rate = 0.0
        for table, lock in touched.values():
            view = Table(
                name=table.name,
                lock=lock,
                reads_per_second=table.reads_per_second,
                writes_per_second=table.writes_per_second,
            )
            rate += blocked_rate(view)
        out.append(QueueEstimate(m.name, timeouts[m.name].seconds, hold, rate))
    return out


def pool_checks(
    connections_row: Row,
    pools: Sequence[connections_probe.PoolMatcher],
    queued: float,
    max_ratio: float,
) -> list[Check]:
    """Server headroom now, and every pool with the queued statements added (worst case)."""
    fams = {f.name: f for f in connections_probe.parse(connections_row, pools)}
    in_use = {
        s.labels[0]: s.value for s in fams["gecko_connection_pool_connections_in_use"].samples
    }
    size = {s.labels[0]: s.value for s in fams["gecko_connection_pool_size"].samples}
    #: a pool is per process: its busiest instance's ratio (the connections probe's definition)
    busiest = {
        s.labels[0]: s.value for s in fams["gecko_connection_pool_utilization_ratio"].samples
    }
    checks = []
    used, usable = in_use["server"], size["server"]
    ratio = used / usable
    projected = (used + queued) / usable
    details = {
        "max_connections": int(connections_row["max_connections"]),
        "usable": int(usable),
        "in_use": int(used),
        "ratio": round(ratio, 3),
        "projected_ratio": round(projected, 3),
        "max_ratio": max_ratio,
    }
    summary = (
        f"{int(used)} of {int(usable)} usable connections in use ({ratio:.0%}); "
        f"with {queued:.0f} queued: {projected:.0%}"
    )
    status: Status = "fail" if projected >= max_ratio else "pass"
    checks.append(Check("connections", status, summary, details))
    if not pools:
        checks.append(
            Check(
                "pools",
                "not_visible",
                "no application pools configured (settings.pools): only the server-wide "
                "headroom is checked",
            )
        )
        return checks
    entries = []
    bad = []
    for pool in pools:
        now = busiest[pool.name] * pool.size  # in use in the busiest instance
        peak = now + queued  # worst case: every queued query waits in that instance
        r_now, r_peak = now / pool.size, peak / pool.size
        entries.append(
            {
                "pool": pool.name,
                "size": pool.size,
                "in_use": round(now, 1),
                "ratio": round(r_now, 3),
                "projected_in_use": round(peak, 1),
                "projected_ratio": round(r_peak, 3),
            }
        )
        if r_peak >= max_ratio:
            bad.append(
                f"pool {pool.name} would reach {r_peak:.0%} ({now:.0f} in use + {queued:.0f} "
                f"queued of {pool.size})"
            )
    details_p = {"pools": entries, "queued": round(queued, 1), "max_ratio": max_ratio}
    if bad:
        return [*checks, Check("pools", "fail", "; ".join(bad), details_p)]
    summary = ", ".join(f"{e['pool']} {e['projected_ratio']:.0%}" for e in entries)
    return [*checks, Check("pools", "pass", f"projected: {summary}", details_p)]


def traffic_check(
    estimates: Sequence[QueueEstimate], source: str, window: float, tables: Sequence[Table]
) -> Check:
    details = {
        "source": source,
        "sample_seconds": window,
        "migrations": [e.as_dict() for e in estimates],
        "tables": {
            t.label: {
                "reads_per_second": t.reads_per_second,
                "writes_per_second": t.writes_per_second,
            }
            for t in tables
            if t.exists
        },
    }
    if source == "none":
        return Check("traffic", "not_visible", "no statistics to sample", details)
    worst = max(estimates, key=lambda e: e.peak, default=None)
    if worst is None or worst.peak == 0:
        return Check("traffic", "pass", f"no blocked traffic expected (source {source})", details)
    summary = (
        f"{worst.blocked_per_second:.1f} blocked statements/s on the tables of {worst.migration}: "
        f"~{worst.during_lock_timeout:.0f} would queue during lock_timeout "
        f"{fmt_seconds(worst.lock_timeout_seconds)}, ~{worst.during_hold:.0f} during the "
        f"estimated lock of {fmt_seconds(worst.hold_seconds)} (source {source})"
    )
    return Check("traffic", "warn" if worst.peak >= 1 else "pass", summary, details)


def prisma_check(catalog: Row, state: migrations_probe.MigrationState) -> Check:
    holders = int(catalog.get("lock_holders") or 0)
    details: dict[str, Any] = {
        "table_present": state.table_present,
        "advisory_lock_held": holders > 0,
        "failed": state.failed,
        "unfinished": state.unfinished,
        "failed_migrations": [
            {
                "migration_name": r.get("migration_name"),
                "started_at": r.get("started_at"),
                "logs": r.get("logs"),
            }
            for r in state.failed_rows
        ],
    }
    problems = []
    if holders:
        problems.append("a Prisma migration is running (advisory lock 72707369 held)")
    if state.failed:
        names = ", ".join(str(r.get("migration_name")) for r in state.failed_rows)
        problems.append(f"{state.failed} failed migration(s): {names} (deploy would stop: P3009)")
    if state.unfinished:
        problems.append(f"{state.unfinished} unfinished migration(s) (running or crashed)")
    if problems:
        return Check("prisma", "fail", "; ".join(problems), details)
    if not state.table_present:
        return Check("prisma", "warn", "no _prisma_migrations table (first deploy?)", details)
    return Check("prisma", "pass", f"{state.applied} applied, none failed or running", details)


def index_checks(catalog: Row, tables: Sequence[Table]) -> list[Check]:
    names = {(t.schema, t.table) for t in tables if t.exists}
    checks = []
    builds = list(catalog.get("builds") or [])
    checks.append(_index_check(
        "index_builds", "builds", builds,
        on_target=any((b["table_schema"], b["table_name"]) in names for b in builds),
        text=", ".join(f"{b['index_name']} on {b['table_name']} ({b['phase']}, pid {b['pid']})"
                       for b in builds),
        fail="build running on a target table", warn="build running elsewhere",
        passed="none running",
    ))  # fmt: skip
    invalid = list(catalog.get("invalid") or [])
    checks.append(_index_check(
        "invalid_indexes", "indexes", invalid,
        on_target=any((v["schema_name"], v["table_name"]) in names for v in invalid),
        text=", ".join(f"{v['index_name']} on {v['table_name']}" for v in invalid),
        fail="invalid index on a target table", warn="invalid elsewhere", passed="none",
    ))  # fmt: skip
    return checks


def _index_check(
    name: str, key: str, items: list[Any], *, on_target: bool, text: str,
    fail: str, warn: str, passed: str,
) -> Check:  # fmt: skip
    """Fail when an item concerns a target table, warn when one exists elsewhere, else pass."""
    if on_target:
        return Check(name, "fail", f"{fail}: {text}", {key: items})
    if items:
        return Check(name, "warn", f"{warn}: {text}", {key: items})
    return Check(name, "pass", passed, {key: []})


def backup_check(row: Row | None, max_age: float, required: bool, error: str | None) -> Check:
    absent: Any = "fail" if required else "not_visible"
    if row is None:
        return Check("backup", absent, f"not visible ({error or 'pg_stat_archiver unreadable'})")
    details = {
        "archive_mode": row["archive_mode"],
        "archived_count": row["archived_count"],
        "failed_count": row["failed_count"],
        "last_archived_age_seconds": _round(row["last_archived_age"]),
        "last_failed_age_seconds": _round(row["last_failed_age"]),
        "max_age_seconds": max_age,
    }
    if row["archive_mode"] == "off" or (row["in_recovery"] and row["archive_mode"] != "always"):
        return Check(
            "backup",
            absent,
            "not visible: WAL archiving is off on this server (check the backup tool itself)",
            details,
        )
    if row["failing"]:
        return Check(
            "backup",
            "fail",
            f"WAL archiving is failing ({row['failed_count']} failures, last "
            f"{fmt_seconds(_round(row['last_failed_age']))} ago)",
            details,
        )
    age = row["last_archived_age"]
    if age is None:
        return Check("backup", "fail", "no WAL archived yet", details)
    if float(age) > max_age:
        return Check(
            "backup",
            "fail",
            f"last WAL archived {fmt_seconds(float(age))} ago (limit {fmt_seconds(max_age)})",
            details,
        )
    return Check("backup", "pass", f"last WAL archived {fmt_seconds(float(age))} ago", details)


def migration_checks(
    migrations: Sequence[Migration], timeouts: dict[str, LockTimeout]
) -> list[Check]:
    out = []
    for m in migrations:
        lt = timeouts[m.name]
        if lt.unlimited:
            out.append(
                Check(
                    f"lock_timeout:{m.name}",
                    "fail",
                    "SET lock_timeout = 0: the DDL would wait as long as any blocker lives and "
                    "every query on the table would queue behind it",
                )
            )
    return out


# -- the command ----------------------------------------------------------------------
@dataclass(frozen=True)
class PreflightOptions:
    show_queries: bool = False
    baseline_path: Path | None = None
    runs: int = 20


@dataclass
class PreflightResult:
    server_version: int
    checks: list[Check]
    migrations: list[dict[str, Any]]
    tables: list[Table]
    baseline: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def go(self) -> bool:
        return not failures(self.checks)

    def document(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "command": "preflight",
            "verdict": "go" if self.go else "no-go",
            "reasons": [f"{c.name}: {c.summary}" for c in failures(self.checks)],
            "not_visible": [c.name for c in self.checks if c.status == "not_visible"],
            "server_version": self.server_version,
            "migrations": self.migrations,
            "tables": [t.as_dict() for t in self.tables],
            "checks": [c.as_dict() for c in self.checks],
            "baseline": self.baseline,
        }

    def text(self) -> str:
        lines = [f"preflight: {'GO' if self.go else 'NO-GO'}"]
        for m in self.migrations:
            lt = m["lock_timeout"]
            lines.append(
                f"migration {m['name']} (lock_timeout {fmt_seconds(lt['seconds'])}, "
                f"{'from the file' if lt['source'] == 'migration' else 'default: file sets none'})"
            )
            for st in m["statements"]:
                if not st["lock"]:
                    continue
                extra = [w for w, on in (("rewrites", st["rewrites"]), ("scans", st["scans"]),
                                         ("concurrent", st["concurrent"])) if on]  # fmt: skip
                lines.append(
                    f"  line {st['line']}: {st['kind']} {', '.join(st['tables'])}: {st['lock']}"
                    + (f" ({', '.join(extra)})" if extra else "")
                )
        for t in self.tables:
            if not t.exists:
                lines.append(f"table {t.name}: not in the database (created by the migration?)")
                continue
            traffic = ""
            if t.reads_per_second is not None:
                traffic = f", {t.reads_per_second:g} reads/s, {t.writes_per_second:g} writes/s"
            lines.append(
                f"table {t.label}: {fmt_bytes(t.heap_bytes + t.toast_bytes + t.index_bytes)}, "
                f"~{t.rows:,.0f} rows, {t.lock or 'no lock'}, estimated lock "
                f"{fmt_seconds(t.estimated_lock_seconds)} (estimate){traffic}"
            )
        lines += render_checks(self.checks)
        if self.baseline:
            lines.append(f"baseline written to {self.baseline['path']}")
        bad = failures(self.checks)
        if bad:
            lines.append(f"no-go: {len(bad)} reason(s): " + ", ".join(c.name for c in bad))
        return "\n".join(lines) + "\n"


async def _optional(session: Session, sql: str, params: Any = None) -> tuple[list[Row], str | None]:
    """A statement whose failure (privilege, missing feature) is a state, not an error."""
    try:
        return await session.fetch(sql, params), None
    except DatabaseUnavailable:
        raise
    except DatabaseError as exc:
        return [], str(exc)


async def _traffic(session: Session, tables: Sequence[Table], window: float) -> str:
    live = [t for t in tables if t.exists]
    if not live:
        return "none"
    ext, _ = await _optional(session, statements_probe.EXTENSION_SQL)
    if ext and statements_probe.preloaded(str(ext[0]["preload"])):
        sql = pgss_sql(str(ext[0]["schema_name"]))
        params = {"patterns": [table_pattern(t.schema or "", t.table or "") for t in live]}
        first, err = await _optional(session, sql, params)
        # texts of other roles' statements need pg_read_all_stats: else use the counters
        if err is None and not any(r["hidden"] for r in first):
            await asyncio.sleep(window)
            second, err = await _optional(session, sql, params)
            if err is None:
                traffic_rates(live, first, second, window, "pg_stat_statements")
                return "pg_stat_statements"
    params2 = {"oids": [t.oid for t in live]}
    first, err = await _optional(session, COUNTERS_SQL, params2)
    if err is not None:
        return "none"
    started = time.monotonic()
    await asyncio.sleep(window)
    second, err = await _optional(session, COUNTERS_SQL, params2)
    if err is not None:
        return "none"
    traffic_rates(live, first, second, time.monotonic() - started, "counters")
    return "counters"


async def run_preflight(
    session: Session,
    settings: Config,
    migrations: Sequence[Migration],
    options: PreflightOptions,
) -> PreflightResult:
    gate = settings.gate
    schema = settings.app_schema
    refs = statement_refs(migrations)
    timeouts = {
        m.name: migration_lock_timeout(m, gate.default_lock_timeout_seconds) for m in migrations
    }
    names = written_names(refs)
    rel_rows = await session.fetch(
        RELATIONS_SQL, {"names": names, "regnames": [regclass_name(n, schema) for n in names]}
    )
    table_map = build_tables(
        rel_rows, refs, gate.scan_bytes_per_second, gate.rewrite_bytes_per_second
    )
    tables = unique_tables(table_map)
    oids = [t.oid for t in tables if t.oid is not None]
    checks: list[Check] = list(migration_checks(migrations, timeouts))

    lock_rows = await session.fetch(LOCKS_SQL, {"oids": oids, "show": options.show_queries})
    blockers, blocking_rows = blocker_checks(tables, lock_rows)
    checks.append(blockers)

    min_timeout = min(
        (timeouts[m.name] for m in migrations), key=lambda t: t.seconds,
        default=LockTimeout(gate.default_lock_timeout_seconds, "default"),
    )  # fmt: skip
    old = await session.fetch(
        OLD_TRANSACTIONS_SQL, {"seconds": min_timeout.seconds, "show": options.show_queries}
    )
    blocking_pids = {int(r["pid"]) for r in blocking_rows}
    old = [r for r in old if int(r["pid"]) not in blocking_pids]
    prepared, _ = await _optional(session, PREPARED_SQL, {"seconds": min_timeout.seconds})
    hidden = await session.fetch_one(HIDDEN_SQL)
    checks.append(
        old_transaction_check(old, prepared, min_timeout, int(hidden["n"]) if hidden else 0)
    )

    source = await _traffic(session, tables, gate.traffic_sample_seconds)
    estimates = queue_estimates(
        migrations, refs, table_map, timeouts, gate.scan_bytes_per_second,
        gate.rewrite_bytes_per_second,
    )  # fmt: skip
    checks.append(traffic_check(estimates, source, gate.traffic_sample_seconds, tables))

    conn_row = await session.fetch_one(connections_probe.SQL)
    pools = [
        connections_probe.PoolMatcher(p.name, p.size, p.application_name, p.usename)
        for p in settings.pools
    ]
    queued = max((e.peak for e in estimates), default=0.0)
    if conn_row is not None:
        checks.extend(pool_checks(conn_row, pools, queued, gate.pool_max_ratio))

    mig = settings.migrations
    key_high, key_low = migrations_probe.split_key(mig.advisory_lock_key)
    catalog = await session.fetch_one(
        migrations_probe.CATALOG_SQL,
        {
            "schemas": sorted({*settings.table_schemas(), *(t.schema for t in tables if t.schema)}),
            "table": qualified(schema, mig.table),
            "key_high": key_high,
            "key_low": key_low,
            "max_builds": mig.max_index_builds,
            "max_invalid": mig.max_invalid_indexes,
        },
    )
    if catalog is not None:
        present = bool(catalog["table_present"])
        table_rows, err = (
            await _optional(session, migrations_probe.table_sql(schema, mig.table))
            if present
            else ([], None)
        )
        if err is not None:
            checks.append(Check("prisma", "not_visible", f"cannot read {mig.table}: {err}"))
            if int(catalog.get("lock_holders") or 0):
                checks.append(Check("prisma_lock", "fail", "a Prisma migration is running"))
        else:
            state = migrations_probe.migration_state(present, table_rows[0] if table_rows else None)
            checks.append(prisma_check(catalog, state))
        checks.extend(index_checks(catalog, tables))

    archiver, err = await _optional(session, ARCHIVER_SQL)
    checks.append(
        backup_check(
            archiver[0] if archiver else None,
            gate.archive_max_age_seconds,
            gate.require_backup_visibility,
            err,
        )
    )

    baseline = None
    if options.baseline_path is not None:
        baseline, check = await _baseline(session, settings, options)
        checks.append(check)

    migration_docs = [
        {
            "name": m.name,
            "path": str(m.path),
            "rollback": str(m.rollback) if m.rollback else None,
            "lock_timeout": {
                "seconds": timeouts[m.name].seconds,
                "source": timeouts[m.name].source,
                "written": timeouts[m.name].written,
                "unlimited": timeouts[m.name].unlimited,
            },
            "statements": [r.as_dict() for r in refs if r.migration == m.name],
        }
        for m in migrations
    ]
    return PreflightResult(session.server_version, checks, migration_docs, tables, baseline)


CRITICAL_TABLES = ("Scan", "Evidence", "Issue")


async def _baseline(
    session: Session, settings: Config, options: PreflightOptions
) -> tuple[dict[str, Any] | None, Check]:
    """Plans and latency of the critical queries before the change, written to a file.

    Not measured while a lock queue exists on the app's critical tables (the
    measurement would wait in it, if only for lock_timeout).
    """
    from exporter.gate.live_measure import (  # noqa: PLC0415 - only with --baseline
        baseline_document,
        measure_latency,
        measure_plans,
        write_baseline,
    )

    critical = await session.fetch(
        "SELECT count(*)::int AS n FROM pg_locks l WHERE l.locktype = 'relation' "
        "AND l.relation = ANY(SELECT to_regclass(x) FROM unnest(%(names)s::text[]) AS x) "
        "AND (NOT l.granted OR l.mode = 'AccessExclusiveLock') "
        "AND l.pid IS DISTINCT FROM pg_backend_pid()",
        {"names": [qualified(settings.app_schema, t) for t in CRITICAL_TABLES]},
    )
    if critical and int(critical[0]["n"]):
        return None, Check(
            "baseline", "fail", "not measured: a lock queue or ACCESS EXCLUSIVE lock exists on "
            "the app's critical tables",
        )  # fmt: skip
    if options.baseline_path is None:  # pragma: no cover - called only with a path
        return None, Check("baseline", "not_visible", "no --baseline path")
    try:
        plans = await measure_plans(session, settings)
        latency = await measure_latency(session, settings, options.runs)
    except DatabaseUnavailable:
        raise
    except DatabaseError as exc:
        return None, Check("baseline", "fail", f"not measured: {exc}")
    document = baseline_document(session.server_version, plans, latency)
    write_baseline(options.baseline_path, document)
    p95 = ", ".join(f"{lat.probe} p95 {fmt_seconds(lat.p95_seconds)}" for lat in latency)
    return {"path": str(options.baseline_path), **document}, Check(
        "baseline", "pass", f"written to {options.baseline_path} ({p95})"
    )
