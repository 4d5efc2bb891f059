"""End to end, migration-safety alerts: each provoked on a real PostgreSQL, seen by the
exporter's health probes, evaluated by Prometheus with the shipped rules (thresholds
real, `for`s shortened) and delivered by Alertmanager (example configuration) to a
webhook receiver in this test.

One PostgreSQL server, one exporter and one Prometheus/Alertmanager stack serve every
scenario (module scope). Each test checks that the database is healthy first, undoes
its change in ``finally`` and waits until the exporter reports healthy again, so the
tests do not depend on their order; each matches only its own alert. Each prints the
time from the provocation to the webhook delivery.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack

import psycopg
import pytest

from tests.alerting.conftest import (
    Stack,
    alert_notification,
    check_annotations,
    e2e_stack,
    ensure_running,
    notified,
    report,
)
from tests.conftest import GeckoDatabase
from tests.support.exporter_proc import fast_probe_env
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

#: Short `for`s so the scenarios take seconds; thresholds stay at their real values.
HEALTH_OVERRIDES: dict[str, float | str] = {
    "criticalIndexMissingFor": "2s",
    "criticalIndexInvalidFor": "2s",
    "invalidIndexFor": "2s",
    "migrationFailedFor": "2s",
    "lockQueueFor": "2s",
}
CRITICAL_INDEX = "Scan_dedupe_lookup_idx"
FAILED_INDEX = "Scan_source_e2e_key"
DDL_COLUMN = "e2eLockQueue"
#: generous bound for one notification: probe 1s + scrape 1s + eval 1s + for 2s + group_wait 1s
NOTIFY_TIMEOUT = 40


def healthy_samples(stack: Stack) -> bool:
    """The exporter reports no migration-safety problem (the state between scenarios)."""
    samples = stack.exporter.metrics()

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted(labels.items()))))

    return (
        value("gecko_index_present", index=CRITICAL_INDEX) == 1
        and value("gecko_index_valid", index=CRITICAL_INDEX) == 1
        and value("gecko_invalid_indexes") == 0
        and value("gecko_migrations_failed") == 0
        and value("gecko_lock_waiting_behind_access_exclusive") == 0
    )


def wait_healthy(stack: Stack, what: str) -> None:
    wait_until(lambda: healthy_samples(stack), timeout=20, interval=0.1, message=what)


@pytest.fixture(scope="module")
def health(
    tmp_path_factory: pytest.TempPathFactory,
    shared_gecko_db: GeckoDatabase,
    prometheus_bin: str,
    alertmanager_bin: str,
) -> Iterator[Stack]:
    db = ensure_running(shared_gecko_db)
    env = fast_probe_env(indexes=1, migrations=1, locks=1)
    with e2e_stack(
        tmp_path_factory.mktemp("e2e-health"), db, overrides=HEALTH_OVERRIDES, env=env
    ) as stack:
        wait_until(
            lambda: stack.prometheus.query(
                f'gecko_index_present{{index="{CRITICAL_INDEX}"}} == 1'
                " and on (job, instance) gecko_migrations_failed == 0"
                " and on (job, instance) gecko_lock_waiting_behind_access_exclusive == 0"
            ),
            timeout=30,
            message="health metrics in Prometheus",
        )
        yield stack


@pytest.fixture
def healthy(health: Stack) -> Stack:
    """The module's stack, with the database in its healthy state."""
    wait_healthy(health, "a healthy database before the scenario")
    return health


def admin_connect(db: GeckoDatabase, name: str, *, autocommit: bool = True) -> psycopg.Connection:
    """A superuser session with a backstop against waiting forever on a lock."""
    conn = psycopg.connect(
        db.admin_dsn, application_name=f"gecko-e2e-{name}", autocommit=autocommit
    )
    conn.execute("SET statement_timeout = '60s'")
    conn.execute("SET idle_in_transaction_session_timeout = '60s'")
    return conn


def expected_labels(stack: Stack, alertname: str, severity: str, **extra: str) -> dict[str, str]:
    return {
        "alertname": alertname,
        "severity": severity,
        "job": "gecko-exporter",
        "instance": stack.instance,
        **extra,
    }


