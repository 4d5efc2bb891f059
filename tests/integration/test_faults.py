"""Faults: the database down, restarted, frozen, exhausted, locked; our session killed.

In each: /metrics keeps answering fast (scrapes never touch the database),
gecko_up and probe success reflect reality, and the exporter recovers on its
own within a couple of intervals.
"""

from __future__ import annotations

import statistics
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import pytest

from gecko_demo import admin
from tests.conftest import GeckoDatabase
from tests.support.exporter_proc import ExporterProcess, fast_probe_env
from tests.support.wait import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: slow_queries runs every second; two intervals plus the 2 s reconnect backoff cap
RECOVERY_TIMEOUT = 8.0
#: scrapes a ScrapeWatcher needs before its latencies are judged
MIN_SCRAPES = 10


@dataclass
class ScrapeWatcher:
    """Scrapes /metrics every 50 ms in a thread and records latencies."""

    url: str
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url + "/metrics", timeout=5) as resp:
                    resp.read()
                self.latencies.append(time.perf_counter() - started)
            except OSError as exc:
                self.errors.append(str(exc))
            self._stop.wait(0.05)

    @contextmanager
    def running(self) -> Iterator[ScrapeWatcher]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield self
            # a fault that heals fast leaves few scrapes: keep watching until there are
            # enough for a percentile (bounded, and the scrapes still count)
            wait_until(
                lambda: len(self.latencies) + len(self.errors) >= MIN_SCRAPES,
                timeout=10,
                message=f"{MIN_SCRAPES} scrapes",
            )
        finally:
            self._stop.set()
            thread.join(10)

    def assert_fast(self) -> None:
        assert not self.errors, self.errors[:3]
        assert len(self.latencies) >= MIN_SCRAPES
        p95 = statistics.quantiles(self.latencies, n=20)[-1]
        # p95 well under 100 ms; even the worst scrape never waited on the database
        assert p95 < 0.1, f"p95 {p95 * 1000:.1f} ms"
        assert max(self.latencies) < 1.0, f"max {max(self.latencies) * 1000:.1f} ms"


def _up(exp: ExporterProcess) -> float | None:
    return exp.value("gecko_up")


def wait_up(exp: ExporterProcess, value: float, timeout: float) -> float:
    started = time.monotonic()
    wait_until(
        lambda: _up(exp) == value, timeout=timeout, interval=0.1, message=f"gecko_up {value}"
    )
    return time.monotonic() - started


def test_database_down_at_start_then_recovers(
    private_gecko_db: Callable[..., GeckoDatabase],
) -> None:
    db = private_gecko_db()
    cluster = db.require_cluster()
    cluster.stop()
    with ExporterProcess(db.monitor_dsn) as exp:
        watcher = ScrapeWatcher(exp.url)
        with watcher.running():
            wait_until(lambda: exp.value("gecko_probe_success", probe="slow_queries") == 0,
                       timeout=10)  # fmt: skip
            assert _up(exp) == 0
            assert exp.get("/readyz")[0] == 503
            failed = exp.value("gecko_probe_failures_total", probe="slow_queries",
                               reason="unavailable")  # fmt: skip
            assert failed is not None
            assert failed >= 1
            cluster.start()
            recovered = wait_up(exp, 1, RECOVERY_TIMEOUT)
            exp.wait_ready(RECOVERY_TIMEOUT)
        watcher.assert_fast()
        events = {e.get("event") for e in exp.events()}
        assert "db_connect_failed" in events and "db_connected" in events
        assert db.monitor_password not in exp.logs_text()
    print(f"recovered {recovered:.2f}s after the server started")


def test_database_restart_mid_run(private_gecko_db: Callable[..., GeckoDatabase]) -> None:
    db = private_gecko_db()
    cluster = db.require_cluster()
    with ExporterProcess(db.monitor_dsn) as exp:
        exp.wait_ready()
        watcher = ScrapeWatcher(exp.url)
        with watcher.running():
            cluster.stop(mode="fast")
            wait_up(exp, 0, 10)
            cluster.start()
            recovered = wait_up(exp, 1, RECOVERY_TIMEOUT)
            wait_until(lambda: exp.value("gecko_probe_success", probe="connections") == 1,
                       timeout=15)  # fmt: skip
        watcher.assert_fast()
    print(f"recovered {recovered:.2f}s after the restart")


def test_exporter_sessions_killed(gecko_db: GeckoDatabase) -> None:
    with ExporterProcess(gecko_db.monitor_dsn) as exp:
        exp.wait_ready()
        wait_until(lambda: exp.value("gecko_probe_success", probe="scan_lookup") == 1, timeout=15)
        with admin.connect(gecko_db.admin_dsn, application_name="gecko-tests") as conn:
            killed = conn.fetchall(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'gecko-exporter' AND datname = current_database()"
            )
        assert killed
        runs = exp.value("gecko_probe_runs_total", probe="slow_queries") or 0
        # new sessions are opened and every lane works again
        wait_until(lambda: (exp.value("gecko_probe_runs_total", probe="slow_queries") or 0)
                   > runs + 3 and exp.value("gecko_probe_success", probe="slow_queries") == 1,
                   timeout=RECOVERY_TIMEOUT)  # fmt: skip
        wait_until(lambda: exp.value("gecko_probe_success", probe="scan_lookup") == 1, timeout=15)
        wait_up(exp, 1, RECOVERY_TIMEOUT)
        with admin.connect(gecko_db.admin_dsn, application_name="gecko-tests") as conn:
            n = conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'gecko-exporter'"
            )
        assert 1 <= int(n) <= 3


