"""Buffer cache hits and reads of the monitored database (pg_stat_database).

The hit ratio is ``rate(hit) / (rate(hit) + rate(read))`` in PromQL; the
counters are exported raw so the ratio can be taken over any window.
"""

from __future__ import annotations

from exporter.probes.base import LaneName, Row, Session
from exporter.samples import Family, counter

SQL = """
SELECT blks_hit::float8 AS blks_hit, blks_read::float8 AS blks_read
FROM pg_stat_database
WHERE datname = current_database()
"""


def parse(row: Row) -> list[Family]:
    """The probe's single row to families (pure)."""
    return [
        counter(
            "gecko_database_blocks_hit_total",
            "Buffer hits in the monitored database (pg_stat_database.blks_hit).",
            float(row.get("blks_hit") or 0),
        ),
        counter(
            "gecko_database_blocks_read_total",
            "Blocks the monitored database read from disk or the OS cache "
            "(pg_stat_database.blks_read).",
            float(row.get("blks_read") or 0),
        ),
    ]


class DatabaseProbe:
    name = "database"
    lane: LaneName = "catalog"

    async def collect(self, session: Session, now: float) -> list[Family]:
        del now
        row = await session.fetch_one(SQL)
        return parse(row) if row is not None else []

    def persistent(self) -> list[Family]:
        return []
