"""Background sampling: every probe on its own interval, with a hard timeout.

One asyncio event loop in one daemon thread runs a task per probe. A run that
exceeds its timeout is reported as failed *at* the deadline (its statement is
cancelled in the background); a probe whose previous run is still unwinding is
reported ``busy``. A stuck probe never delays the others: they have their own
tasks and, unless they share its lane, their own connections. Every probe's
ticks share one phase, so probes due in the same second start in the same
wake-up of the loop (each wake-up costs CPU, more than most of a run's work).

Every iteration of every probe loop is supervised: an exception anywhere (a
probe's ``collect`` or ``persistent``, the store rejecting a record) is logged
as ``probe_error`` with its type, counted as ``reason="error"``, and the loop
goes on. A run that reached the database and was given up (deadline, statement
or lock timeout) is reported to probes that time their runs
(:class:`~exporter.probes.base.ObservesAbandonedRuns`) before its failure is
recorded. A run still not finished a short grace after its deadline gets its
lane abandoned (``Lane.abandon()``): the next run reconnects at once while the
stuck task unwinds on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from exporter.config import ProbeSettings
from exporter.errors import DatabaseError, LockTimeout, StatementTimeout
from exporter.probes.base import ObservesAbandonedRuns, Probe, Session
from exporter.samples import Family
from exporter.store import ResultStore

log = structlog.get_logger("exporter.scheduler")

#: how long a timed-out run may keep unwinding before its lane is abandoned (capped by the timeout)
ABANDON_GRACE_SECONDS = 1.0
#: how long stopping waits for runs that are still unwinding
STOP_GRACE_SECONDS = 2.0


class SchedulerHealth(Protocol):
    def unreachable(self) -> None: ...


class SchedulerLane(Protocol):
    """What the scheduler needs of a connection lane (:class:`exporter.db.session.Lane`)."""

    def session(
        self, statement_timeout_seconds: float, on_acquired: Callable[[], None] | None = None
    ) -> AbstractAsyncContextManager[Session]: ...

    def abandon(self) -> None:
        """Forget the current connection and lock at once (never blocks)."""
        ...


class SchedulerDatabase(Protocol):
    """What the scheduler needs of the database (:class:`exporter.db.session.Database`)."""

    @property
    def health(self) -> SchedulerHealth: ...

    def lane(self, name: str) -> SchedulerLane: ...

    async def close(self) -> None: ...


@dataclass
class _Run:
    """One run of one probe and what the scheduler knows about it."""

    started: float
    acquired_at: float | None = None
    #: the deadline passed and the outcome was recorded then: the task's own outcome is dropped
    timed_out: bool = False
    #: what the run was doing (named in ``probe_error``)
    stage: str = "collect"
    #: its lane was abandoned: the task unwinds on its own, the next run does not wait for it
    abandoned: bool = False
    task: asyncio.Task[None] | None = None

    def mark_acquired(self) -> None:
        self.acquired_at = time.perf_counter()

    def unfinished(self) -> bool:
        return self.task is not None and not self.task.done()


@dataclass
class _LoopState:
    inflight: _Run | None = None
    #: abandoned runs still unwinding (cancelled again when the scheduler stops)
    orphans: set[asyncio.Task[None]] = field(default_factory=set)


@dataclass(frozen=True)
class ScheduledProbe:
    probe: Probe
    settings: ProbeSettings


class Scheduler:
    """Runs probes in a background thread until :meth:`stop`."""

    def __init__(
        self,
        db: SchedulerDatabase,
        store: ResultStore,
        probes: list[ScheduledProbe],
        *,
        rng: random.Random | None = None,
        abandon_grace_seconds: float = ABANDON_GRACE_SECONDS,
    ) -> None:
        self.db = db
        self.store = store
        self.probes = probes
        self.abandon_grace_seconds = abandon_grace_seconds
        self._rng = rng or random.Random()  # noqa: S311 - a phase, not crypto
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._epoch = 0.0
        #: a microsecond apart per probe: probes due together start in this order, those of
        #: a lane grouped by statement_timeout (fewer switches of the lane's setting)
        order = sorted(
            range(len(probes)),
            key=lambda i: (
                probes[i].probe.lane,
                probes[i].settings.statement_timeout_seconds,
                probes[i].probe.name,
            ),
        )
        self._offsets = {id(probes[i]): rank * 1e-6 for rank, i in enumerate(order)}
        self._failing: dict[str, str] = {}
        #: error signatures already logged per probe (cleared when the probe recovers)
        self._errors_logged: dict[str, set[tuple[str, str, str]]] = {}
        for sp in probes:
            store.register(sp.probe.name, sp.settings.interval_seconds, sp.settings.timeout_seconds)

    # -- thread lifecycle -------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._thread_main, name="gecko-sampler", daemon=True)
        self._thread.start()
        self._started.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("sampler_stop_timeout", timeout_seconds=timeout)

    def _thread_main(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        # one phase for every probe (a random offset within the first second): probes due in
        # the same second are due at the same instant and wake the loop once, not each
        self._epoch = self._loop.time() + self._rng.uniform(0, 1.0)
        self._started.set()
        tasks = [
            asyncio.create_task(self._probe_loop(sp), name=f"probe-{sp.probe.name}")
            for sp in self.probes
        ]
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.db.close(), timeout=5)

    # -- probe loop ---------------------------------------------------------
    async def _probe_loop(self, sp: ScheduledProbe) -> None:
        if self._stop is None:  # pragma: no cover - set before tasks are created
            raise RuntimeError("scheduler loop not initialised")
        loop = asyncio.get_running_loop()
        interval = sp.settings.interval_seconds
        epoch = self._epoch + self._offsets.get(id(sp), 0.0)
        # tick n is due at epoch + n * interval (a product, not a running sum: probes whose
        # ticks coincide are due at the very same time, one timer wake-up for all of them)
        tick = 0
        state = _LoopState()
        try:
            while not self._stop.is_set():
                due = epoch + tick * interval
                if due > loop.time():
                    # a plain sleep (stop cancels this task): no task and timeout per tick
                    await _sleep_until(loop, due)
                    if self._stop.is_set():
                        break
                try:
                    await self._tick(sp, state)
                except Exception as exc:  # noqa: BLE001 - supervised: only stop ends the loop
                    self._probe_error(sp, exc, "schedule", 0.0)
                tick += 1
                behind = loop.time() - (epoch + tick * interval)
                if behind > 0:  # overran: skip missed ticks, keep the phase
                    tick += int(behind // interval) + 1
        finally:
            await self._cancel_pending(state)

    async def _cancel_pending(self, state: _LoopState) -> None:
        """On stop: cancel what is still running and wait a bounded time for it to unwind."""
        pending = set(state.orphans)
        if state.inflight is not None and state.inflight.task is not None:
            pending.add(state.inflight.task)
        pending = {t for t in pending if not t.done()}
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=STOP_GRACE_SECONDS)

    async def _tick(self, sp: ScheduledProbe, state: _LoopState) -> None:
        run = state.inflight
        if run is not None and run.unfinished():
            if not run.abandoned:
                self._record_failure(sp, "busy", 0.0, "previous run still unwinding")
                return
            if run.task is not None:  # its lane was abandoned: start afresh beside it
                state.orphans.add(run.task)
                run.task.add_done_callback(state.orphans.discard)
        state.inflight = None
        await self._run_with_deadline(sp, state)

    async def _run_with_deadline(self, sp: ScheduledProbe, state: _LoopState) -> None:
        run = _Run(started=time.perf_counter())
        task = asyncio.create_task(self._run_once(sp, run), name=f"run-{sp.probe.name}")
        task.add_done_callback(_consume_exception)
        run.task = task
        state.inflight = run  # visible to _cancel_pending if the loop is cancelled while waiting
        timeout = sp.settings.timeout_seconds
        # what asyncio.wait({task}, timeout) does, without its sets and callback bookkeeping
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        task.add_done_callback(lambda _: _wake(waiter))
        deadline = loop.call_later(timeout, _wake, waiter)
        try:
            await waiter
        finally:
            deadline.cancel()
        if task.done():
            return
        run.timed_out = True
        task.cancel()
        now = time.perf_counter()
        if run.acquired_at is None:
            self._record_failure(sp, "busy", now - run.started, "connection lane busy")
            return
        grace = min(self.abandon_grace_seconds, timeout)
        asyncio.get_running_loop().call_later(grace, self._abandon_if_stuck, sp, run, grace)
        self.db.health.unreachable()
        self._observe_abandoned(sp, now - run.acquired_at)
        self._record_failure(sp, "timeout", now - run.started, f"no answer within {timeout}s")

    def _abandon_if_stuck(self, sp: ScheduledProbe, run: _Run, grace: float) -> None:
        """Deadline plus grace passed and the run still has not unwound: drop its lane."""
        if not run.unfinished() or run.abandoned:
            return
        try:
            self.db.lane(sp.probe.lane).abandon()
        except Exception as exc:  # noqa: BLE001 - logged; the run stays busy until it unwinds
            self._log_error(sp, exc, "abandon")
            return
        run.abandoned = True
        log.warning(
            "lane_abandoned",
            probe=sp.probe.name,
            lane=sp.probe.lane,
            grace_seconds=grace,
            stuck_seconds=round(time.perf_counter() - run.started, 3),
        )

    async def _run_once(self, sp: ScheduledProbe, run: _Run) -> None:
        try:
            await self._run_and_record(sp, run)
        except Exception as exc:  # noqa: BLE001 - supervised: logged as probe_error and counted
            if not run.timed_out:  # after the deadline the run was counted already
                self._probe_error(sp, exc, run.stage, time.perf_counter() - run.started)

    async def _run_and_record(self, sp: ScheduledProbe, run: _Run) -> None:
        probe = sp.probe
        try:
            families = await self._collect(sp, run)
        except DatabaseError as exc:
            if run.timed_out:  # recorded at the deadline already
                return
            run.stage = "record"
            if not exc.reached:
                self.db.health.unreachable()
            if isinstance(exc, StatementTimeout | LockTimeout) and run.acquired_at is not None:
                # the server gave up on it: it counts at the time it was abandoned; a lock
                # refused at the exporter's short lock_timeout counts at the probe's deadline,
                # since the app's statement (no lock_timeout) would still be queued behind it
                elapsed = time.perf_counter() - run.acquired_at
                if isinstance(exc, LockTimeout):
                    elapsed = max(elapsed, sp.settings.timeout_seconds)
                self._observe_abandoned(sp, elapsed)
            self._record_failure(sp, exc.reason, time.perf_counter() - run.started, str(exc))
            return
        if run.timed_out:  # finished after its deadline: counted as a timeout already
            return
        duration = time.perf_counter() - run.started
        run.stage = "persistent"
        persistent = probe.persistent()
        run.stage = "record"
        self.store.record(
            probe.name,
            success=True,
            duration_seconds=duration,
            families=families,
            persistent=persistent,
        )
        self._errors_logged.pop(probe.name, None)
        if self._failing.pop(probe.name, None) is not None:
            log.info("probe_recovered", probe=probe.name, duration_seconds=round(duration, 4))

    async def _collect(self, sp: ScheduledProbe, run: _Run) -> list[Family]:
        lane = self.db.lane(sp.probe.lane)
        async with lane.session(
            sp.settings.statement_timeout_seconds, on_acquired=run.mark_acquired
        ) as session:
            return await sp.probe.collect(session, time.time())

    @staticmethod
    def _observe_abandoned(sp: ScheduledProbe, elapsed: float) -> None:
        probe = sp.probe
        if isinstance(probe, ObservesAbandonedRuns):
            probe.abandoned(elapsed)

    def _record_failure(
        self, sp: ScheduledProbe, reason: str, duration: float, detail: str
    ) -> None:
        """Count a failed run (raises if the probe or the store does: callers are supervised)."""
        name = sp.probe.name
        self.store.record(
            name,
            success=False,
            duration_seconds=duration,
            reason=reason,
            persistent=sp.probe.persistent(),
        )
        if self._failing.get(name) != reason:  # log transitions, not every failed tick
            self._failing[name] = reason
            log.warning("probe_failed", probe=name, reason=reason, error=detail)

    def _probe_error(self, sp: ScheduledProbe, exc: Exception, stage: str, duration: float) -> None:
        """Log an unexpected exception and count the run as ``reason="error"``; never raises."""
        self._log_error(sp, exc, stage)
        self._failing[sp.probe.name] = "error"
        try:
            self.store.record(
                sp.probe.name,
                success=False,
                duration_seconds=duration,
                reason="error",
                persistent=self._persistent_or_none(sp),
            )
        except Exception as inner:  # noqa: BLE001 - logged; nothing more can be done this tick
            self._log_error(sp, inner, "record_error")

    def _persistent_or_none(self, sp: ScheduledProbe) -> list[Family] | None:
        try:
            return sp.probe.persistent()
        except Exception as exc:  # noqa: BLE001 - logged; the store keeps the previous ones
            self._log_error(sp, exc, "persistent")
            return None

    def _log_error(self, sp: ScheduledProbe, exc: BaseException, stage: str) -> None:
        """``probe_error`` once per (stage, type, place) while the probe keeps failing.

        Only the exception's type and where it was raised are logged: never its
        message or local variables (they may hold rows or connection strings).
        """
        where = _where(exc)
        signature = (stage, type(exc).__name__, where)
        seen = self._errors_logged.setdefault(sp.probe.name, set())
        if signature in seen:
            return
        seen.add(signature)
        log.error(
            "probe_error",
            probe=sp.probe.name,
            stage=stage,
            error_type=type(exc).__name__,
            where=where,
        )


def _where(exc: BaseException) -> str:
    """``file:line in function`` of the innermost frame (no message, no locals)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    parts = last.filename.replace("\\", "/").rsplit("/", 2)
    return f"{'/'.join(parts[-2:])}:{last.lineno} in {last.name}"


async def _sleep_until(loop: asyncio.AbstractEventLoop, when: float) -> None:
    """``asyncio.sleep`` to an absolute loop time (timers due at the same time fire together)."""
    waiter: asyncio.Future[None] = loop.create_future()
    handle = loop.call_at(when, _wake, waiter)
    try:
        await waiter
    finally:
        handle.cancel()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _consume_exception(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