def test_dropped_critical_index_pages(healthy: Stack) -> None:
    stack = healthy
    with admin_connect(stack.db, "migration") as conn:
        conn.execute("SET lock_timeout = '10s'")
        row = conn.execute("SELECT pg_get_indexdef(%s::regclass)", (f'"{CRITICAL_INDEX}"',))
        indexdef = row.fetchone()
        assert indexdef is not None
        conn.execute(f'DROP INDEX "{CRITICAL_INDEX}"')
        dropped = time.monotonic()
        try:
            page = alert_notification(
                stack.hook,
                alertname="GeckoCriticalIndexMissing",
                status="firing",
                severity="critical",
                since=dropped,
                timeout=NOTIFY_TIMEOUT,
            )
        finally:
            conn.execute(indexdef[0])
    wait_healthy(stack, f"{CRITICAL_INDEX} present again")
    report(
        "GeckoCriticalIndexMissing DROP INDEX -> webhook, for=2s",
        page.delivery.received_monotonic - dropped,
    )
    assert page.delivery.path == "/pager"
    assert page.alert["labels"] == expected_labels(
        stack, "GeckoCriticalIndexMissing", "critical", index=CRITICAL_INDEX
    )
    check_annotations(
        page.alert,
        "GeckoCriticalIndexMissing",
        rf"Index {CRITICAL_INDEX} does not exist on {re.escape(stack.instance)} "
        r"\(gecko_index_present = 0\): its queries fall back to sequential scans\.",
    )
    # a missing index is not also reported as an invalid one
    assert not notified(
        stack.hook, alertname="GeckoInvalidIndex", severity="critical", since=dropped
    )


def test_failed_concurrent_index_build_tickets_the_invalid_index(healthy: Stack) -> None:
    stack = healthy
    with admin_connect(stack.db, "migration") as conn:
        try:
            with pytest.raises(psycopg.errors.UniqueViolation):
                # "source" repeats ('manual', ...): the build fails and leaves the index invalid
                conn.execute(
                    f'CREATE UNIQUE INDEX CONCURRENTLY "{FAILED_INDEX}" ON "Scan"("source")'
                )
            failed = time.monotonic()
            ticket = alert_notification(
                stack.hook,
                alertname="GeckoInvalidIndex",
                status="firing",
                severity="warning",
                since=failed,
                timeout=NOTIFY_TIMEOUT,
            )
            assert (
                stack.exporter.value("gecko_invalid_index", index=FAILED_INDEX, table="Scan") == 1
            )
        finally:
            conn.execute(f'DROP INDEX IF EXISTS "{FAILED_INDEX}"')
    wait_healthy(stack, "no invalid index left")
    report(
        "GeckoInvalidIndex (warning) failed CREATE INDEX CONCURRENTLY -> webhook, for=2s",
        ticket.delivery.received_monotonic - failed,
    )
    assert ticket.delivery.path == "/tickets"
    assert ticket.alert["labels"] == expected_labels(stack, "GeckoInvalidIndex", "warning")
    check_annotations(
        ticket.alert,
        "GeckoInvalidIndex",
        rf"1 invalid index\(es\) in the application schemas on {re.escape(stack.instance)}, "
        r"not counting tables with a build running: left over from a failed "
        r"CREATE INDEX CONCURRENTLY\?",
    )
    # the index is not one of the critical ones: no page
    assert not notified(
        stack.hook, alertname="GeckoInvalidIndex", severity="critical", since=failed
    )


