"""Critical indexes of the app, checked by name in the app schema.

Presence, validity (``indisvalid AND indisready``), size and scan count of a
configured list of index names. Names only: the two install variants of Gecko
Advisor define the same indexes differently (partial or not), so comparing
``indexdef`` text would flag a healthy database.

Everything is read from the catalogs and the statistics functions, without
opening the relations: ``pg_relation_size()`` takes an ACCESS SHARE lock that
would queue behind a migration's ACCESS EXCLUSIVE request, so the size is
``pg_class.relpages x block_size`` instead (maintained by CREATE INDEX, VACUUM
and ANALYZE; it lags between them, which is fine for a size trend).
"""

from __future__ import annotations

from collections.abc import Sequence

from exporter.probes.base import LaneName, Row, Session
from exporter.samples import Family, counter, gauge

#: The indexes the app's hot queries rely on (schema reference §3-4), checked by name
#: (the default of the ``critical_indexes`` setting).
DEFAULT_CRITICAL_INDEXES = (
    "Scan_dedupe_lookup_idx",
    "Scan_recent_reports_idx",
    "Evidence_scan_covering_idx",
    "Issue_scan_covering_idx",
    "Scan_slug_key",
)

SQL = """
SELECT ic.relname::text AS index_name,
       t.relname::text AS table_name,
       i.indisvalid AS valid,
       i.indisready AS ready,
       ic.relpages::bigint * current_setting('block_size')::bigint AS size_bytes,
       pg_stat_get_numscans(i.indexrelid) AS scans
FROM pg_class ic
JOIN pg_namespace n ON n.oid = ic.relnamespace
JOIN pg_index i ON i.indexrelid = ic.oid
JOIN pg_class t ON t.oid = i.indrelid
WHERE n.nspname = %(schema)s AND ic.relkind IN ('i', 'I') AND ic.relname = ANY(%(names)s)
"""


def parse(rows: Sequence[Row], names: Sequence[str]) -> list[Family]:
    """Catalog rows of :data:`SQL` to families; names without a row are absent (pure)."""
    found = {str(r["index_name"]): r for r in rows}
    present: dict[tuple[str, ...], float] = {}
    valid: dict[tuple[str, ...], float] = {}
    size: dict[tuple[str, ...], float] = {}
    scans: dict[tuple[str, ...], float] = {}
    for name in names:
        row = found.get(name)
        present[(name,)] = 1.0 if row is not None else 0.0
        valid[(name,)] = 1.0 if row is not None and row["valid"] and row["ready"] else 0.0
        if row is not None:
            size[(name,)] = float(row["size_bytes"] or 0)
            scans[(name,)] = float(row["scans"] or 0)
    return [
        gauge(
            "gecko_index_present",
            "1 if the critical index exists in the app schema (checked by name).",
            labelnames=("index",),
            values=present,
        ),
        gauge(
            "gecko_index_valid",
            "1 if the critical index is valid and ready (indisvalid and indisready); 0 when "
            "invalid or absent.",
            labelnames=("index",),
            values=valid,
        ),
        gauge(
            "gecko_index_size_bytes",
            "Size of the critical index: pg_class.relpages x block_size (lock-free; updated by "
            "CREATE INDEX, VACUUM and ANALYZE).",
            labelnames=("index",),
            values=size,
        ),
        counter(
            "gecko_index_scans_total",
            "Index scans started on the critical index (pg_stat_user_indexes.idx_scan).",
            labelnames=("index",),
            values=scans,
        ),
    ]


class IndexesProbe:
    """Presence, validity, size and use of the configured critical indexes."""

    name = "indexes"
    lane: LaneName = "catalog"

    def __init__(self, schema: str, names: Sequence[str]) -> None:
        self.schema = schema
        self.names = tuple(dict.fromkeys(names))

    async def collect(self, session: Session, now: float) -> list[Family]:
        del now
        rows = await session.fetch(SQL, {"schema": self.schema, "names": list(self.names)})
        return parse(rows, self.names)

    def persistent(self) -> list[Family]:
        return []
