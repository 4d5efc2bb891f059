"""A probe timeout longer than its interval is allowed; this is what it means.

``slow_queries`` runs every second with a 2 s timeout by default. Runs of one
probe never overlap: a run that outlasts its interval delays the next one to
the next tick on the original phase (the ticks it covered are skipped: not run,
not counted as failures); a run is abandoned at its timeout (``timeout``), and
ticks that find an abandoned run still unwinding report ``busy``.
"""

from __future__ import annotations

import asyncio
import itertools
import time

from exporter.scheduler import ScheduledProbe
from exporter.settings import load_config
from exporter.store import ResultStore
from tests.support.inprocess import environment
from tests.support.wait import wait_until
from tests.unit.test_scheduler import (
    FakeDatabase,
    ScriptedProbe,
    failures,
    running,
    settings,
    state,
)


def test_timeout_longer_than_interval_is_accepted() -> None:
    with environment({"GECKO_PROBES__REPORT__INTERVAL_SECONDS": "2",
                      "GECKO_PROBES__REPORT__TIMEOUT_SECONDS": "5"}):  # fmt: skip
        report = load_config().probe_settings()["report"]
    assert (report.interval_seconds, report.timeout_seconds) == (2, 5)
    assert load_config().probe_settings()["slow_queries"].timeout_seconds == 2


def test_a_run_longer_than_its_interval_delays_the_next_never_overlaps() -> None:
    active = 0
    most = 0
    starts: list[float] = []

    async def slow(n: int) -> None:
        nonlocal active, most
        del n
        starts.append(time.monotonic())
        active += 1
        most = max(most, active)
        try:
            await asyncio.sleep(0.25)  # longer than the 0.1 s interval, shorter than the timeout
        finally:
            active -= 1

    db, store = FakeDatabase(), ResultStore()
    probe = ScriptedProbe(collect=slow)
    with running(db, store, [ScheduledProbe(probe, settings(interval=0.1, timeout=0.6))]):
        wait_until(lambda: state(store).runs >= 4, timeout=10, message="four runs")
    assert most == 1  # never two runs of one probe at once
    assert all(b - a >= 0.25 for a, b in itertools.pairwise(starts))
    assert failures(store, "busy") == 0  # skipped ticks are not failures
    assert failures(store, "timeout") == 0
    assert state(store).last_success is True


def test_a_run_past_its_timeout_is_a_timeout_and_the_probe_goes_on() -> None:
    async def stuck(n: int) -> None:
        if n == 1:
            await asyncio.sleep(30)

    db, store = FakeDatabase(), ResultStore()
    probe = ScriptedProbe(collect=stuck)
    with running(db, store, [ScheduledProbe(probe, settings(interval=0.1, timeout=0.3))]):
        wait_until(lambda: state(store).last_success, timeout=10, message="a later success")
    assert failures(store, "timeout") == 1
