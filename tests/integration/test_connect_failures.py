"""Connection failures neither hammer the server nor flood the log.

A wrong password makes every lane wait on one shared backoff (the login
attempts are counted where the server would see them: connections accepted by
a loopback proxy in front of it); an unreachable server gives one log line per
lane state change, not one per retry; both are counted by bounded reason.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from gecko_demo import admin
from tests.conftest import GeckoDatabase
from tests.support.exporter_proc import ExporterProcess
from tests.support.tcp_proxy import TcpProxy
from tests.support.wait import free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LANES = 3


@pytest.fixture
def proxy(gecko_db: GeckoDatabase) -> Iterator[TcpProxy]:
    with TcpProxy.for_dsn(gecko_db.monitor_dsn) as p:
        yield p


def _connect_lines(exp: ExporterProcess) -> list[dict[str, object]]:
    return [e for e in exp.events() if e.get("event") == "db_connect_failed"]


def test_wrong_password_costs_a_handful_of_logins(gecko_db: GeckoDatabase, proxy: TcpProxy) -> None:
    wrong = "wrong-Pa55word"
    dsn = proxy.proxied(admin.dsn_replace(gecko_db.monitor_dsn, password=wrong))
    # a shorter shared backoff than the default 10 s -> 300 s, so the window stays short:
    # logins at 0 s (each lane at most once), then 2 s, 6 s, 14 s for all lanes together
    env = {
        "GECKO_AUTH_FAILURE_BACKOFF_INITIAL_SECONDS": "2",
        "GECKO_AUTH_FAILURE_BACKOFF_MAX_SECONDS": "8",
    }
    window = 16.0
    with ExporterProcess(dsn, env=env) as exp:
        started = time.monotonic()
        wait_until(lambda: proxy.accepted >= 1, timeout=10, message="a first login")
        time.sleep(max(0.0, window - (time.monotonic() - started)))
        logins = proxy.accepted
        # per-lane backoff alone (0.25 s doubling to 2 s) would be about 3 x 10 logins here
        assert logins <= LANES + 3, f"{logins} logins in {window:.0f}s"
        assert exp.value("gecko_up") == 0
        counted = wait_until(
            lambda: exp.value("gecko_database_connect_failures_total", reason="auth"),
            timeout=5,
        )
        assert counted >= logins - 1  # the exporter counts what the server saw (a scrape lags)
        assert exp.value("gecko_database_connect_failures_total", reason="refused") == 0
        lines = _connect_lines(exp)
        assert 1 <= len(lines) <= LANES, lines  # one per lane that changed state
        assert {line.get("reason") for line in lines} == {"auth"}
        logs = exp.logs_text()
    assert wrong not in logs
    assert gecko_db.monitor_password not in logs
    print(f"wrong password: {logins} login attempts in {window:.0f}s")


def test_unreachable_server_logs_state_changes_not_retries() -> None:
    port = free_port()  # nothing listens there: every attempt is refused
    dsn = f"postgresql://gecko_monitor:S3cret-unused@127.0.0.1:{port}/privacy"
    with ExporterProcess(dsn) as exp:
        # per-lane retries every 0.25 -> 2 s: a dozen or more attempts in this window
        refused = exp.wait_value(
            "gecko_database_connect_failures_total",
            lambda v: v >= 12,
            timeout=20,
            labels={"reason": "refused"},
        )
        lines = _connect_lines(exp)
        logs = exp.logs_text()
    assert 1 <= len(lines) <= LANES, [line.get("lane") for line in lines]
    assert len({line.get("lane") for line in lines}) == len(lines)  # once per lane
    assert all(line.get("log_level", line.get("level")) == "warning" for line in lines)
    assert {line.get("reason") for line in lines} == {"refused"}
    # the summary comes at most once a minute: none yet in this short window
    assert "db_connect_failures_summary" not in logs
    assert "S3cret-unused" not in logs
    print(f"unreachable server: {refused:.0f} refused attempts, {len(lines)} log lines")
