"""Prisma migrations, running index builds and invalid indexes.

One catalog statement reads, without opening any application table:

* whether ``_prisma_migrations`` exists (``to_regclass``, no lock),
* whether Prisma's migrate advisory lock (72707369: ``classid 0, objid
  72707369, objsubid 1`` in ``pg_locks``) is held in this database, and how
  many sessions wait for it (a second deploy queued),
* running ``CREATE INDEX``/``REINDEX`` from ``pg_stat_progress_create_index``
  (phase and fraction done, bounded),
* invalid indexes (``NOT indisvalid``, e.g. left by a failed ``CREATE INDEX
  CONCURRENTLY``) in the app schemas, skipping tables with a build running
  (a CIC is invalid until it finishes), with bounded names.

When the table exists, a second statement aggregates it (states per the
migration-safety reference): applied = finished and not rolled back; failed =
not finished, not rolled back, with logs (P3018, blocks every later deploy
with P3009); unfinished = the same without logs (running, or crashed). An
absent table is reported as ``gecko_migrations_table_present 0``, not an error.

The aggregate reads an application-schema table, so the probe runs on the
``app`` lane.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from exporter.probes.base import LaneName, Row, Session
from exporter.probes.sql import qualified
from exporter.probes.tables import table_label
from exporter.samples import Family, gauge

log = structlog.get_logger("exporter.probes.migrations")

#: Prisma Migrate's advisory lock key (prisma-engines, apply_migrations); the default
#: of the ``migrations.advisory_lock_key`` setting.
PRISMA_MIGRATE_LOCK_KEY = 72707369

CATALOG_SQL = """
WITH db AS (SELECT oid FROM pg_database WHERE datname = current_database()),
builds AS (
    SELECT p.pid, p.phase, p.command,
           COALESCE(tn.nspname::text, '') AS table_schema,
           COALESCE(t.relname::text, '') AS table_name,
           COALESCE(i.relname::text, '') AS index_name,
           p.blocks_total::float8 AS blocks_total, p.blocks_done::float8 AS blocks_done,
           p.tuples_total::float8 AS tuples_total, p.tuples_done::float8 AS tuples_done,
           p.lockers_total::float8 AS lockers_total, p.lockers_done::float8 AS lockers_done
    FROM pg_stat_progress_create_index p
    LEFT JOIN pg_class t ON t.oid = p.relid
    LEFT JOIN pg_namespace tn ON tn.oid = t.relnamespace
    LEFT JOIN pg_class i ON i.oid = p.index_relid
    WHERE p.datid = (SELECT oid FROM db)
),
invalid AS (
    SELECT n.nspname::text AS schema_name, ic.relname::text AS index_name,
           t.relname::text AS table_name, i.indisready AS ready
    FROM pg_index i
    JOIN pg_class ic ON ic.oid = i.indexrelid
    JOIN pg_class t ON t.oid = i.indrelid
    JOIN pg_namespace n ON n.oid = ic.relnamespace
    WHERE NOT i.indisvalid AND n.nspname = ANY(%(schemas)s)
      AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p
                      WHERE p.relid = i.indrelid AND p.datid = (SELECT oid FROM db))
)
SELECT to_regclass(%(table)s) IS NOT NULL AS table_present,
       (SELECT count(*) FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.database = (SELECT oid FROM db)
          AND l.classid::bigint = %(key_high)s AND l.objid::bigint = %(key_low)s
          AND l.objsubid = 1
          AND l.granted)::int AS lock_holders,
       (SELECT count(*) FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.database = (SELECT oid FROM db)
          AND l.classid::bigint = %(key_high)s AND l.objid::bigint = %(key_low)s
          AND l.objsubid = 1
          AND NOT l.granted)::int AS lock_waiters,
       (SELECT count(*) FROM builds)::int AS builds_total,
       (SELECT COALESCE(json_agg(b), '[]'::json) FROM
           (SELECT * FROM builds ORDER BY pid LIMIT %(max_builds)s) b) AS builds,
       (SELECT count(*) FROM invalid)::int AS invalid_total,
       (SELECT COALESCE(json_agg(v), '[]'::json) FROM
           (SELECT * FROM invalid ORDER BY schema_name, index_name LIMIT %(max_invalid)s) v)
           AS invalid
