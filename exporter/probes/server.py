"""Server identity: version and start time."""

from __future__ import annotations

from exporter.probes.base import LaneName, Row, Session
from exporter.samples import Family, gauge

SQL = """
SELECT current_setting('server_version') AS version,
       current_setting('server_version_num')::int AS version_num,
       EXTRACT(EPOCH FROM pg_postmaster_start_time())::float8 AS start_time,
       pg_is_in_recovery() AS in_recovery
"""


def parse(row: Row) -> list[Family]:
    """Rows of :data:`SQL` to families (pure)."""
    version = str(row["version"]).split(" ", 1)[0]
    major = str(int(row["version_num"]) // 10000)
    return [
        gauge(
            "gecko_postgres_server_info",
            "PostgreSQL server version (value is always 1).",
            labelnames=("version", "major"),
            values={(version, major): 1},
        ),
        gauge(
            "gecko_postgres_start_time_seconds",
            "Unix time the PostgreSQL server started.",
            float(row["start_time"]),
        ),
        gauge(
            "gecko_postgres_in_recovery",
            "1 if the server is a standby in recovery.",
            1.0 if row["in_recovery"] else 0.0,
        ),
    ]


class ServerProbe:
    name = "server"
    lane: LaneName = "activity"

    async def collect(self, session: Session, now: float) -> list[Family]:
        del now
        row = await session.fetch_one(SQL)
        if row is None:  # pragma: no cover - a SELECT without FROM always returns a row
            return []
        return parse(row)

    def persistent(self) -> list[Family]:
        return []
