"""Per-table scan ratios, cache hits, sizes, dead tuples and vacuum times.

Bounded: of the tables in the configured schemas, only the ``max_tables``
largest (by ``pg_class.relpages``, then name, so the set is stable) get
series; ``gecko_tables`` and ``gecko_tables_exported`` tell when the cap cuts.

Cheap with many tables: the top-N is picked from ``pg_class`` first and the
statistics functions (``pg_stat_get_*``, the ones behind
``pg_stat_user_tables`` and ``pg_statio_user_tables``) are evaluated only for
those, whereas joining the views would compute every table's row.

Lock-free: sizes are ``relpages x block_size`` (``pg_relation_size()`` takes
an ACCESS SHARE lock, which would queue behind a migration's ACCESS EXCLUSIVE
request); relpages is refreshed by VACUUM, ANALYZE and CREATE INDEX, so the
size lags between them. Nothing here opens an application table, so the probe
runs on the ``catalog`` lane.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from exporter.probes.base import LaneName, Row, Session
from exporter.samples import Family, counter, gauge


def top_tables_sql(*, columns: str = "") -> str:
    """A CTE ``t`` of the largest tables of ``%(schemas)s``, at most ``%(limit)s``."""
    return f"""
t AS (
    SELECT c.oid, n.nspname::text AS schema_name, c.relname::text AS table_name,
           c.relpages, c.reltuples, c.reltoastrelid, c.relkind{columns}
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY(%(schemas)s)
    ORDER BY c.relpages DESC, n.nspname, c.relname
    LIMIT %(limit)s
)"""


SQL = f"""
WITH {top_tables_sql()},
ix AS (
    SELECT i.indrelid AS relid,
           sum(pg_stat_get_numscans(i.indexrelid))::float8 AS idx_scan,
           sum(pg_stat_get_tuples_fetched(i.indexrelid))::float8 AS idx_tup_fetch,
           sum(pg_stat_get_blocks_hit(i.indexrelid))::float8 AS idx_blks_hit,
           sum(pg_stat_get_blocks_fetched(i.indexrelid)
               - pg_stat_get_blocks_hit(i.indexrelid))::float8 AS idx_blks_read
    FROM pg_index i
    WHERE i.indrelid IN (SELECT oid FROM t)
    GROUP BY i.indrelid
),
r AS (
    SELECT t.schema_name, t.table_name,
           t.relpages::float8 * current_setting('block_size')::float8 AS size_bytes,
           pg_stat_get_numscans(t.oid)::float8 AS seq_scan,
           pg_stat_get_tuples_returned(t.oid)::float8 AS seq_tup_read,
           COALESCE(ix.idx_scan, 0) AS idx_scan,
           COALESCE(ix.idx_tup_fetch, 0) + pg_stat_get_tuples_fetched(t.oid)::float8
               AS idx_tup_fetch,
           pg_stat_get_live_tuples(t.oid)::float8 AS n_live_tup,
           pg_stat_get_dead_tuples(t.oid)::float8 AS n_dead_tup,
           EXTRACT(EPOCH FROM pg_stat_get_last_autovacuum_time(t.oid))::float8
               AS last_autovacuum,
           EXTRACT(EPOCH FROM pg_stat_get_last_autoanalyze_time(t.oid))::float8
               AS last_autoanalyze,
           pg_stat_get_blocks_hit(t.oid)::float8 AS heap_blks_hit,
           (pg_stat_get_blocks_fetched(t.oid) - pg_stat_get_blocks_hit(t.oid))::float8
               AS heap_blks_read,
           COALESCE(ix.idx_blks_hit, 0) AS idx_blks_hit,
           COALESCE(ix.idx_blks_read, 0) AS idx_blks_read
    FROM t LEFT JOIN ix ON ix.relid = t.oid
)
SELECT (SELECT count(*)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY(%(schemas)s))::int AS tables_total,
       (SELECT COALESCE(json_agg(r), '[]'::json) FROM r) AS tables
