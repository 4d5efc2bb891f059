"""Bulk-load synthetic Gecko Advisor data with COPY, then ANALYZE."""

from __future__ import annotations

import importlib
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from types import TracebackType
from typing import Any, Final, Protocol, cast

import structlog

from gecko_demo import admin, datagen

log = structlog.get_logger()

# tqdm ships no type hints; imported here so a missing package fails at import time.
# The subclass has no monitor thread, which would outlive the bar.
_Tqdm: Final = type(
    "DemoProgress", (importlib.import_module("tqdm").tqdm,), {"monitor_interval": 0}
)

CHUNK_SCANS: Final = 2000
_APP_NAME: Final = "gecko-demo-seed"


class ProgressBar(Protocol):
    """The part of ``tqdm.tqdm`` used here (tqdm ships no type hints)."""

    def update(self, n: int = 1) -> object: ...

    def set_postfix(self, *, refresh: bool = True, **kwargs: object) -> None: ...

    def __enter__(self) -> ProgressBar: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class _NoBar:
    """Stands in for tqdm when progress is off (a disabled tqdm leaks its monitor thread)."""

    def update(self, n: int = 1) -> object:
        return None

    def set_postfix(self, *, refresh: bool = True, **kwargs: object) -> None:
        return None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


def progress_bar(*, total: int, desc: str, unit: str, enabled: bool) -> ProgressBar:
    """A tqdm progress bar on stderr, or a silent stand-in when ``enabled`` is false."""
    if not enabled:
        return _NoBar()
    return cast(
        "ProgressBar",
        _Tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True),
    )


@dataclass(frozen=True)
class LoadStats:
    scans: int
    evidence: int
    issues: int
    users: int
    cached_lists: int
    seconds: float
    analyze_seconds: float
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.scans + self.evidence + self.issues + self.users + self.cached_lists


def load_data(
    dsn: str,
    scans: int = 20000,
    seed: int = 1,
    progress: bool = True,
    *,
    now: datetime | None = None,
) -> LoadStats:
    """Load ``scans`` scans (with their evidence and issues), users and lists.

    Rows are generated and sent with COPY in chunks of :data:`CHUNK_SCANS`
    scans, one transaction per chunk. Tables must exist and be empty of
    conflicting ids. ``now`` (naive UTC) anchors the 90-day history; the
    default is the current time so the newest scans fall inside the app's
    15-minute dedupe window.
    """
    if scans < 0:
        raise ValueError("scans must be >= 0")
    anchor = now if now is not None else datetime.now(UTC).replace(tzinfo=None)
    gen = datagen.DataGenerator(seed, now=anchor)
    started = time.monotonic()
    statuses: Counter[str] = Counter()
    n_evidence = n_issues = 0
    with admin.connect(dsn, application_name=_APP_NAME) as conn:
        user_rows = gen.users(max(5, scans // 400))
        cached = gen.cached_lists()
        with conn.transaction():
            n_users = conn.copy_rows("User", datagen.USER_COLUMNS, user_rows)
            n_lists = conn.copy_rows("CachedList", datagen.CACHED_LIST_COLUMNS, cached)
        stream = gen.scans(scans)
        with progress_bar(
            total=scans, desc="loading demo data", unit="scan", enabled=progress
        ) as bar:
            while chunk := list(islice(stream, CHUNK_SCANS)):
                ev_rows: list[tuple[Any, ...]] = []
                issue_rows: list[tuple[Any, ...]] = []
                for s in chunk:
                    statuses[s.status] += 1
                    ev_rows.extend(s.evidence_rows())
                    issue_rows.extend(s.issue_rows())
                with conn.transaction():
                    conn.copy_rows("Scan", datagen.SCAN_COLUMNS, (s.scan_row() for s in chunk))
                    n_evidence += conn.copy_rows("Evidence", datagen.EVIDENCE_COLUMNS, ev_rows)
                    n_issues += conn.copy_rows("Issue", datagen.ISSUE_COLUMNS, issue_rows)
                bar.set_postfix(evidence=n_evidence, issues=n_issues, refresh=False)
                bar.update(len(chunk))
        analyze_started = time.monotonic()
        conn.execute("ANALYZE")
        finished = time.monotonic()
    stats = LoadStats(
        scans=scans,
        evidence=n_evidence,
        issues=n_issues,
        users=n_users,
        cached_lists=n_lists,
        seconds=finished - started,
        analyze_seconds=finished - analyze_started,
        statuses=dict(statuses),
    )
    log.info(
        "demo.data_loaded",
        scans=stats.scans,
        evidence=stats.evidence,
        issues=stats.issues,
        users=stats.users,
        seconds=round(stats.seconds, 2),
        rows_per_second=round(stats.rows / stats.seconds) if stats.seconds else None,
    )
    return stats
