"""Realistic inputs for the latency probes, sampled from recent done scans."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from exporter.probes import app_queries
from exporter.probes.base import Row, Session

#: Used when the table holds no done scan yet: a miss still exercises the index.
FALLBACK_INPUT = "https://example.com/"


@dataclass(frozen=True)
class RecentScan:
    id: str
    slug: str
    normalized_input: str | None


def parse_recent(rows: Sequence[Row]) -> list[RecentScan]:
    return [
        RecentScan(str(r["id"]), str(r["slug"]), r.get("normalizedInput"))
        for r in rows
        if r.get("id") and r.get("slug")
    ]


def distinct_inputs(scans: Sequence[RecentScan]) -> list[str]:
    """Unique normalized inputs in recency order."""
    seen: dict[str, None] = {}
    for scan in scans:
        if scan.normalized_input:
            seen.setdefault(scan.normalized_input, None)
    return list(seen)


class RecentScanSampler:
    """Refreshes a sample of recent done scans and hands them out round robin.

    Shared by the scan-lookup and report probes (both run on the ``app`` lane,
    in one event loop, so no locking is needed).
    """

    def __init__(
        self,
        schema: str,
        *,
        sample_size: int,
        refresh_seconds: float,
        configured_inputs: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sql = app_queries.recent_done_scans(schema)
        self._size = sample_size
        self._refresh = refresh_seconds
        self._configured = list(configured_inputs)
        self._clock = clock
        self._scans: list[RecentScan] = []
        self._fetched_at: float | None = None
        self._input_cycle: itertools.cycle[str] | None = None
        self._scan_cycle: itertools.cycle[RecentScan] | None = None

    def _stale(self) -> bool:
        if self._fetched_at is None:
            return True
        age = self._clock() - self._fetched_at
        # an empty table is re-checked more often than a populated one
        return age >= (self._refresh if self._scans else min(self._refresh, 30.0))

    async def refresh_if_stale(self, session: Session) -> None:
        if not self._stale():
            return
        rows = await session.fetch(self._sql, ("done", self._size))
        self._scans = parse_recent(rows)
        self._fetched_at = self._clock()
        inputs = self._configured or distinct_inputs(self._scans) or [FALLBACK_INPUT]
        self._input_cycle = itertools.cycle(inputs)
        self._scan_cycle = itertools.cycle(self._scans) if self._scans else None

    def next_input(self) -> str:
        if self._input_cycle is None:
            self._input_cycle = itertools.cycle(self._configured or [FALLBACK_INPUT])
        return next(self._input_cycle)

    def next_scan(self) -> RecentScan | None:
        return next(self._scan_cycle) if self._scan_cycle is not None else None
