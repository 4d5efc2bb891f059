"""End to end: exporter on a real PostgreSQL -> Prometheus with the shipped rules ->
Alertmanager with the example configuration -> a webhook receiver in this test.

Thresholds are the real ones; only `for` durations (and the slow-query counter window)
are shortened, by generating a rules file from the same single source with overrides.
Each scenario prints the time from the threshold crossing to the webhook delivery.
The tests share one PostgreSQL server (GeckoDatabaseDown stops it and starts it again);
each gets its own exporter, Prometheus, Alertmanager and webhook receiver.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psycopg
import pytest

from tests.alerting.conftest import (
    Stack,
    alert_notification,
    check_annotations,
    e2e_stack,
    ensure_running,
    report,
)
from tests.conftest import GeckoDatabase
from tests.support.exporter_proc import fast_probe_env
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

#: Short `for`s so the test takes seconds; thresholds stay at their real values.
E2E_OVERRIDES: dict[str, float | str] = {
    "slowQueryRecentWindow": "10s",
    "poolUtilizationFor": "2s",
    "poolUtilizationCriticalFor": "2s",
    "databaseDownFor": "2s",
}
POOL_APP = "gecko-e2e-app"
POOL_SIZE = 10
SLEEP_SECONDS = 9.0


@pytest.fixture
def stack(
    tmp_path: Path,
    shared_gecko_db: GeckoDatabase,
    prometheus_bin: str,
    alertmanager_bin: str,
) -> Iterator[Stack]:
    """A fresh exporter, Prometheus, Alertmanager and webhook per test, on the module's
    PostgreSQL server (one server for the module: building one per test cost ~2s each)."""
    db = ensure_running(shared_gecko_db)
    env = fast_probe_env(slow_queries=0.5, connections=0.5, server=1)
    env["GECKO_UP_STALE_SECONDS"] = "2"
    config = {"pools": [{"name": "app", "application_name": POOL_APP, "size": POOL_SIZE}]}
    with e2e_stack(tmp_path, db, overrides=E2E_OVERRIDES, env=env, config=config) as s:
        wait_until(
            lambda: s.prometheus.query("gecko_connection_pool_utilization_ratio"),
            timeout=30,
            message="pool metrics in Prometheus",
        )
        yield s


@contextmanager
def running_query(dsn: str, seconds: float) -> Iterator[float]:
    """``SELECT pg_sleep(seconds)`` in another session; yields its monotonic start."""
    conn = psycopg.connect(dsn, application_name="gecko-e2e-sleeper", autocommit=True)
    started = threading.Event()
    start_time: list[float] = []

    def run() -> None:
        start_time.append(time.monotonic())
        started.set()
        conn.execute("SELECT pg_sleep(%s)", (seconds,))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        started.wait(5)
        yield start_time[0]
    finally:
        thread.join(seconds + 15)
        conn.close()


def test_slow_query_pages_while_running_and_resolves(stack: Stack) -> None:
    with running_query(stack.db.admin_dsn, SLEEP_SECONDS) as started:
        crossing = started + 5.0
        firing = alert_notification(
            stack.hook,
            alertname="GeckoSlowQuery",
            status="firing",
            severity="warning",
            since=started,
            timeout=40,
        )
        still_running = time.monotonic() < started + SLEEP_SECONDS
    assert still_running, "the notification must arrive while the query still runs"
    report(
        "GeckoSlowQuery crossing 5s -> firing webhook",
        firing.delivery.received_monotonic - crossing,
    )
    assert firing.delivery.path == "/tickets"
    assert firing.delivery.payload["receiver"] == "tickets"
    assert firing.alert["labels"] == {
        "alertname": "GeckoSlowQuery",
        "severity": "warning",
        "job": "gecko-exporter",
        "instance": stack.instance,
    }
    check_annotations(
        firing.alert,
        "GeckoSlowQuery",
        rf"An application query in the monitored database on {re.escape(stack.instance)} has run"
        r" for at least \d+(\.\d+)?s \(threshold 5s; includes queries seen slow in the last 10s\)\."
        r" Index builds, VACUUM, ANALYZE and backups are not counted here\.",
    )
    ran_for = re.search(r"at least (\d+(?:\.\d+)?)s", firing.alert["annotations"]["description"])
    assert ran_for is not None
    assert 5 <= float(ran_for.group(1)) <= SLEEP_SECONDS + 1

    ended = started + SLEEP_SECONDS
    resolved = alert_notification(
        stack.hook,
        alertname="GeckoSlowQuery",
        status="resolved",
        severity="warning",
        since=firing.delivery.received_monotonic,
        timeout=60,
    )
    report(
        "GeckoSlowQuery query end -> resolved webhook (10s counter window)",
        resolved.delivery.received_monotonic - ended,
    )
    assert resolved.alert["labels"] == firing.alert["labels"]
    assert resolved.alert["endsAt"] > resolved.alert["startsAt"]
    # the 300 s critical tier never fired
    assert not any(
        a["labels"]["alertname"] == "GeckoSlowQuery" and a["labels"]["severity"] == "critical"
        for d in stack.hook.deliveries
        for a in d.payload["alerts"]
    )


def test_pool_saturation_tickets_then_pages_and_inhibits_the_warning(stack: Stack) -> None:
    dsn = stack.db.admin_dsn
    with ExitStack() as conns:

        def hold_one() -> float:
            conn = conns.enter_context(psycopg.connect(dsn, application_name=POOL_APP))
            conn.execute("SELECT 1")  # leaves the session idle in transaction: in use
            return time.monotonic()

        for _ in range(8):
            hold_one()
        # 8/10 = 0.8 is not above the threshold: not even pending after 3s at 0.8
        wait_until(
            lambda: stack.prometheus.query(
                'min_over_time(gecko_connection_pool_utilization_ratio{pool="app"}[3s]) == 0.8'
                ' and max_over_time(gecko_connection_pool_utilization_ratio{pool="app"}[3s])'
                " == 0.8"
            ),
            timeout=20,
            message="pool at exactly 80% for 3s",
        )
        assert stack.prometheus.query('ALERTS{alertname="GeckoConnectionPoolSaturated"}') == []
        crossing = hold_one()  # 9/10 = 0.9
        warning = alert_notification(
            stack.hook,
            alertname="GeckoConnectionPoolSaturated",
            status="firing",
            severity="warning",
            since=crossing,
            timeout=40,
        )
        report(
            "GeckoConnectionPoolSaturated (warning) crossing 80% -> webhook, for=2s",
            warning.delivery.received_monotonic - crossing,
        )
        assert warning.delivery.path == "/tickets"
        assert warning.alert["labels"] == {
            "alertname": "GeckoConnectionPoolSaturated",
            "severity": "warning",
            "job": "gecko-exporter",
            "instance": stack.instance,
            "pool": "app",
        }
        check_annotations(
            warning.alert,
            "GeckoConnectionPoolSaturated",
            rf"Pool app on {re.escape(stack.instance)} is 90% in use \(warning threshold 80%\)\.",
        )
        assert not [
            a
            for d in stack.hook.deliveries
            for a in d.payload["alerts"]
            if a["labels"]["alertname"] == "GeckoConnectionPoolSaturated"
            and a["labels"]["pool"] != "app"
        ]

        crossing = hold_one()  # 10/10 = 1.0 > 0.95
        critical = alert_notification(
            stack.hook,
            alertname="GeckoConnectionPoolSaturated",
            status="firing",
            severity="critical",
            since=crossing,
            timeout=40,
        )
        report(
            "GeckoConnectionPoolSaturated (critical) crossing 95% -> webhook, for=2s",
            critical.delivery.received_monotonic - crossing,
        )
        assert critical.delivery.path == "/pager"
        check_annotations(
            critical.alert,
            "GeckoConnectionPoolSaturated",
            rf"Pool app on {re.escape(stack.instance)} is 100% in use \(critical threshold 95%\): "
            r"new connections are about to be refused\.",
        )

        def warning_inhibited() -> bool:
            alerts = stack.alertmanager.alerts(
                alertname="GeckoConnectionPoolSaturated", severity="warning"
            )
            return bool(alerts) and bool(alerts[0]["status"]["inhibitedBy"])

        wait_until(warning_inhibited, timeout=15, message="warning inhibited by the critical")


def test_database_down_pages_and_recovers(stack: Stack) -> None:
    cluster = stack.db.require_cluster()
    cluster.stop(mode="immediate")
    stopped = time.monotonic()
    try:
        down = alert_notification(
            stack.hook,
            alertname="GeckoDatabaseDown",
            status="firing",
            severity="critical",
            since=stopped,
            timeout=60,
        )
    finally:
        cluster.start()
    restarted = time.monotonic()
    report(
        "GeckoDatabaseDown server stopped -> webhook (2s staleness + for=2s)",
        down.delivery.received_monotonic - stopped,
    )
    assert down.delivery.path == "/pager"
    assert down.alert["labels"] == {
        "alertname": "GeckoDatabaseDown",
        "severity": "critical",
        "job": "gecko-exporter",
        "instance": stack.instance,
    }
    check_annotations(
        down.alert,
        "GeckoDatabaseDown",
        rf"gecko-exporter {re.escape(stack.instance)} has had no successful round trip to "
        r"PostgreSQL within its staleness window \(gecko_up = 0\)\.",
    )
    resolved = alert_notification(
        stack.hook,
        alertname="GeckoDatabaseDown",
        status="resolved",
        severity="critical",
        since=down.delivery.received_monotonic,
        timeout=60,
    )
    report(
        "GeckoDatabaseDown server started -> resolved webhook",
        resolved.delivery.received_monotonic - restarted,
    )