def test_failed_prisma_migration_pages(healthy: Stack) -> None:
    stack = healthy
    row_id = str(uuid.uuid4())
    name = f"20990101000000_e2e_failed_{row_id[:8]}"
    with admin_connect(stack.db, "migration") as conn:
        try:
            # what `prisma migrate deploy` leaves after a failed step (P3018)
            conn.execute(
                'INSERT INTO "_prisma_migrations" (id, checksum, migration_name, logs, started_at)'
                " VALUES (%s, %s, %s, %s, now())",
                (row_id, "e2e" * 16, name, "Error: P3018 A migration failed to apply."),
            )
            inserted = time.monotonic()
            page = alert_notification(
                stack.hook,
                alertname="GeckoMigrationFailed",
                status="firing",
                severity="critical",
                since=inserted,
                timeout=NOTIFY_TIMEOUT,
            )
        finally:
            conn.execute('DELETE FROM "_prisma_migrations" WHERE id = %s', (row_id,))
    wait_healthy(stack, "no failed migration left")
    report(
        "GeckoMigrationFailed failed _prisma_migrations row -> webhook, for=2s",
        page.delivery.received_monotonic - inserted,
    )
    assert page.delivery.path == "/pager"
    assert page.alert["labels"] == expected_labels(stack, "GeckoMigrationFailed", "critical")
    check_annotations(
        page.alert,
        "GeckoMigrationFailed",
        rf"1 Prisma migration\(s\) on {re.escape(stack.instance)} failed and are not rolled "
        r"back: prisma migrate deploy refuses to run \(P3009\) and the schema may be "
        r"half-applied\.",
    )
    logged = [e for e in stack.exporter.events() if e.get("event") == "migration_failed"]
    assert any(e.get("migration") == name for e in logged), logged


def test_select_queued_behind_waiting_ddl_tickets(healthy: Stack) -> None:
    stack = healthy
    db = stack.db
    errors: dict[str, BaseException] = {}
    threads: list[threading.Thread] = []

    def run(conn: psycopg.Connection, name: str, sql: str) -> None:
        def target() -> None:
            try:
                conn.execute(sql)
            except psycopg.Error as exc:
                errors[name] = exc

        thread = threading.Thread(target=target, name=f"e2e-{name}", daemon=True)
        threads.append(thread)
        thread.start()

    with ExitStack() as conns:
        control = conns.enter_context(admin_connect(db, "control"))

        def lock_waiting(pid: int) -> bool:
            row = control.execute(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()
            return bool(row and row[0])

        holder = conns.enter_context(admin_connect(db, "holder", autocommit=False))
        ddl = conns.enter_context(admin_connect(db, "ddl"))
        reader = conns.enter_context(admin_connect(db, "reader"))
        try:
            # a long transaction holds ACCESS SHARE on "Scan" ...
            holder.execute('SELECT 1 FROM "Scan" LIMIT 1')
            # ... a migration's ALTER TABLE (no lock_timeout) waits for ACCESS EXCLUSIVE ...
            run(ddl, "ddl", f'ALTER TABLE "Scan" ADD COLUMN "{DDL_COLUMN}" integer')
            wait_until(
                lambda: lock_waiting(ddl.info.backend_pid),
                timeout=10,
                message="ALTER TABLE waiting",
            )
            # ... and a plain SELECT queues behind it
            queued = time.monotonic()
            run(reader, "reader", 'SELECT count(*) FROM "Scan"')
            wait_until(
                lambda: lock_waiting(reader.info.backend_pid),
                timeout=10,
                message="SELECT queued behind the ALTER TABLE",
            )
            ticket = alert_notification(
                stack.hook,
                alertname="GeckoLockQueueBehindDDL",
                status="firing",
                severity="warning",
                since=queued,
                timeout=NOTIFY_TIMEOUT,
            )
        finally:
            # cancel the DDL (the SELECT then gets its lock), end the long transaction
            control.execute("SELECT pg_cancel_backend(%s)", (ddl.info.backend_pid,))
            holder.rollback()
            for thread in threads:
                thread.join(15)
            control.execute(f'ALTER TABLE "Scan" DROP COLUMN IF EXISTS "{DDL_COLUMN}"')
    assert not any(t.is_alive() for t in threads)
    assert "reader" not in errors, errors
    assert isinstance(errors.get("ddl"), psycopg.errors.QueryCanceled), errors
    wait_healthy(stack, "the lock queue drained")
    report(
        "GeckoLockQueueBehindDDL (warning) SELECT queued behind ALTER TABLE -> webhook, for=2s",
        ticket.delivery.received_monotonic - queued,
    )
    assert ticket.delivery.path == "/tickets"
    assert ticket.alert["labels"] == expected_labels(stack, "GeckoLockQueueBehindDDL", "warning")
    check_annotations(
        ticket.alert,
        "GeckoLockQueueBehindDDL",
        rf"1 backend\(s\) on {re.escape(stack.instance)} have waited behind a pending "
        r"ACCESS EXCLUSIVE lock request \(DDL without lock_timeout\?\) for more than 2s\.",
    )
