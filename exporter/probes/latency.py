"""The two latency probes: the app's dedupe scan lookup and report generation.

Both time the real round trips (execute + fetch) of the app's statement shapes
with bind parameters and server-side prepared statements, and observe them into
exporter-owned histograms whose buckets hold the alert thresholds exactly.

A run that reached the database but was given up (the probe deadline passed, or
the server cancelled it at statement_timeout or lock_timeout) is observed too, at
the time it was abandoned (see :meth:`ScanLookupProbe.abandoned`): when most
lookups time out, the histogram's upper buckets grow and the latency alerts fire
instead of going silent for lack of data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog

from exporter.probes import app_queries
from exporter.probes.base import LaneName, Session
from exporter.probes.sampling import RecentScanSampler
from exporter.samples import Family, Histogram, counter, gauge, histogram

log = structlog.get_logger("exporter.probes.latency")


def window_start(now: float, window_seconds: float) -> datetime:
    """The dedupe window start as the app binds it: naive UTC TIMESTAMP(3)."""
    start = datetime.fromtimestamp(now, tz=UTC) - timedelta(seconds=window_seconds)
    return start.replace(tzinfo=None, microsecond=(start.microsecond // 1000) * 1000)


class ScanLookupProbe:
    """Times ``services/dedupe.ts``'s lookup for a realistic normalizedInput."""

    name = "scan_lookup"
    lane: LaneName = "app"

    def __init__(
        self,
        schema: str,
        sampler: RecentScanSampler,
        *,
        window_seconds: float = 900,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.sql = app_queries.dedupe_lookup(schema)
        self.sampler = sampler
        self.window_seconds = window_seconds
        self.histogram = Histogram()
        self.hits = 0
        self.timer = timer

    async def collect(self, session: Session, now: float) -> list[Family]:
        await self.sampler.refresh_if_stale(session)
        params = (self.sampler.next_input(), "done", window_start(now, self.window_seconds), 1, 0)
        started = self.timer()
        rows = await session.fetch(self.sql, params, prepare=True)
        elapsed = self.timer() - started
        self.histogram.observe(elapsed)
        self.hits += 1 if rows else 0
        return [
            gauge(
                "gecko_scan_lookup_last_duration_seconds",
                "Round trip of the most recent scan lookup timed by the exporter.",
                elapsed,
            )
        ]

    def abandoned(self, elapsed_seconds: float) -> None:
        """A lookup that reached the database and was given up counts at that time."""
        self.histogram.observe(max(0.0, elapsed_seconds))

    def persistent(self) -> list[Family]:
        return [
            histogram(
                "gecko_scan_lookup_duration_seconds",
                "Round trip of the app's dedupe scan lookup, timed by the exporter with bind "
                "parameters and a prepared statement; a lookup given up (probe deadline, "
                "statement or lock timeout) counts at the time it was abandoned.",
                [self.histogram.snapshot()],
            ),
            counter(
                "gecko_scan_lookup_hits_total",
                "Scan lookups by the exporter that found a done scan inside the dedupe window.",
                float(self.hits),
            ),
        ]


class ReportProbe:
    """Times the three statements of ``GET /api/report/:slug`` for a recent done scan."""

    name = "report"
    lane: LaneName = "app"

    def __init__(
        self,
        schema: str,
        sampler: RecentScanSampler,
        *,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.scan_sql = app_queries.scan_by_slug(schema)
        self.evidence_sql = app_queries.evidence_for_scan(schema)
        self.issue_sql = app_queries.issues_for_scan(schema)
        self.sampler = sampler
        self.histogram = Histogram()
        self.rows_fetched = {"evidence": 0, "issue": 0}
        self.last_rows: dict[str, int] | None = None
        self.timer = timer
        self._warned_empty = False

    async def collect(self, session: Session, now: float) -> list[Family]:
        del now
        await self.sampler.refresh_if_stale(session)
        scan = self.sampler.next_scan()
        if scan is None:
            if not self._warned_empty:
                log.info("report_probe_no_done_scans")
                self._warned_empty = True
            return []
        started = self.timer()
        found = await session.fetch(self.scan_sql, (scan.slug, 1, 0), prepare=True)
        scan_id = str(found[0]["id"]) if found else scan.id
        evidence = await session.fetch(self.evidence_sql, (scan_id, 0), prepare=True)
        issues = await session.fetch(self.issue_sql, (scan_id, 0), prepare=True)
        elapsed = self.timer() - started
        self.histogram.observe(elapsed)
        self.last_rows = {"evidence": len(evidence), "issue": len(issues)}
        for relation, n in self.last_rows.items():
            self.rows_fetched[relation] += n
        return [
            gauge(
                "gecko_report_rows",
                "Rows fetched by the most recent report run by the exporter, per relation "
                "(tells a slow report from a big one).",
                labelnames=("relation",),
                values={(k,): float(v) for k, v in self.last_rows.items()},
            ),
            gauge(
                "gecko_report_last_duration_seconds",
                "Total time of the most recent report run by the exporter (three statements).",
                elapsed,
            ),
        ]

    def abandoned(self, elapsed_seconds: float) -> None:
        """A report that reached the database and was given up counts at that time."""
        self.histogram.observe(max(0.0, elapsed_seconds))

    def persistent(self) -> list[Family]:
        return [
            histogram(
                "gecko_report_generation_duration_seconds",
                "Total round trip of the three statements of GET /api/report/:slug for a recent "
                "done scan, timed by the exporter with bind parameters; a report given up "
                "(probe deadline, statement or lock timeout) counts at the time it was abandoned.",
                [self.histogram.snapshot()],
            ),
            counter(
                "gecko_report_rows_fetched_total",
                "Rows fetched by all reports run by the exporter, per relation.",
                labelnames=("relation",),
                values={(k,): float(v) for k, v in self.rows_fetched.items()},
            ),
        ]