def test_database_frozen(private_gecko_db: Callable[..., GeckoDatabase]) -> None:
    db = private_gecko_db()
    cluster = db.require_cluster()
    with ExporterProcess(db.monitor_dsn) as exp:
        exp.wait_ready()
        watcher = ScrapeWatcher(exp.url)
        with watcher.running():
            cluster.pause()
            try:
                wait_up(exp, 0, 10)
                assert exp.get("/readyz")[0] == 503
            finally:
                cluster.resume()
            recovered = wait_up(exp, 1, RECOVERY_TIMEOUT + 10)
        watcher.assert_fast()
        samples = exp.metrics()
        timeouts = sum(
            v for (name, labels), v in samples.items()
            if name == "gecko_probe_failures_total" and ("reason", "timeout") in labels
        )  # fmt: skip
        assert timeouts >= 1  # the probe caught by the freeze gave up at its deadline
    print(f"recovered {recovered:.2f}s after SIGCONT")


def test_max_connections_exhausted_by_other_clients(
    private_gecko_db: Callable[..., GeckoDatabase],
) -> None:
    db = private_gecko_db(max_connections="15", superuser_reserved_connections="2")
    with (
        ExporterProcess(db.monitor_dsn, env=fast_probe_env(connections=0.5)) as exp,
        ExitStack() as st,
    ):
        exp.wait_ready()
        wait_until(lambda: exp.value("gecko_probe_success", probe="scan_lookup") == 1, timeout=15)
        opened = 0
        while True:  # superuser connections take every slot, reserved ones included
            try:
                st.enter_context(admin.connect(db.admin_dsn, application_name="gecko-tests-hog"))
                opened += 1
            except admin.AdminError:
                break
            assert opened < 20
        runs = exp.value("gecko_probe_runs_total", probe="connections") or 0
        wait_until(lambda: (exp.value("gecko_probe_runs_total", probe="connections") or 0) > runs + 2,
                   timeout=10)  # fmt: skip
        # the exporter kept its persistent sessions: it still reports, and reports the saturation
        assert _up(exp) == 1
        assert exp.value("gecko_probe_success", probe="connections") == 1
        assert (exp.value("gecko_connection_pool_utilization_ratio", pool="server") or 0) >= 1.0


def test_access_exclusive_lock_on_scan(gecko_db: GeckoDatabase) -> None:
    lock_timeout = 0.1
    env = fast_probe_env(scan_lookup=0.2, report=0.5)
    with ExporterProcess(gecko_db.monitor_dsn, env=env) as exp:
        exp.wait_ready()
        wait_until(lambda: exp.value("gecko_probe_success", probe="scan_lookup") == 1, timeout=15)
        holder = admin.connect(
            gecko_db.admin_dsn, application_name="gecko-tests-ddl", autocommit=False
        )
        observer = admin.connect(gecko_db.admin_dsn, application_name="gecko-tests-observer")
        watcher = ScrapeWatcher(exp.url)
        max_waiting = 0
        longest_wait = 0.0
        try:
            with watcher.running():
                holder.execute('LOCK TABLE "Scan" IN ACCESS EXCLUSIVE MODE')
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    rows = observer.fetchall(
                        "SELECT EXTRACT(EPOCH FROM clock_timestamp() - l.waitstart)::float8 "
                        "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                        "WHERE NOT l.granted AND a.application_name = 'gecko-exporter'"
                    )
                    max_waiting = max(max_waiting, len(rows))
                    longest_wait = max([longest_wait, *[float(r[0] or 0) for r in rows]])
                    time.sleep(0.02)
                lock_failures = exp.value("gecko_probe_failures_total", probe="scan_lookup",
                                          reason="lock_timeout")  # fmt: skip
                assert _up(exp) == 1  # the database answers, it is only locked
                assert exp.value("gecko_probe_success", probe="slow_queries") == 1
        finally:
            holder.close()
            observer.close()
        watcher.assert_fast()
        assert lock_failures is not None and lock_failures >= 5
        assert max_waiting <= 1, f"{max_waiting} exporter backends waited at once"
        # never longer than lock_timeout (plus the observer's sampling granularity)
        assert longest_wait <= lock_timeout + 0.05, longest_wait
        wait_until(lambda: exp.value("gecko_probe_success", probe="scan_lookup") == 1,
                   timeout=RECOVERY_TIMEOUT)  # fmt: skip
    print(
        f"max exporter backends waiting: {max_waiting}; longest wait {longest_wait * 1000:.0f} ms"
    )
