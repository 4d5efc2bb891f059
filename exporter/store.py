"""The latest result of every probe, shared between the sampler and scrapes.

Writers (the sampler thread) replace immutable snapshots under a lock; readers
(scrape threads) copy the dict of snapshots, so a scrape never waits on the
database and never sees a half-written result.

A recorded family equal to the one the probe recorded before is kept as the
previous object (and the whole tuple when every family is unchanged): renderers
convert a family to text once per object, so a value that did not change since
the last run is not converted again (most of a 1 s probe's families are the same
from one second to the next).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from exporter.samples import Family, keep_unchanged

FAILURE_REASONS = ("timeout", "lock_timeout", "unavailable", "query_error", "busy", "error")


@dataclass(frozen=True)
class ProbeState:
    """Everything known about one probe at one moment (immutable)."""

    name: str
    interval_seconds: float
    timeout_seconds: float
    runs: int = 0
    failures: tuple[tuple[str, int], ...] = ()
    last_success: bool | None = None
    last_duration_seconds: float | None = None
    last_failure_reason: str | None = None
    last_success_wall: float | None = None
    last_success_monotonic: float | None = None
    #: wall time the probe last completed a run of any outcome (its start until the first)
    last_run_wall: float | None = None
    families: tuple[Family, ...] = ()
    persistent: tuple[Family, ...] = field(default=())

    @property
    def note(self) -> str:
        """Appended to the HELP of the probe's families (by the renderer, once per family)."""
        return f"Sampled by probe {self.name} every {self.interval_seconds:g}s."

    @property
    def stale_after_seconds(self) -> float:
        """Samples older than this are no longer served."""
        return 2 * self.interval_seconds + self.timeout_seconds

    def fresh(self, now_monotonic: float) -> bool:
        return (
            self.last_success_monotonic is not None
            and now_monotonic - self.last_success_monotonic <= self.stale_after_seconds
        )


class ResultStore:
    """Thread-safe map of probe name -> :class:`ProbeState`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, ProbeState] = {}
        self._version = 0

    @property
    def version(self) -> int:
        """Incremented on every write (lets renderers reuse unchanged output)."""
        return self._version

    def register(self, name: str, interval_seconds: float, timeout_seconds: float) -> None:
        with self._lock:
            self._states[name] = ProbeState(
                name, interval_seconds, timeout_seconds, last_run_wall=time.time()
            )
            self._version += 1

    def record(
        self,
        name: str,
        *,
        success: bool,
        duration_seconds: float,
        families: list[Family] | None = None,
        persistent: list[Family] | None = None,
        reason: str | None = None,
        wall: float | None = None,
        monotonic: float | None = None,
    ) -> None:
        if not success and reason not in FAILURE_REASONS:
            raise ValueError(f"unknown failure reason {reason!r}")
        wall = time.time() if wall is None else wall
        with self._lock:
            state = self._states[name]
            failures = state.failures
            if not success and reason is not None:
                counts = dict(failures)
                counts[reason] = counts.get(reason, 0) + 1
                failures = tuple(sorted(counts.items()))
            # families are kept as the probe made them: the renderer converts each one once
            # (with the state's HELP note) instead of copying every family on every run
            self._states[name] = ProbeState(
                state.name,
                state.interval_seconds,
                state.timeout_seconds,
                runs=state.runs + 1,
                failures=failures,
                last_success=success,
                last_duration_seconds=duration_seconds,
                last_failure_reason=None if success else reason,
                last_success_wall=wall if success else state.last_success_wall,
                last_success_monotonic=(
                    (time.monotonic() if monotonic is None else monotonic)
                    if success
                    else state.last_success_monotonic
                ),
                last_run_wall=wall,
                families=keep_unchanged(families or (), state.families)
                if success
                else state.families,
                persistent=(
                    state.persistent
                    if persistent is None
                    else keep_unchanged(persistent, state.persistent)
                ),
            )
            self._version += 1

    def snapshot(self) -> dict[str, ProbeState]:
        with self._lock:
            return dict(self._states)
