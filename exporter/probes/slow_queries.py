"""Long-running queries from pg_stat_activity, sampled every second by default.

``gecko_slow_queries_total`` counts each distinct query (pid + query_start)
once, the first time it is seen running longer than the threshold; the query
text only ever goes to the log (truncated, and switchable off), never to labels.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from exporter.probes.base import LaneName, Row, Session
from exporter.samples import Family, counter, gauge

log = structlog.get_logger("exporter.probes.slow_queries")

ACTIVE_STATES = frozenset({"active", "fastpath function call"})


def build_sql(server_version: int) -> str:
    """The activity query; ``query_id`` exists from PostgreSQL 14 on."""
    query_id = "query_id" if server_version >= 140000 else "NULL::bigint"
    return f"""
SELECT pid, usename::text AS usename, application_name, datname::text AS datname, state,
       query_start,
       EXTRACT(EPOCH FROM clock_timestamp() - query_start)::float8 AS query_seconds,
       EXTRACT(EPOCH FROM clock_timestamp() - state_change)::float8 AS state_seconds,
       {query_id} AS query_id,
       CASE WHEN state IN ('active', 'fastpath function call')
             AND clock_timestamp() - query_start > make_interval(secs => %(threshold)s)
            THEN left(query, %(text_length)s) END AS query
FROM pg_stat_activity
WHERE backend_type = 'client backend'
  AND state IS NOT NULL AND state <> 'idle'
  AND pid <> pg_backend_pid()
  AND application_name IS DISTINCT FROM %(own_application)s
"""


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
class ActivitySummary:
    longest_active_seconds: float
    longest_idle_in_transaction_seconds: float
    slow_running: int
    new_slow: tuple[SlowQuery, ...]
    finished_slow: tuple[SlowQuery, ...]


class SlowQueryTracker:
    """Pure de-duplication of slow queries across samples."""

    def __init__(self, threshold_seconds: float) -> None:
        self.threshold = threshold_seconds
        self.total = 0
        self._running: dict[tuple[int, Any], SlowQuery] = {}

    def update(self, rows: Iterable[Row]) -> ActivitySummary:
        longest_active = 0.0
        longest_idle_tx = 0.0
        current: dict[tuple[int, Any], SlowQuery] = {}
        new: list[SlowQuery] = []
        for row in rows:
            state = str(row.get("state") or "")
            if state in ACTIVE_STATES:
                seconds = max(0.0, float(row.get("query_seconds") or 0.0))
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
                idle_for = float(row.get("state_seconds") or 0.0)
                longest_idle_tx = max(longest_idle_tx, idle_for)
        finished = tuple(sq for key, sq in self._running.items() if key not in current)
        self._running = current
        self.total += len(new)
        return ActivitySummary(
            longest_active_seconds=longest_active,
            longest_idle_in_transaction_seconds=longest_idle_tx,
            slow_running=len(current),
            new_slow=tuple(new),
            finished_slow=finished,
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
    ) -> None:
        self.tracker = SlowQueryTracker(threshold_seconds)
        self.own_application_name = own_application_name
        self.log_text = log_text
        self.text_max_length = text_max_length if log_text else 0

    async def collect(self, session: Session, now: float) -> list[Family]:
        del now
        rows = await session.fetch(
            build_sql(session.server_version),
            {
                "threshold": self.tracker.threshold,
                "text_length": self.text_max_length,
                "own_application": self.own_application_name,
            },
        )
        summary = self.tracker.update(rows)
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
        return [
            gauge(
                "gecko_longest_active_query_seconds",
                "Age of the longest-running non-idle query, exporter sessions excluded; 0 when "
                "none (sampled from pg_stat_activity).",
                summary.longest_active_seconds,
            ),
            gauge(
                "gecko_longest_idle_in_transaction_seconds",
                "Time the oldest idle-in-transaction session has been idle; 0 when none (sampled).",
                summary.longest_idle_in_transaction_seconds,
            ),
            gauge(
                "gecko_slow_queries_running",
                "Queries running now for longer than the slow-query threshold (sampled).",
                float(summary.slow_running),
            ),
        ]

    def persistent(self) -> list[Family]:
        return [
            counter(
                "gecko_slow_queries_total",
                "Distinct queries (pid + query_start) seen running longer than the slow-query "
                "threshold (sampled every probe interval).",
                float(self.tracker.total),
            ),
            gauge(
                "gecko_slow_query_threshold_seconds",
                "The configured slow-query threshold.",
                self.tracker.threshold,
            ),
        ]