"""


def table_label(schema: str, table: str, default_schema: str) -> str:
    """``Scan`` in the app schema, ``other.Scan`` elsewhere (label values stay unique)."""
    return table if schema == default_schema else f"{schema}.{table}"


@dataclass(frozen=True)
class _Spec:
    name: str
    kind: str
    column: str
    doc: str


COUNTERS = (
    _Spec("gecko_table_seq_scans_total", "counter", "seq_scan",
          "Sequential scans started on the table (pg_stat_user_tables.seq_scan)."),
    _Spec("gecko_table_index_scans_total", "counter", "idx_scan",
          "Index scans started on the table's indexes (pg_stat_user_tables.idx_scan)."),
    _Spec("gecko_table_seq_tuples_read_total", "counter", "seq_tup_read",
          "Rows read by sequential scans (seq_tup_read)."),
    _Spec("gecko_table_index_tuples_fetched_total", "counter", "idx_tup_fetch",
          "Rows fetched by index scans (idx_tup_fetch)."),
    _Spec("gecko_table_heap_blocks_hit_total", "counter", "heap_blks_hit",
          "Heap blocks found in shared buffers (pg_statio_user_tables.heap_blks_hit)."),
    _Spec("gecko_table_heap_blocks_read_total", "counter", "heap_blks_read",
          "Heap blocks read from disk or the OS cache (heap_blks_read)."),
    _Spec("gecko_table_index_blocks_hit_total", "counter", "idx_blks_hit",
          "Index blocks of the table found in shared buffers (idx_blks_hit)."),
    _Spec("gecko_table_index_blocks_read_total", "counter", "idx_blks_read",
          "Index blocks of the table read from disk or the OS cache (idx_blks_read)."),
    _Spec("gecko_table_size_bytes", "gauge", "size_bytes",
          "Heap size: pg_class.relpages x block_size (lock-free estimate, refreshed by "
          "VACUUM/ANALYZE)."),
    _Spec("gecko_table_live_tuples", "gauge", "n_live_tup", "Estimated live rows (n_live_tup)."),
    _Spec("gecko_table_dead_tuples", "gauge", "n_dead_tup", "Estimated dead rows (n_dead_tup)."),
)  # fmt: skip


def dead_ratio(live: float, dead: float) -> float:
    total = live + dead
    return dead / total if total > 0 else 0.0


def parse(row: Row, default_schema: str) -> list[Family]:
    """The probe's single row to families (pure)."""
    tables = row.get("tables") or []
    values: dict[str, dict[tuple[str, ...], float]] = {s.name: {} for s in COUNTERS}
    ratio: dict[tuple[str, ...], float] = {}
    vacuum: dict[tuple[str, ...], float] = {}
    analyze: dict[tuple[str, ...], float] = {}
    for t in tables:
        key = (table_label(str(t["schema_name"]), str(t["table_name"]), default_schema),)
        for spec in COUNTERS:
            values[spec.name][key] = max(0.0, float(t.get(spec.column) or 0))
        ratio[key] = dead_ratio(float(t.get("n_live_tup") or 0), float(t.get("n_dead_tup") or 0))
        if t.get("last_autovacuum") is not None:
            vacuum[key] = float(t["last_autovacuum"])
        if t.get("last_autoanalyze") is not None:
            analyze[key] = float(t["last_autoanalyze"])
    families = [
        (counter if spec.kind == "counter" else gauge)(
            spec.name, spec.doc, labelnames=("table",), values=values[spec.name]
        )
        for spec in COUNTERS
    ]
    families += [
        gauge(
            "gecko_table_dead_tuple_ratio",
            "Dead rows / (live + dead rows); 0 for an empty table.",
            labelnames=("table",),
            values=ratio,
        ),
        gauge(
            "gecko_table_last_autovacuum_timestamp_seconds",
            "Unix time of the table's last autovacuum (absent if never).",
            labelnames=("table",),
            values=vacuum,
        ),
        gauge(
            "gecko_table_last_autoanalyze_timestamp_seconds",
            "Unix time of the table's last autoanalyze (absent if never).",
            labelnames=("table",),
            values=analyze,
        ),
        gauge(
            "gecko_tables",
            "Tables in the monitored schemas.",
            float(row.get("tables_total") or 0),
        ),
        gauge(
            "gecko_tables_exported",
            "Tables with per-table series (the largest, at most tables.max_tables).",
            float(len(tables)),
        ),
    ]
    return families


class TablesProbe:
    """Per-table statistics of the largest tables of the app schemas."""

    name = "tables"
    lane: LaneName = "catalog"

    def __init__(self, schemas: Sequence[str], *, max_tables: int, default_schema: str) -> None:
        self.schemas = list(schemas)
        self.max_tables = max_tables
        self.default_schema = default_schema

    async def collect(self, session: Session, now: float) -> list[Family]:
        del now
        row = await session.fetch_one(SQL, {"schemas": self.schemas, "limit": self.max_tables})
        return parse(row or {}, self.default_schema)

    def persistent(self) -> list[Family]:
        return []
