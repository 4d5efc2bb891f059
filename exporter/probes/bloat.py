"""Table bloat: a catalog estimate by default, ``pgstattuple_approx`` on request.

Catalog estimate (after ioguix's ``table_bloat.sql``, from catalogs only): the
pages the live rows need, ``reltuples x (line pointer + aligned tuple header
and null bitmap + aligned average row width from pg_stats)`` packed into
``(block_size - page header) x fillfactor``, plus 1/4 page per TOAST row,
compared with ``relpages`` of the heap and its TOAST table. Needs a fresh
ANALYZE; tables never analyzed, or with columns lacking statistics, get no
estimate. Padding counts as bloat (~10 % on narrow rows). No lock is taken,
so this mode runs on the ``catalog`` lane.

``bloat.pgstattuple: true`` and the extension installed: each selected table
up to ``pgstattuple_max_table_bytes`` is measured with ``pgstattuple_approx``
(dead tuple bytes + free space, reading only pages not all-visible). That
opens the table (ACCESS SHARE), so the probe then runs on the ``app`` lane; a
table whose lock is not granted within lock_timeout keeps its catalog estimate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from exporter.errors import LockTimeout
from exporter.probes.base import LaneName, Row, Session
from exporter.probes.sql import quote_ident
from exporter.probes.tables import table_label, top_tables_sql
from exporter.samples import Family, gauge

log = structlog.get_logger("exporter.probes.bloat")

CATALOG_SQL = f"""
WITH {top_tables_sql(columns=", c.reloptions")}
SELECT t.oid::bigint AS oid, t.schema_name, t.table_name, t.relkind::text AS relkind,
       t.relpages::float8 AS relpages, t.reltuples::float8 AS reltuples,
       COALESCE(toast.relpages, 0)::float8 AS toast_pages,
       GREATEST(COALESCE(toast.reltuples, 0), 0)::float8 AS toast_tuples,
       COALESCE(substring(array_to_string(t.reloptions, ' ')
                          FROM 'fillfactor=([0-9]+)')::int, 100) AS fillfactor,
       current_setting('block_size')::int AS block_size,
       (SELECT count(*) FROM pg_attribute a
        WHERE a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped)::int AS n_columns,
       s.n_stats, s.data_width, s.max_null_frac
