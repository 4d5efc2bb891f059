"""Prisma migrations, the migrate advisory lock and index builds on a real server."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from structlog.testing import capture_logs

from exporter.probes.migrations import PRISMA_MIGRATE_LOCK_KEY, MigrationsProbe
from exporter.samples import Family
from tests.health.conftest import HealthDb, probe_runner, series, value
from tests.health.sessions import BackgroundStatement, background
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


def probe() -> MigrationsProbe:
    return MigrationsProbe("public", ["public"])


def test_applied_failed_and_last_finished(health_db: HealthDb) -> None:
    migrations = probe()
    failed_id = str(uuid.uuid4())
    with probe_runner(health_db.monitor_dsn) as runner:
        fams = runner.collect(migrations)
        assert value(fams, "gecko_migrations_table_present") == 1
        assert value(fams, "gecko_migrations_applied") == 2  # the fresh install's two
        assert value(fams, "gecko_migrations_failed") == 0
        last = value(fams, "gecko_migration_last_finished_timestamp_seconds")
        expected = health_db.fetchval(
            "SELECT EXTRACT(EPOCH FROM max(finished_at))::float8 FROM _prisma_migrations"
        )
        assert last == pytest.approx(expected)
        try:
            # what P3018 leaves: started, not finished, not rolled back, with logs
            health_db.execute(
                'INSERT INTO "_prisma_migrations" ("id", "checksum", "migration_name", "logs",'
                ' "started_at", "applied_steps_count") VALUES (%s, %s, %s, %s, now(), 0)',
                (
                    failed_id,
                    "0" * 64,
                    "20261124090000_add_scan_source_index",
                    "Database error code: 25001\nCREATE INDEX CONCURRENTLY cannot run inside a "
                    "transaction block",
                ),
            )
            with capture_logs() as logs:
                fams = runner.collect(migrations)
                runner.collect(migrations)
            assert value(fams, "gecko_migrations_failed") == 1
            assert value(fams, "gecko_migrations_applied") == 2
            assert value(fams, "gecko_migrations_unfinished") == 0
            assert value(fams, "gecko_migration_last_finished_timestamp_seconds") == last
            failures = [e for e in logs if e["event"] == "migration_failed"]
            assert len(failures) == 1  # logged once, not every run
            assert failures[0]["migration"] == "20261124090000_add_scan_source_index"
            assert "25001" in failures[0]["logs"]
            # `migrate resolve --rolled-back` clears the failure
            health_db.execute(
                'UPDATE "_prisma_migrations" SET "rolled_back_at" = now() WHERE "id" = %s',
                (failed_id,),
            )
            fams = runner.collect(migrations)
            assert value(fams, "gecko_migrations_failed") == 0
            assert value(fams, "gecko_migrations_rolled_back") == 1
        finally:
            health_db.execute('DELETE FROM "_prisma_migrations" WHERE "id" = %s', (failed_id,))


def test_advisory_lock_held_means_migration_in_progress(health_db: HealthDb) -> None:
    migrations = probe()
    lock = f"SELECT pg_advisory_lock({PRISMA_MIGRATE_LOCK_KEY})"
    with probe_runner(health_db.monitor_dsn) as runner:
        assert value(runner.collect(migrations), "gecko_migration_in_progress") == 0
        with psycopg.connect(
            health_db.admin_dsn, autocommit=True, application_name="prisma-migrate"
        ) as holder:
            holder.execute(lock.encode())
            fams = runner.collect(migrations)
            assert value(fams, "gecko_migration_in_progress") == 1
            assert value(fams, "gecko_migration_lock_waiters") == 0
            # a second deploy queues for the same lock
            with background(
                health_db.admin_dsn, lock, application_name="prisma-migrate-2", autocommit=True
            ) as second:
                wait_until(
                    lambda: value(runner.collect(migrations), "gecko_migration_lock_waiters") == 1,
                    timeout=10,
                    message="second deploy waiting for the migrate lock",
                )
                assert not second.done.is_set()
                holder.execute(f"SELECT pg_advisory_unlock({PRISMA_MIGRATE_LOCK_KEY})".encode())
                assert second.done.wait(10) and second.error is None
                fams = runner.collect(migrations)
                assert value(fams, "gecko_migration_in_progress") == 1  # now held by the second
                assert value(fams, "gecko_migration_lock_waiters") == 0
        # session-level locks end with their sessions
        wait_until(
            lambda: value(runner.collect(migrations), "gecko_migration_in_progress") == 0,
            timeout=10,
            message="migrate lock released",
        )


def test_running_index_build_is_reported_and_not_flagged_invalid(health_db: HealthDb) -> None:
    """A CIC waiting for a writer: progress is shown, its not-yet-valid index is not an alarm."""
    migrations = probe()
    dsn = health_db.admin_dsn
    with probe_runner(health_db.monitor_dsn) as runner:
        writer = psycopg.connect(dsn, application_name="gecko-worker")
        build: BackgroundStatement | None = None
        try:
            writer.execute(
                'UPDATE "Issue" SET "sortWeight" = "sortWeight" '
                'WHERE "id" = (SELECT "id" FROM "Issue" LIMIT 1)'
            )
            build = BackgroundStatement(
                dsn,
                'CREATE INDEX CONCURRENTLY "Issue_health_title_idx" ON "Issue"("title")',
                application_name="prisma-migrate",
                autocommit=True,
            )

            def running() -> list[Family] | None:
                fams = runner.collect(migrations)
                return fams if value(fams, "gecko_index_builds_in_progress") == 1 else None

            fams = wait_until(running, timeout=15, message="index build in progress")
            progress = series(fams, "gecko_index_build_progress_ratio")
            assert len(progress) == 1
            (table, index, phase), ratio = next(iter(progress.items()))
            assert (table, index) == ("Issue", "Issue_health_title_idx")
            assert phase == "waiting for writers before build"
            assert 0 <= ratio <= 1
            # the catalog already holds the (not yet valid) index, but a build is running
            valid = health_db.fetchval(
                "SELECT indisvalid FROM pg_index "
                "WHERE indexrelid = '\"Issue_health_title_idx\"'::regclass"
            )
            assert valid is False
            assert value(fams, "gecko_invalid_indexes") == 0
            assert series(fams, "gecko_invalid_index") == {}
            assert not build.done.is_set()
            writer.rollback()  # the writer ends: the build goes on and finishes
            assert build.done.wait(30) and build.error is None
            fams = runner.collect(migrations)
            assert value(fams, "gecko_index_builds_in_progress") == 0
            assert value(fams, "gecko_invalid_indexes") == 0
        finally:
            writer.close()
            if build is not None:
                build.close(dsn)
            health_db.execute('DROP INDEX IF EXISTS "Issue_health_title_idx"')


def test_absent_migrations_table_is_a_state(empty_db: HealthDb) -> None:
    with probe_runner(empty_db.monitor_dsn) as runner:
        fams = runner.collect(probe())
    assert value(fams, "gecko_migrations_table_present") == 0
    assert value(fams, "gecko_migrations_applied") == 0
    assert value(fams, "gecko_migrations_failed") == 0
    assert value(fams, "gecko_migration_in_progress") == 0
    assert series(fams, "gecko_migration_last_finished_timestamp_seconds") == {}