"""


def table_sql(schema: str, table: str) -> str:
    """The ``_prisma_migrations`` aggregate (failed rows capped at 5 for the log)."""
    return f"""
SELECT count(*) FILTER (WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL)::int
           AS applied,
       count(*) FILTER (WHERE finished_at IS NULL AND rolled_back_at IS NULL
                          AND logs IS NOT NULL)::int AS failed,
       count(*) FILTER (WHERE finished_at IS NULL AND rolled_back_at IS NULL
                          AND logs IS NULL)::int AS unfinished,
       count(*) FILTER (WHERE rolled_back_at IS NOT NULL)::int AS rolled_back,
       EXTRACT(EPOCH FROM max(finished_at) FILTER (WHERE rolled_back_at IS NULL))::float8
           AS last_finished,
       to_json((array_agg(json_build_object(
                   'id', id, 'migration_name', migration_name,
                   'started_at', started_at, 'logs', left(logs, 500))
                ORDER BY started_at)
                FILTER (WHERE finished_at IS NULL AND rolled_back_at IS NULL
                          AND logs IS NOT NULL))[1:5]) AS failed_rows
FROM {qualified(schema, table)}
"""


def split_key(key: int) -> tuple[int, int]:
    """pg_locks shows a bigint advisory key as classid (high 32 bits) and objid (low)."""
    return (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF


def build_ratio(build: Row) -> float:
    """Fraction done of an index build from the counters its phase advances (pure)."""
    for done, total in (
        ("blocks_done", "blocks_total"),
        ("tuples_done", "tuples_total"),
        ("lockers_done", "lockers_total"),
    ):
        t = float(build.get(total) or 0)
        if t > 0:
            return min(1.0, float(build.get(done) or 0) / t)
    return 0.0


@dataclass(frozen=True)
class MigrationState:
    table_present: bool
    applied: int = 0
    failed: int = 0
    unfinished: int = 0
    rolled_back: int = 0
    last_finished: float | None = None
    failed_rows: tuple[dict[str, Any], ...] = field(default=())


def migration_state(present: bool, row: Row | None) -> MigrationState:
    if not present or row is None:
        return MigrationState(table_present=False)
    return MigrationState(
        table_present=True,
        applied=int(row["applied"] or 0),
        failed=int(row["failed"] or 0),
        unfinished=int(row["unfinished"] or 0),
        rolled_back=int(row["rolled_back"] or 0),
        last_finished=float(row["last_finished"]) if row["last_finished"] is not None else None,
        failed_rows=tuple(row.get("failed_rows") or ()),
    )


def parse(catalog: Row, state: MigrationState, default_schema: str) -> list[Family]:
    """Catalog row and table state to families (pure)."""
    builds: Sequence[Row] = catalog.get("builds") or []
    invalid: Sequence[Row] = catalog.get("invalid") or []
    progress: dict[tuple[str, ...], float] = {}
    for b in builds:
        table = table_label(str(b["table_schema"]), str(b["table_name"]), default_schema)
        key = (table or "unknown", str(b["index_name"]) or "unknown", str(b["phase"]))
        progress[key] = build_ratio(b)
    invalid_series: dict[tuple[str, ...], float] = {
        (table_label(str(v["schema_name"]), str(v["index_name"]), default_schema),
         table_label(str(v["schema_name"]), str(v["table_name"]), default_schema)): 1.0
        for v in invalid
    }  # fmt: skip
    families = [
        gauge(
            "gecko_migrations_table_present",
            "1 if the _prisma_migrations table exists.",
            1.0 if state.table_present else 0.0,
        ),
        gauge(
            "gecko_migrations_applied",
            "Finished, not rolled back rows of _prisma_migrations.",
            float(state.applied),
        ),
        gauge(
            "gecko_migrations_failed",
            "Migrations started, not finished, not rolled back, with logs (failed; blocks "
            "later deploys with P3009).",
            float(state.failed),
        ),
        gauge(
            "gecko_migrations_unfinished",
            "Migrations started, not finished, not rolled back, without logs (running or "
            "crashed; see gecko_migration_in_progress).",
            float(state.unfinished),
        ),
        gauge(
            "gecko_migrations_rolled_back",
            "Rows of _prisma_migrations marked rolled back.",
            float(state.rolled_back),
        ),
        gauge(
            "gecko_migration_in_progress",
            "1 while Prisma's migrate advisory lock (72707369) is held in this database.",
            1.0 if int(catalog.get("lock_holders") or 0) > 0 else 0.0,
        ),
        gauge(
            "gecko_migration_lock_waiters",
            "Sessions waiting for Prisma's migrate advisory lock (another deploy queued).",
            float(catalog.get("lock_waiters") or 0),
        ),
        gauge(
            "gecko_index_builds_in_progress",
            "Running CREATE INDEX / REINDEX in this database (pg_stat_progress_create_index).",
            float(catalog.get("builds_total") or 0),
        ),
        gauge(
            "gecko_index_build_progress_ratio",
            "Fraction done of a running index build in its current phase (blocks, tuples or "
            "lockers, whichever the phase advances); bounded number of builds.",
            labelnames=("table", "index", "phase"),
            values=progress,
        ),
        gauge(
            "gecko_invalid_indexes",
            "Invalid indexes in the app schemas (tables with a build running are skipped).",
            float(catalog.get("invalid_total") or 0),
        ),
        gauge(
            "gecko_invalid_index",
            "One series per invalid index (value 1), bounded by migrations.max_invalid_indexes.",
            labelnames=("index", "table"),
            values=invalid_series,
        ),
    ]
    if state.last_finished is not None:
        families.append(
            gauge(
                "gecko_migration_last_finished_timestamp_seconds",
                "Unix time the last applied migration finished.",
                state.last_finished,
            )
        )
    return families


class MigrationsProbe:
    """Migration bookkeeping and index-build health of the app database."""

    name = "migrations"
    lane: LaneName = "app"

    def __init__(
        self,
        schema: str,
        schemas: Sequence[str],
        *,
        table: str = "_prisma_migrations",
        advisory_lock_key: int = 72707369,
        max_invalid_indexes: int = 20,
        max_index_builds: int = 10,
    ) -> None:
        self.schema = schema
        self.schemas = list(schemas)
        self.table = table
        self.table_sql = table_sql(schema, table)
        self.key_high, self.key_low = split_key(advisory_lock_key)
        self.max_invalid = max_invalid_indexes
        self.max_builds = max_index_builds
        self._logged_failures: set[str] = set()
        self._reported_invalid: set[tuple[str, str]] = set()

    async def collect(self, session: Session, now: float) -> list[Family]:
        del now
        catalog = await session.fetch_one(
            CATALOG_SQL,
            {
                "schemas": self.schemas,
                "table": qualified(self.schema, self.table),
                "key_high": self.key_high,
                "key_low": self.key_low,
                "max_builds": self.max_builds,
                "max_invalid": self.max_invalid,
            },
        )
        if catalog is None:  # pragma: no cover - a SELECT without FROM returns a row
            return []
        present = bool(catalog["table_present"])
        row = await session.fetch_one(self.table_sql) if present else None
        state = migration_state(present, row)
        self._log(state, catalog)
        return parse(catalog, state, self.schema)

    def _log(self, state: MigrationState, catalog: Row) -> None:
        for failed in state.failed_rows:
            key = str(failed.get("id") or failed.get("migration_name"))
            if key not in self._logged_failures:
                self._logged_failures.add(key)
                log.error(
                    "migration_failed",
                    migration=failed.get("migration_name"),
                    started_at=failed.get("started_at"),
                    logs=failed.get("logs"),
                )
        invalid = {(str(v["schema_name"]), str(v["index_name"])) for v in catalog["invalid"] or []}
        for schema, index in sorted(invalid - self._reported_invalid):
            log.warning("invalid_index_detected", schema=schema, index=index)
        self._reported_invalid = invalid

    def persistent(self) -> list[Family]:
        return []