FROM t
LEFT JOIN pg_class toast ON toast.oid = t.reltoastrelid
LEFT JOIN LATERAL (
    SELECT count(*)::int AS n_stats,
           sum((1 - st.null_frac) * st.avg_width)::float8 AS data_width,
           max(st.null_frac)::float8 AS max_null_frac
    FROM pg_stats st
    WHERE st.schemaname = t.schema_name AND st.tablename = t.table_name AND NOT st.inherited
) s ON true
"""

EXTENSION_SQL = """
SELECT n.nspname::text AS schema_name
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'pgstattuple'
"""

#: 64-bit MAXALIGN, page header, heap tuple header and line pointer sizes
MAXALIGN = 8
PAGE_HEADER = 24
TUPLE_HEADER = 23
LINE_POINTER = 4


def approx_sql(extension_schema: str) -> str:
    return (
        "SELECT table_len::float8 AS table_len, dead_tuple_len::float8 AS dead_tuple_len,"
        " approx_free_space::float8 AS approx_free_space"
        f" FROM {quote_ident(extension_schema)}.pgstattuple_approx(%s::oid::regclass)"
    )


def _align(n: float) -> float:
    return math.ceil(n / MAXALIGN) * MAXALIGN


@dataclass(frozen=True)
class Bloat:
    bytes: float
    ratio: float


def catalog_estimate(row: Row) -> Bloat | None:
    """ioguix-style estimate from one :data:`CATALOG_SQL` row; None when unknowable (pure)."""
    relpages = float(row["relpages"])
    reltuples = float(row["reltuples"])
    n_columns = int(row["n_columns"])
    n_stats = int(row.get("n_stats") or 0)
    if reltuples < 0 or row.get("data_width") is None or n_stats < n_columns:
        return None  # never analyzed, or columns without statistics
    block_size = int(row["block_size"])
    actual = relpages + float(row["toast_pages"])
    if actual <= 0:
        return Bloat(0.0, 0.0)
    null_bitmap = math.ceil(n_columns / 8) if float(row.get("max_null_frac") or 0) > 0 else 0
    tuple_size = (
        LINE_POINTER + _align(TUPLE_HEADER + null_bitmap) + _align(float(row["data_width"]))
    )
    usable = (block_size - PAGE_HEADER) * int(row["fillfactor"]) / 100
    expected = math.ceil(reltuples * tuple_size / usable) + math.ceil(
        float(row["toast_tuples"]) / 4
    )
    bloat_pages = max(0.0, actual - expected)
    return Bloat(bloat_pages * block_size, bloat_pages / actual)


def approx_bloat(row: Row) -> Bloat:
    """Bloat from a ``pgstattuple_approx`` row: dead tuple bytes + free space (pure)."""
    length = float(row["table_len"])
    wasted = float(row["dead_tuple_len"]) + float(row["approx_free_space"])
    return Bloat(wasted, wasted / length if length > 0 else 0.0)


def families(estimates: dict[str, Bloat], exact: int) -> list[Family]:
    return [
        gauge(
            "gecko_table_bloat_ratio",
            "Estimated wasted fraction of the table's pages (catalog estimate, or "
            "pgstattuple_approx dead + free space when enabled); absent when unknowable.",
            labelnames=("table",),
            values={(t,): b.ratio for t, b in estimates.items()},
        ),
        gauge(
            "gecko_table_bloat_bytes",
            "Estimated wasted bytes of the table (same method as gecko_table_bloat_ratio).",
            labelnames=("table",),
            values={(t,): b.bytes for t, b in estimates.items()},
        ),
        gauge(
            "gecko_table_bloat_pgstattuple_tables",
            "Tables whose bloat was measured with pgstattuple_approx in the last run (the "
            "others use the catalog estimate).",
            float(exact),
        ),
    ]


class BloatProbe:
    """Bloat of the largest tables of the app schemas."""

    name = "bloat"

    def __init__(
        self,
        schemas: Sequence[str],
        *,
        max_tables: int,
        default_schema: str,
        pgstattuple: bool = False,
        pgstattuple_max_table_bytes: int = 1 << 30,
    ) -> None:
        self.schemas = list(schemas)
        self.max_tables = max_tables
        self.default_schema = default_schema
        self.pgstattuple = pgstattuple
        self.max_exact_bytes = pgstattuple_max_table_bytes
        # pgstattuple_approx opens application tables: serialize with the app probes
        self.lane: LaneName = "app" if pgstattuple else "catalog"
        self._warned_missing = False

    async def _extension_schema(self, session: Session) -> str | None:
        row = await session.fetch_one(EXTENSION_SQL)
        if row is None:
            if not self._warned_missing:
                log.warning("bloat_pgstattuple_unavailable", fallback="catalog estimate")
                self._warned_missing = True
            return None
        self._warned_missing = False
        return str(row["schema_name"])

    async def collect(self, session: Session, now: float) -> list[Family]:
        del now
        rows = await session.fetch(CATALOG_SQL, {"schemas": self.schemas, "limit": self.max_tables})
        estimates: dict[str, Bloat] = {}
        exact = 0
        ext_schema = await self._extension_schema(session) if self.pgstattuple else None
        for row in rows:
            label = table_label(
                str(row["schema_name"]), str(row["table_name"]), self.default_schema
            )
            size = float(row["relpages"]) * int(row["block_size"])
            if ext_schema is not None and row["relkind"] == "r" and size <= self.max_exact_bytes:
                try:
                    measured = await session.fetch_one(
                        approx_sql(ext_schema), (int(row["oid"]),), prepare=False
                    )
                except LockTimeout:
                    log.info("bloat_table_locked", table=label, fallback="catalog estimate")
                    measured = None
                if measured is not None:
                    estimates[label] = approx_bloat(measured)
                    exact += 1
                    continue
            estimate = catalog_estimate(row)
            if estimate is not None:
                estimates[label] = estimate
        return families(estimates, exact)

    def persistent(self) -> list[Family]:
        return []
