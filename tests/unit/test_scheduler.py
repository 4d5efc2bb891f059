"""The scheduler with a fake database: supervision, timeouts, abandoned runs and lanes.

The fake lane implements the scheduler's view of a lane (``session`` with
``on_acquired``, ``abandon``) around an asyncio lock; probes see a fake
:class:`~exporter.probes.base.Session` whose statements the test scripts. No
driver is involved: real-server behaviour is covered by
tests/integration/test_latency_timeouts.py.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    MutableMapping,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
from structlog.testing import capture_logs

from exporter.config import ProbeSettings
from exporter.errors import DatabaseError, DatabaseUnavailable, LockTimeout, StatementTimeout
from exporter.probes.base import LaneName, Params, Row, Session
from exporter.probes.latency import ReportProbe, ScanLookupProbe
from exporter.probes.sampling import RecentScanSampler
from exporter.samples import Family, Histogram, gauge, histogram
from exporter.scheduler import ScheduledProbe, Scheduler, SchedulerHealth
from exporter.store import ProbeState, ResultStore
from tests.support.wait import wait_until

Behaviour = Callable[[str], Awaitable[list[Row]]]


async def answer(sql: str) -> list[Row]:
    del sql
    return [{"id": "1", "slug": "s1", "normalizedInput": "https://a.example/"}]


class FakeSession:
    server_version = 180000
    backend_pid = 4242

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour

    async def fetch(
        self, sql: str, params: Params = None, *, prepare: bool | None = None
    ) -> list[Row]:
        del params, prepare
        return await self.behaviour(sql)

    async def fetch_one(
        self, sql: str, params: Params = None, *, prepare: bool | None = None
    ) -> Row | None:
        rows = await self.fetch(sql, params, prepare=prepare)
        return rows[0] if rows else None


class FakeLane:
    def __init__(self) -> None:
        self.behaviour: Behaviour = answer
        self._lock = asyncio.Lock()
        self.abandoned = 0
        self.sessions = 0
        #: statement_timeout of every session, in the order they were asked for
        self.timeouts: list[float] = []

    @asynccontextmanager
    async def _session(self, on_acquired: Callable[[], None] | None) -> AsyncIterator[FakeSession]:
        async with self._lock:
            if on_acquired is not None:
                on_acquired()
            self.sessions += 1
            yield FakeSession(self.behaviour)

    def session(
        self, statement_timeout_seconds: float, on_acquired: Callable[[], None] | None = None
    ) -> Any:
        self.timeouts.append(statement_timeout_seconds)
        return self._session(on_acquired)

    def abandon(self) -> None:
        self.abandoned += 1
        self._lock = asyncio.Lock()  # the stuck run keeps the old one


class FakeHealth(SchedulerHealth):
    def __init__(self) -> None:
        self.unreachable_calls = 0

    def unreachable(self) -> None:
        self.unreachable_calls += 1


class FakeDatabase:
    def __init__(self) -> None:
        self._health = FakeHealth()
        self.lanes = {name: FakeLane() for name in ("activity", "app", "catalog")}

    @property
    def health(self) -> FakeHealth:
        return self._health

    def lane(self, name: str) -> FakeLane:
        return self.lanes[name]

    async def close(self) -> None:
        return None


class ScriptedProbe:
    """A probe whose collect and persistent the test scripts."""

    def __init__(
        self,
        name: str = "scan_lookup",
        lane: LaneName = "activity",
        *,
        collect: Callable[[int], Awaitable[None]] | None = None,
        persistent_fails: Callable[[int], bool] = lambda n: False,
    ) -> None:
        self.name = name
        self.lane: LaneName = lane
        self.calls = 0
        self.persistent_calls = 0
        self._collect = collect
        self._persistent_fails = persistent_fails

    async def collect(self, session: Session, now: float) -> list[Family]:
        del now
        self.calls += 1
        await session.fetch("SELECT 1")
        if self._collect is not None:
            await self._collect(self.calls)
        return [gauge("gecko_scripted_value", "A value.", float(self.calls))]

    def persistent(self) -> list[Family]:
        self.persistent_calls += 1
        if self._persistent_fails(self.persistent_calls):
            raise RuntimeError("persistent broke")
        h = Histogram()
        return [histogram("gecko_scripted_seconds", "Seconds.", [h.snapshot()])]


def settings(interval: float = 0.05, timeout: float = 0.5) -> ProbeSettings:
    return ProbeSettings(interval_seconds=interval, timeout_seconds=timeout)


@contextmanager
def running(
    db: FakeDatabase,
    store: ResultStore,
    probes: list[ScheduledProbe],
    **kwargs: Any,
) -> Iterator[Scheduler]:
    scheduler = Scheduler(db, store, probes, **kwargs)
    scheduler.start()
    try:
        yield scheduler
    finally:
        scheduler.stop(timeout=10)


def state(store: ResultStore, name: str = "scan_lookup") -> ProbeState:
    return store.snapshot()[name]


def failures(store: ResultStore, reason: str, name: str = "scan_lookup") -> int:
    return dict(state(store, name).failures).get(reason, 0)


def events(logs: Sequence[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e.get("event") == name]


def bucket_count(probe: ScanLookupProbe | ReportProbe, le: float) -> float:
    return dict(probe.histogram.snapshot().buckets)[le]


# -- supervision ----------------------------------------------------------------------


def test_collect_raising_is_logged_counted_and_the_loop_goes_on() -> None:
    async def collect(n: int) -> None:
        if n <= 3:
            {"secret-row": 1}["missing"]  # a probe bug: KeyError

    db, store = FakeDatabase(), ResultStore()
    probe = ScriptedProbe(collect=collect)
    with capture_logs() as logs, running(db, store, [ScheduledProbe(probe, settings())]):
        wait_until(lambda: state(store).runs >= 6, timeout=10, message="6 runs")
    assert failures(store, "error") == 3
    assert state(store).last_success is True
    errors = events(logs, "probe_error")
    assert len(errors) == 1, errors  # the same error again is counted, not logged again
    (error,) = errors
    assert error["error_type"] == "KeyError" and error["stage"] == "collect"
    assert "test_scheduler.py" in error["where"]
    assert "secret-row" not in repr(logs) and "missing" not in repr(error)
    assert "exc_info" not in error  # no traceback, no locals
    assert events(logs, "probe_recovered")


def test_persistent_raising_after_success_and_after_timeout_is_supervised() -> None:
    async def collect(n: int) -> None:
        if n == 2:
            await asyncio.sleep(10)  # times out

    db, store = FakeDatabase(), ResultStore()
    probe = ScriptedProbe(collect=collect, persistent_fails=lambda n: n in (1, 2, 3))
    sp = ScheduledProbe(probe, settings(interval=0.05, timeout=0.2))
    with capture_logs() as logs, running(db, store, [sp]):
        wait_until(lambda: state(store).runs >= 6, timeout=10, message="6 runs")
    # run 1 (success path) and run 2 (timeout path) failed to build persistent families
    assert failures(store, "error") >= 2
    assert state(store).last_success is True
    stages = {e["stage"] for e in events(logs, "probe_error")}
    assert "persistent" in stages
    assert all(e["error_type"] == "RuntimeError" for e in events(logs, "probe_error"))
    assert state(store).persistent  # persistent families were stored once it worked


class RejectingStore(ResultStore):
    """A store that rejects the first few records (e.g. a bug in a renderer's validation)."""

    def __init__(self, rejections: int) -> None:
        super().__init__()
        self.rejections = rejections

    def record(self, name: str, **kwargs: Any) -> None:
        if self.rejections > 0:
            self.rejections -= 1
            raise OSError("store unavailable")
        super().record(name, **kwargs)


def test_store_rejecting_records_does_not_end_the_loop() -> None:
    db, store = FakeDatabase(), RejectingStore(rejections=5)
    probe = ScriptedProbe()
    with capture_logs() as logs, running(db, store, [ScheduledProbe(probe, settings())]):
        wait_until(lambda: state(store).runs >= 3, timeout=10, message="records again")
    assert probe.calls >= 4
    assert state(store).last_success is True
    assert {e["error_type"] for e in events(logs, "probe_error")} == {"OSError"}


class BogusReason(DatabaseError):
    reason = "not_a_reason"


def test_failure_reason_the_store_rejects_counts_as_error() -> None:
    async def collect(n: int) -> None:
        if n <= 2:
            raise BogusReason("odd")

    db, store = FakeDatabase(), ResultStore()
    probe = ScriptedProbe(collect=collect)
    with capture_logs() as logs, running(db, store, [ScheduledProbe(probe, settings())]):
        wait_until(lambda: state(store).runs >= 4, timeout=10, message="4 runs")
    assert failures(store, "error") == 2
    assert [e["error_type"] for e in events(logs, "probe_error")] == ["ValueError"]


def test_busy_path_persistent_raising_is_supervised() -> None:
    """The busy path (previous run still unwinding) records too: a failure there is caught."""

    async def collect(n: int) -> None:
        if n == 1:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                await asyncio.sleep(0.25)  # unwinding, within the abandon grace
                raise

    db, store = FakeDatabase(), ResultStore()
    probe = ScriptedProbe(collect=collect, persistent_fails=lambda n: n == 2)
    sp = ScheduledProbe(probe, settings(interval=0.1, timeout=0.3))
    with capture_logs() as logs, running(db, store, [sp], abandon_grace_seconds=5):
        wait_until(lambda: state(store).last_success, timeout=10, message="a success")
    assert failures(store, "timeout") == 1
    assert failures(store, "error") == 1  # the first busy tick, whose persistent() raised
    assert failures(store, "busy") >= 1  # the loop went on reporting busy
    assert [e["stage"] for e in events(logs, "probe_error")] == ["schedule"]
    assert db.lanes["activity"].abandoned == 0


def test_stop_while_a_run_is_unwinding_is_clean() -> None:
    unwinding = asyncio.Event()

    async def collect(n: int) -> None:
        del n
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            unwinding.set()
            await asyncio.sleep(30)  # waits for a cancel reply that never comes
            raise

    db, store = FakeDatabase(), ResultStore()
    probe = ScriptedProbe(collect=collect)
    sp = ScheduledProbe(probe, settings(interval=0.1, timeout=0.1))
    scheduler = Scheduler(db, store, [sp], abandon_grace_seconds=30)
    with capture_logs() as logs:
        scheduler.start()
        try:
            wait_until(lambda: failures(store, "busy") >= 1, timeout=10, message="busy")
        finally:
            started = time.monotonic()
            scheduler.stop(timeout=10)
        took = time.monotonic() - started
    assert scheduler._thread is not None and not scheduler._thread.is_alive()
    assert took < 5, took
    assert failures(store, "timeout") == 1
    assert not events(logs, "probe_error")
    assert not events(logs, "sampler_stop_timeout")


# -- abandoned latency runs -------------------------------------------------------------


def is_lookup(sql: str) -> bool:
    """The dedupe lookup (not the sample refresh)."""
    return '"finishedAt" >= %s' in sql


def lookup_probe() -> ScanLookupProbe:
    sampler = RecentScanSampler("public", sample_size=5, refresh_seconds=300)
    return ScanLookupProbe("public", sampler)


def test_lookup_timing_out_after_acquiring_is_observed_at_the_deadline() -> None:
    async def hang(sql: str) -> list[Row]:
        if is_lookup(sql):
            await asyncio.sleep(30)
        return await answer(sql)

    db, store = FakeDatabase(), ResultStore()
    probe = lookup_probe()
    db.lanes["app"].behaviour = hang
    sp = ScheduledProbe(probe, settings(interval=0.3, timeout=0.25))
    with running(db, store, [sp], abandon_grace_seconds=0.05):
        wait_until(lambda: failures(store, "timeout") >= 3, timeout=10, message="3 timeouts")
        stored = state(store)
    assert probe.histogram.count >= 3
    assert bucket_count(probe, 0.1) == 0  # every one lands above the 100 ms threshold
    assert bucket_count(probe, 0.25) <= 1  # observed at ~the 250 ms deadline
    # the store holds the histogram as updated by the timeouts (persistent re-read)
    (hist,) = [f for f in stored.persistent if f.name == "gecko_scan_lookup_duration_seconds"]
    assert hist.histograms[0].count >= 3
    assert hist.histograms[0].total >= 3 * 0.2


def test_stuck_run_gets_its_lane_abandoned_once_and_the_next_run_reconnects() -> None:
    calls = 0

    async def stuck_once(sql: str) -> list[Row]:
        nonlocal calls
        calls += 1
        if calls == 2:  # the lookup of the first run (the first call refreshes the sample)
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                await asyncio.sleep(60)  # a partition: the cancel reply never comes
                raise
        return await answer(sql)

    db, store = FakeDatabase(), ResultStore()
    probe = lookup_probe()
    db.lanes["app"].behaviour = stuck_once
    sp = ScheduledProbe(probe, settings(interval=0.5, timeout=0.3))
    with capture_logs() as logs, running(db, store, [sp], abandon_grace_seconds=0.1):
        wait_until(lambda: state(store).last_success, timeout=10, message="recovered")
        wait_until(lambda: state(store).runs >= 4, timeout=10, message="4 runs")
    assert db.lanes["app"].abandoned == 1
    (event,) = events(logs, "lane_abandoned")
    assert event["lane"] == "app" and event["probe"] == "scan_lookup"
    assert failures(store, "timeout") == 1
    assert failures(store, "busy") == 0  # the next run did not wait for the stuck one


def test_busy_lane_is_not_observed_but_counted() -> None:
    async def hold(n: int) -> None:
        if n == 1:
            await asyncio.sleep(1.0)  # holds the app lane past the lookup's deadline

    db, store = FakeDatabase(), ResultStore()
    lookup = lookup_probe()
    holder = ScriptedProbe("report", "app", collect=hold)
    probes = [
        ScheduledProbe(holder, settings(interval=30, timeout=5)),
        ScheduledProbe(lookup, settings(interval=0.2, timeout=0.15)),
    ]
    with running(db, store, probes):
        wait_until(lambda: failures(store, "busy") >= 2, timeout=10, message="busy")
        wait_until(lambda: state(store).last_success, timeout=10, message="lookup ok")
    assert failures(store, "timeout") == 0
    assert lookup.histogram.count == state(store).runs - failures(store, "busy")
    assert bucket_count(lookup, 0.1) == lookup.histogram.count  # only the real, fast ones


@pytest.mark.parametrize(
    ("error", "reason", "observed"),
    [
        (StatementTimeout("statement cancelled"), "timeout", True),
        (LockTimeout("lock_timeout"), "lock_timeout", True),
        (DatabaseUnavailable("refused"), "unavailable", False),
        (DatabaseError("SQLSTATE 42P01: missing"), "query_error", False),
    ],
)
def test_server_side_cancellations_are_observed(
    error: DatabaseError, reason: str, observed: bool
) -> None:
    async def fail(sql: str) -> list[Row]:
        if is_lookup(sql):
            await asyncio.sleep(0.12)  # the server gave up after 120 ms
            raise error
        return await answer(sql)

    db, store = FakeDatabase(), ResultStore()
    probe = lookup_probe()
    db.lanes["app"].behaviour = fail
    with running(db, store, [ScheduledProbe(probe, settings(interval=0.05, timeout=1))]):
        wait_until(lambda: failures(store, reason) >= 3, timeout=10, message=reason)
    assert probe.histogram.count == (failures(store, reason) if observed else 0)
    if observed:
        assert bucket_count(probe, 0.1) == 0
        if reason == "lock_timeout":  # the app would still be queued: counted at the 1 s deadline
            assert bucket_count(probe, 0.5) == 0
            assert bucket_count(probe, 1.0) == probe.histogram.count
        else:  # counted when the server gave up, ~120 ms
            assert bucket_count(probe, 0.25) == probe.histogram.count
        assert db.health.unreachable_calls == 0  # the server answered


def test_report_abandoned_above_the_critical_threshold() -> None:
    probe = ReportProbe("public", RecentScanSampler("public", sample_size=5, refresh_seconds=300))
    probe.abandoned(8.0)  # statement_timeout of the default 10 s deadline
    probe.abandoned(10.0)
    buckets = dict(probe.histogram.snapshot().buckets)
    assert buckets[5.0] == 0 and buckets[10.0] == 2
    (hist, _) = probe.persistent()
    assert hist.histograms[0].count == 2


# -- cadence ----------------------------------------------------------------------------


def test_probes_due_in_the_same_second_start_in_the_same_wake_up() -> None:
    """Every probe's ticks share one phase: a probe every 0.2 s and one every 0.1 s (on other
    lanes) start together at every 0.2 s tick, one timer wake-up instead of two (each wake-up
    costs CPU). With a phase per probe (seed 3: 0.024 s apart) they never would."""
    import random  # noqa: PLC0415

    starts: dict[str, list[float]] = {"fast": [], "slow": []}

    def probe(name: str, lane: LaneName) -> ScriptedProbe:
        async def collect(n: int) -> None:
            del n
            starts[name].append(asyncio.get_running_loop().time())

        return ScriptedProbe(name, lane, collect=collect)

    db, store = FakeDatabase(), ResultStore()
    scheduled = [
        ScheduledProbe(probe("fast", "activity"), settings(interval=0.1)),
        ScheduledProbe(probe("slow", "catalog"), settings(interval=0.2)),
    ]
    with running(db, store, scheduled, rng=random.Random(3)):
        wait_until(lambda: len(starts["slow"]) >= 5, timeout=10, message="5 slow runs")
    for slow in starts["slow"]:
        gap = min(abs(slow - fast) for fast in starts["fast"])
        assert gap < 0.002, (gap, starts)


def test_probes_due_together_on_a_lane_start_grouped_by_statement_timeout() -> None:
    """A lane switches its statement_timeout when the next probe's differs (a round trip):
    probes due at the same time start in order of their timeouts, so the lane switches
    twice per cycle of the slow probes (there and back), not once per probe."""
    db, store = FakeDatabase(), ResultStore()
    scheduled = [
        ScheduledProbe(ScriptedProbe("connections"), settings(interval=0.2, timeout=3)),
        ScheduledProbe(ScriptedProbe("slow_queries"), settings(interval=0.1, timeout=2)),
        ScheduledProbe(ScriptedProbe("locks"), settings(interval=0.2, timeout=3)),
    ]
    lane = db.lanes["activity"]
    with running(db, store, scheduled):
        wait_until(lambda: len(lane.timeouts) >= 24, timeout=10, message="24 sessions")
    timeouts = lane.timeouts[:24]
    switches = sum(1 for a, b in itertools.pairwise(timeouts) if a != b)
    cycles = timeouts.count(2.4) // 2  # each cycle: connections and locks once
    assert switches <= 2 * cycles, timeouts
