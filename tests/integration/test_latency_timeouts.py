"""Latency runs that time out still land in their histograms (issue 9 §1), end to end.

A real exporter against a real server that is frozen (SIGSTOP) or lock-stalled (ACCESS
EXCLUSIVE on "Scan" held by another session): the lookups that reached the database and
were given up are observed at the time they were abandoned, so the buckets above the
100 ms threshold grow while the lookups fail, and the p99 alert has data to fire on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import pytest

from gecko_demo import admin
from tests.conftest import GeckoDatabase
from tests.support.exporter_proc import ExporterProcess, Samples, fast_probe_env
from tests.support.wait import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LOOKUP = "gecko_scan_lookup_duration_seconds"
THRESHOLD = 0.1


def buckets(samples: Samples) -> dict[float, float]:
    """le -> cumulative count of the lookup histogram."""
    out: dict[float, float] = {}
    for (name, labels), value in samples.items():
        if name == f"{LOOKUP}_bucket":
            out[float(dict(labels)["le"])] = value
    return out


def above_threshold(b: dict[float, float]) -> float:
    """Observations above 100 ms: the +Inf-side of the threshold bucket."""
    return b[math.inf] - b[THRESHOLD]


def failures(exp: ExporterProcess, reason: str) -> float:
    return exp.value("gecko_probe_failures_total", probe="scan_lookup", reason=reason) or 0


def lookup_env(interval: float, timeout: float) -> dict[str, str]:
    return fast_probe_env(scan_lookup=interval, scan_lookup__timeout_seconds=timeout)


def test_frozen_server_lookups_are_observed_at_their_deadline(
    private_gecko_db: Callable[..., GeckoDatabase],
) -> None:
    """A lookup stuck on a frozen server counts at its deadline; the unreachable ones do not.

    The first lookup caught by the freeze holds its lane until the deadline: observed. Its
    lane is then abandoned; the next ones cannot connect (``unavailable``) or find the lane
    busy: counted as failures, never observed (``gecko_up`` 0 and GeckoDatabaseDown say it).
    """
    db = private_gecko_db()
    cluster = db.require_cluster()
    timeout = 0.4
    with ExporterProcess(db.monitor_dsn, env=lookup_env(0.5, timeout)) as exp:
        exp.wait_ready()
        wait_until(lambda: buckets(exp.metrics()).get(math.inf, 0) >= 2, timeout=15,
                   message="lookups observed")  # fmt: skip
        samples = exp.metrics()
        before, before_sum = buckets(samples), samples[(f"{LOOKUP}_sum", ())]
        timeouts_before = failures(exp, "timeout")
        unreached_before = failures(exp, "unavailable") + failures(exp, "busy")
        cluster.pause()
        try:
            wait_until(
                lambda: (
                    failures(exp, "timeout") >= timeouts_before + 1
                    and failures(exp, "unavailable") + failures(exp, "busy") >= unreached_before + 3
                ),
                timeout=20,
                message="a lookup timed out and later ones could not reach the server",
            )
            during = exp.metrics()
            timed_out = failures(exp, "timeout") - timeouts_before
        finally:
            cluster.resume()
        after = buckets(during)
        grew = above_threshold(after) - above_threshold(before)
        # every timed-out lookup is observed above the threshold, nothing else is
        # (at most one lookup in flight when the freeze began finished normally)
        assert timed_out <= grew <= timed_out + 1, (before, after, timed_out)
        assert after[math.inf] - before[math.inf] <= timed_out + 1
        # ... at the time it was given up: at most its deadline after it got its lane
        added = during[(f"{LOOKUP}_sum", ())] - before_sum
        assert THRESHOLD * timed_out < added <= (timeout + 0.2) * (timed_out + 1)
        assert after[math.inf] == during[(f"{LOOKUP}_count", ())]
        # the lane of the stuck lookup was abandoned a grace after its deadline
        assert any(
            e.get("event") == "lane_abandoned" and e.get("lane") == "app" for e in exp.events()
        )
        # and the lookups come back once the server thaws
        wait_until(lambda: exp.value("gecko_probe_success", probe="scan_lookup") == 1,
                   timeout=30, message="lookup recovered")  # fmt: skip


def test_lock_stalled_lookups_land_above_the_threshold(gecko_db: GeckoDatabase) -> None:
    with ExporterProcess(gecko_db.monitor_dsn, env=lookup_env(0.3, 1.0)) as exp:
        exp.wait_ready()
        wait_until(lambda: buckets(exp.metrics()).get(math.inf, 0) >= 2, timeout=15,
                   message="lookups observed")  # fmt: skip
        holder = admin.connect(
            gecko_db.admin_dsn, application_name="gecko-tests-ddl", autocommit=False
        )
        try:
            before = buckets(exp.metrics())
            locked_before = failures(exp, "lock_timeout")
            holder.execute('LOCK TABLE "Scan" IN ACCESS EXCLUSIVE MODE')
            wait_until(lambda: failures(exp, "lock_timeout") >= locked_before + 5, timeout=20,
                       message="5 lookups hit lock_timeout")  # fmt: skip
            samples = exp.metrics()
        finally:
            holder.close()
        after = buckets(samples)
        refused = failures(exp, "lock_timeout") - locked_before
        grew = above_threshold(after) - above_threshold(before)
        assert grew >= 5, (before, after, refused)
        assert after[THRESHOLD] - before[THRESHOLD] <= 1
        # attempts that reached the database keep counting
        assert samples[(f"{LOOKUP}_count", ())] == after[math.inf]
        wait_until(lambda: exp.value("gecko_probe_success", probe="scan_lookup") == 1,
                   timeout=10, message="lookup recovered")  # fmt: skip
        # every HELP says "sampled" once (the store's note), never twice
        helps = re.findall(r"^# HELP (gecko_\w+) (.*)$", exp.metrics_text(), flags=re.M)
        assert helps
        twice = [name for name, text in helps if text.lower().count("sampled") > 1]
        assert not twice, twice
