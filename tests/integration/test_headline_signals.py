"""The four headline signals, each provoked on a real PostgreSQL."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest

from gecko_demo import admin
from tests.conftest import GeckoDatabase, require_tool
from tests.support.exporter_proc import ExporterProcess, fast_probe_env
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


@contextmanager
def background_sleep(dsn: str, seconds: float, app: str = "gecko-tests-sleeper") -> Iterator[None]:
    """Run ``SELECT pg_sleep(seconds)`` in another session for the duration of the block."""
    conn = admin.connect(dsn, application_name=app)
    thread = threading.Thread(
        target=lambda: conn.execute("SELECT pg_sleep(%s)", (seconds,)), daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        thread.join(seconds + 10)
        conn.close()


def test_all_probes_succeed_and_output_passes_promtool(gecko_db_any: GeckoDatabase) -> None:
    promtool = require_tool("promtool")
    env = fast_probe_env(scan_lookup=0.5, report=1, connections=1, server=5)
    with ExporterProcess(gecko_db_any.monitor_dsn, env=env) as exp:
        exp.wait_ready()
        for probe in ("server", "connections", "slow_queries", "scan_lookup", "report"):
            exp.wait_value(
                "gecko_probe_success", lambda v: v == 1, timeout=20, labels={"probe": probe}
            )
        exp.wait_value(
            "gecko_report_generation_duration_seconds_count", lambda v: v >= 2, timeout=20
        )
        exp.wait_value("gecko_scan_lookup_duration_seconds_count", lambda v: v >= 3, timeout=20)
        samples = exp.metrics()
        text = exp.metrics_text()
    assert samples[("gecko_up", ())] == 1
    major = str(gecko_db_any.major)
    assert any(
        name == "gecko_postgres_server_info" and dict(labels)["major"] == major
        for name, labels in samples
    )
    # rows of a real report were fetched (done scans carry evidence)
    assert samples[("gecko_report_rows_fetched_total", (("relation", "evidence"),))] > 0
    assert ("gecko_scan_lookup_duration_seconds_bucket", (("le", "0.1"),)) in samples
    assert ("gecko_report_generation_duration_seconds_bucket", (("le", "2.0"),)) in samples
    assert "password" not in text and gecko_db_any.monitor_password not in text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_pg_sleep_raises_longest_query_and_counts_once(gecko_db: GeckoDatabase) -> None:
    with ExporterProcess(gecko_db.monitor_dsn) as exp:
        exp.wait_ready()
        before = exp.value("gecko_slow_queries_total") or 0.0
        with background_sleep(gecko_db.admin_dsn, 7):
            exp.wait_value("gecko_longest_active_query_seconds", lambda v: v > 5, timeout=15)
            exp.wait_value("gecko_slow_queries_running", lambda v: v == 1, timeout=5)
            assert exp.value("gecko_slow_queries_total") == before + 1
        exp.wait_value("gecko_slow_queries_running", lambda v: v == 0, timeout=10)
        exp.wait_value("gecko_longest_active_query_seconds", lambda v: v < 5, timeout=10)
        # the same query, sampled ~7 times above the threshold, counted exactly once
        assert exp.value("gecko_slow_queries_total") == before + 1
        detected = [e for e in exp.events() if e.get("event") == "slow_query_detected"]
        assert len(detected) == 1
        event = detected[0]
        assert event["application"] == "gecko-tests-sleeper"
        assert event["user"] == "postgres"
        assert event["duration_seconds"] > 5
        assert "pg_sleep" in event["query"]
        assert "query_id" in event
        exp.wait_event("slow_query_finished", timeout=5)


def test_slow_query_text_can_be_switched_off(gecko_db: GeckoDatabase) -> None:
    env = {"GECKO_SLOW_QUERY_LOG_TEXT": "false", "GECKO_SLOW_QUERY_THRESHOLD_SECONDS": "1"}
    with ExporterProcess(gecko_db.monitor_dsn, env=env) as exp:
        exp.wait_ready()
        with background_sleep(gecko_db.admin_dsn, 2.5):
            event = exp.wait_event("slow_query_detected", timeout=10)
    assert "query" not in event
    assert "pg_sleep" not in exp.logs_text()


def test_idle_in_transaction_reported_separately(gecko_db: GeckoDatabase) -> None:
    with (
        ExporterProcess(gecko_db.monitor_dsn) as exp,
        admin.connect(
            gecko_db.admin_dsn, application_name="gecko-tests-idle", autocommit=False
        ) as conn,
    ):
        exp.wait_ready()
        conn.execute("SELECT 1")  # opens a transaction and leaves it idle
        exp.wait_value("gecko_longest_idle_in_transaction_seconds", lambda v: v > 2, timeout=10)
        assert (exp.value("gecko_longest_active_query_seconds") or 0) < 2


def test_server_pool_ratio_above_080(private_gecko_db) -> None:  # type: ignore[no-untyped-def]
    db = private_gecko_db(max_connections="20", superuser_reserved_connections="3")
    pools = [{"name": "backend", "application_name": "gecko-advisor-backend", "size": 5}]
    env = fast_probe_env(connections=0.5)
    with (
        ExporterProcess(db.monitor_dsn, env=env, config={"pools": pools}) as exp,
        ExitStack() as st,
    ):
        exp.wait_ready()
        usable = exp.wait_value("gecko_connection_pool_size", lambda v: v > 0, timeout=10,
                                labels={"pool": "server"})  # fmt: skip
        assert usable == 20 - 3  # superuser_reserved; reserved_connections (16+) defaults to 0
        # app pool: 4 of 5 busy backend connections (idle in transaction counts as in use)
        for _ in range(4):
            c = st.enter_context(
                admin.connect(
                    db.admin_dsn, application_name="gecko-advisor-backend", autocommit=False
                )
            )
            c.execute("SELECT 1")
        st.enter_context(admin.connect(db.admin_dsn, application_name="gecko-advisor-backend"))
        ratio = exp.wait_value("gecko_connection_pool_utilization_ratio", lambda v: v == 0.8,
                               timeout=10, labels={"pool": "backend"})  # fmt: skip
        assert ratio == 0.8
        assert exp.value("gecko_connection_pool_connections", pool="backend", state="idle") == 1
        # server: fill past 80 % of the usable slots
        in_use = exp.value("gecko_connection_pool_connections_in_use", pool="server") or 0
        needed = int(0.85 * usable) - int(in_use) + 1
        for _ in range(max(0, needed)):
            st.enter_context(admin.connect(db.admin_dsn, application_name="gecko-tests-filler"))
        exp.wait_value("gecko_connection_pool_utilization_ratio", lambda v: v > 0.8,
                       timeout=10, labels={"pool": "server"})  # fmt: skip


def test_dropping_the_dedupe_index_moves_the_lookup_histogram(private_gecko_db) -> None:  # type: ignore[no-untyped-def]
    db = private_gecko_db(scans=200)
    with admin.connect(db.admin_dsn, application_name="gecko-tests") as conn:
        # grow Scan to ~300k rows so a sequential scan costs real milliseconds
        conn.execute(
            """INSERT INTO "Scan" ("id","targetType","input","normalizedInput","status","progress",
                   "slug","source","isPublic","isProScan","createdAt","updatedAt","finishedAt")
               SELECT 'bulk' || g, 'url', 'https://bulk' || g || '.example/',
                      'https://bulk' || g || '.example/', 'done', 100, 'b' || g, 'manual',
                      true, false, now() - interval '1 day', now(), now() - interval '1 day'
               FROM generate_series(1, 300000) g"""
        )
        conn.execute('ANALYZE "Scan"')
    env = fast_probe_env(scan_lookup=0.3)
    with ExporterProcess(db.monitor_dsn, env=env) as exp:
        exp.wait_ready()
        exp.wait_value("gecko_scan_lookup_duration_seconds_count", lambda v: v >= 10, timeout=20)
        fast = exp.metrics()
        with admin.connect(db.admin_dsn, application_name="gecko-tests") as conn:
            conn.execute('DROP INDEX "Scan_dedupe_lookup_idx"')
        count0 = fast[("gecko_scan_lookup_duration_seconds_count", ())]
        exp.wait_value("gecko_scan_lookup_duration_seconds_count", lambda v: v >= count0 + 10,
                       timeout=60)  # fmt: skip
        slow = exp.metrics()

    def under(samples: dict, le: str) -> float:  # type: ignore[type-arg]
        return float(samples[("gecko_scan_lookup_duration_seconds_bucket", (("le", le),))])

    n_fast = count0
    n_slow = slow[("gecko_scan_lookup_duration_seconds_count", ())] - count0
    # before: (nearly) every lookup under 5 ms; after: the new ones are slower than that
    assert under(fast, "0.005") >= 0.9 * n_fast
    new_under_5ms = under(slow, "0.005") - under(fast, "0.005")
    assert new_under_5ms <= 0.2 * n_slow, (new_under_5ms, n_slow)
    sum_fast = fast[("gecko_scan_lookup_duration_seconds_sum", ())] / n_fast
    sum_slow = (slow[("gecko_scan_lookup_duration_seconds_sum", ())] - sum_fast * n_fast) / n_slow
    assert sum_slow > 3 * sum_fast


def test_monitor_role_is_enough(gecko_db: GeckoDatabase) -> None:
    """The least-privilege role sees other users' queries (pg_monitor) and reads app tables."""
    with ExporterProcess(gecko_db.monitor_dsn) as exp:
        exp.wait_ready()
        with background_sleep(gecko_db.admin_dsn, 6.5):
            exp.wait_value("gecko_slow_queries_running", lambda v: v >= 1, timeout=15)
        wait_until(lambda: exp.value("gecko_probe_success", probe="report") == 1, timeout=30)
