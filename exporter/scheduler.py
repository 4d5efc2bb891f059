"""Background sampling: every probe on its own interval, with a hard timeout.

One asyncio event loop in one daemon thread runs a task per probe. A run that
exceeds its timeout is reported as failed *at* the deadline (its statement is
cancelled in the background); a probe whose previous run is still unwinding is
reported ``busy``. A stuck probe never delays the others: they have their own
tasks and, unless they share its lane, their own connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from dataclasses import dataclass

import structlog

from exporter.db.session import Database
from exporter.errors import DatabaseError
from exporter.probes.base import Probe
from exporter.settings import ProbeSettings
from exporter.store import ResultStore

log = structlog.get_logger("exporter.scheduler")


@dataclass
class _RunFlags:
    acquired: bool = False

    def mark_acquired(self) -> None:
        self.acquired = True


@dataclass(frozen=True)
class ScheduledProbe:
    probe: Probe
    settings: ProbeSettings


class Scheduler:
    """Runs probes in a background thread until :meth:`stop`."""

    def __init__(
        self,
        db: Database,
        store: ResultStore,
        probes: list[ScheduledProbe],
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.db = db
        self.store = store
        self.probes = probes
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._failing: dict[str, str] = {}
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
        next_run = loop.time() + self._rng.uniform(0, min(interval, 1.0))
        inflight: asyncio.Task[None] | None = None
        while not self._stop.is_set():
            delay = next_run - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=delay)
                if self._stop.is_set():
                    break
            if inflight is not None and not inflight.done():
                self._record_failure(sp, "busy", 0.0, "previous run still unwinding")
            else:
                inflight = await self._run_with_deadline(sp)
            next_run += interval
            if next_run < loop.time():  # overran: skip missed ticks, keep the phase
                missed = int((loop.time() - next_run) // interval) + 1
                next_run += missed * interval
        if inflight is not None and not inflight.done():
            inflight.cancel()
            with contextlib.suppress(BaseException):
                await inflight

    async def _run_with_deadline(self, sp: ScheduledProbe) -> asyncio.Task[None]:
        flags = _RunFlags()
        started = time.perf_counter()
        task = asyncio.create_task(self._run_once(sp, flags, started))
        done, _ = await asyncio.wait({task}, timeout=sp.settings.timeout_seconds)
        if not done:
            task.cancel()
            task.add_done_callback(_consume_exception)
            duration = time.perf_counter() - started
            if flags.acquired:
                self.db.health.unreachable()
                self._record_failure(
                    sp, "timeout", duration, f"no answer within {sp.settings.timeout_seconds}s"
                )
            else:
                self._record_failure(sp, "busy", duration, "connection lane busy")
        return task

    async def _run_once(self, sp: ScheduledProbe, flags: _RunFlags, started: float) -> None:
        probe = sp.probe
        lane = self.db.lane(probe.lane)
        try:
            async with lane.session(
                sp.settings.statement_timeout_seconds, on_acquired=flags.mark_acquired
            ) as session:
                families = await probe.collect(session, time.time())
        except DatabaseError as exc:
            if not exc.reached:
                self.db.health.unreachable()
            self._record_failure(sp, exc.reason, time.perf_counter() - started, str(exc))
            return
        except Exception as exc:  # a bug in a probe must not kill the sampler
            log.exception("probe_error", probe=probe.name)
            self._record_failure(sp, "error", time.perf_counter() - started, type(exc).__name__)
            return
        duration = time.perf_counter() - started
        self.store.record(
            probe.name,
            success=True,
            duration_seconds=duration,
            families=families,
            persistent=probe.persistent(),
        )
        if self._failing.pop(probe.name, None) is not None:
            log.info("probe_recovered", probe=probe.name, duration_seconds=round(duration, 4))

    def _record_failure(
        self, sp: ScheduledProbe, reason: str, duration: float, detail: str
    ) -> None:
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


def _consume_exception(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
