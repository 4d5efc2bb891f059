"""Planned long work is not a slow query (issue 9 item 8), with real sessions on PG 18 and 15.

A migration's index build waiting for a writer, a real ``pg_dump`` waiting for a lock, a
``VACUUM`` and an ``ANALYZE`` waiting for theirs, and a slow query in another database on
the same server: all run past the slow-query threshold, and none of them raises the headline
gauges; the maintenance work is exported by kind. An application query past the threshold
is the headline. The threshold is 1 s here so the sessions stay short.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import psycopg
import pytest

from exporter.probes.slow_queries import MaintenanceMatcher, SlowQueriesProbe
from exporter.samples import Family
from gecko_demo import admin
from tests.health.conftest import EXPORTER_APP, HealthDb, ProbeRunner, probe_runner, value
from tests.health.sessions import background
from tests.support.exporter_proc import ExporterProcess
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

THRESHOLD = 1.0
HEADLINE = (
    "gecko_longest_active_query_seconds",
    "gecko_slow_queries_running",
    "gecko_slow_queries_total",
)
TABLES = ("maint_idx_t", "maint_vac_t", "maint_ana_t", "maint_dump_t")


def probe(
    databases: tuple[str, ...] = (), maintenance: MaintenanceMatcher | None = None
) -> SlowQueriesProbe:
    return SlowQueriesProbe(
        THRESHOLD, own_application_name=EXPORTER_APP, databases=databases, maintenance=maintenance
    )


def poll(
    runner: ProbeRunner, p: SlowQueriesProbe, done: Callable[[list[Family]], bool], what: str
) -> list[Family]:
    def check() -> list[Family] | None:
        fams = runner.collect(p)
        return fams if done(fams) else None

    return wait_until(check, timeout=20, interval=0.2, message=what)


def headline(fams: list[Family]) -> tuple[float | None, ...]:
    return tuple(value(fams, name) for name in HEADLINE)


def longest(fams: list[Family], kind: str) -> float:
    return value(fams, "gecko_maintenance_longest_seconds", kind) or 0.0


def script(db: HealthDb, text: str) -> None:
    with db.connect() as conn:
        conn.run_script(text)


@contextmanager
def scratch_tables(db: HealthDb) -> Iterator[None]:
    """Small tables of the test's own (the app's tables are left alone)."""
    script(
        db, " ".join(f"CREATE TABLE {t} AS SELECT generate_series(1, 100) AS id;" for t in TABLES)
    )
    try:
        yield
    finally:
        script(db, f"DROP TABLE IF EXISTS {', '.join(TABLES)}")


@contextmanager
def pg_dump_waiting(db: HealthDb) -> Iterator[subprocess.Popen[bytes]]:
    """The server's own pg_dump, dumping a table another session holds locked."""
    pg_dump = db.cluster.binaries.bindir / "pg_dump"
    assert pg_dump.exists(), pg_dump
    dsn = admin.dsn_without_password(db.admin_dsn)  # the password goes by environment
    proc = subprocess.Popen(
        [str(pg_dump), "--table=maint_dump_t", "--file=/dev/null", f"--dbname={dsn}"],
        env={**os.environ, "PGPASSWORD": db.cluster.password},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_planned_long_work_and_other_databases_raise_no_headline(
    health_db: HealthDb, empty_db: HealthDb
) -> None:
    dsn = health_db.admin_dsn
    with ExitStack() as stack, probe_runner(health_db.monitor_dsn) as runner:
        stack.enter_context(scratch_tables(health_db))
        p = probe()
        assert headline(runner.collect(p)) == (0, 0, 0)
        # one app transaction holds what the maintenance work waits for: a write (the index
        # build waits for writers), SHARE UPDATE EXCLUSIVE (VACUUM, ANALYZE) and ACCESS
        # EXCLUSIVE (pg_dump's ACCESS SHARE); it then sits idle in transaction
        holder = stack.enter_context(psycopg.connect(dsn, application_name="gecko-advisor-backend"))
        holder.execute(
            "INSERT INTO maint_idx_t VALUES (0);"
            " LOCK TABLE maint_vac_t, maint_ana_t IN SHARE UPDATE EXCLUSIVE MODE;"
            " LOCK TABLE maint_dump_t IN ACCESS EXCLUSIVE MODE"
        )
        for statement, app in (
            ("CREATE INDEX CONCURRENTLY maint_idx ON maint_idx_t (id)", "prisma-migrate"),
            ("VACUUM maint_vac_t", "psql"),
            ("ANALYZE maint_ana_t", "psql"),
        ):
            stack.enter_context(background(dsn, statement, application_name=app, autocommit=True))
        # a psql session in another database of the same server
        elsewhere = stack.enter_context(background(empty_db.admin_dsn, "SELECT pg_sleep(30)",
                                                   application_name="psql", autocommit=True))  # fmt: skip
        stack.callback(health_db.execute, "SELECT pg_cancel_backend(%s)", (elsewhere.pid,))
        dump = stack.enter_context(pg_dump_waiting(health_db))
        stack.callback(holder.rollback)  # LIFO: releases the waiters before they are awaited

        kinds = ("index_build", "vacuum", "analyze", "backup")
        fams = poll(
            runner,
            p,
            lambda f: all(longest(f, k) > THRESHOLD for k in kinds),
            "every maintenance kind past the threshold",
        )
        assert headline(fams) == (0, 0, 0), "maintenance or another database raised the headline"
        for kind in kinds:
            assert value(fams, "gecko_maintenance_running", kind) == 1, kind
        for kind in ("reindex", "cluster", "other"):
            assert value(fams, "gecko_maintenance_running", kind) == 0, kind
        assert dump.poll() is None, "pg_dump is still waiting for its lock"

        # the same probe configured for the other database sees the psql session there
        wide = probe(databases=(empty_db.dbname,))
        fams = poll(runner, wide, lambda f: (value(f, HEADLINE[1]) or 0) >= 1, "other db query")
        assert (value(fams, HEADLINE[0]) or 0) > THRESHOLD

        # an application query past the threshold is the headline, the maintenance still not
        with background(dsn, "SELECT pg_sleep(3)", application_name="gecko-advisor-backend",
                        autocommit=True):  # fmt: skip
            fams = poll(runner, p, lambda f: value(f, HEADLINE[1]) == 1, "the app's slow query")
            assert THRESHOLD < (value(fams, HEADLINE[0]) or 0) < 10
            assert value(fams, HEADLINE[2]) == 1
            assert value(fams, "gecko_maintenance_running", "index_build") == 1

        holder.rollback()
        assert dump.wait(20) == 0, dump.stderr.read() if dump.stderr else ""


def test_index_build_inside_a_do_block_is_recognised_by_its_progress(health_db: HealthDb) -> None:
    """The statement text says DO; pg_stat_progress_create_index says CREATE INDEX."""
    dsn = health_db.admin_dsn
    script(
        health_db,
        "CREATE TABLE maint_expr_t AS SELECT generate_series(1, 150) AS id;"
        " CREATE FUNCTION maint_slow_key(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE"
        " AS $$ BEGIN PERFORM pg_sleep(0.02); RETURN i; END $$",
    )
    try:
        with (
            probe_runner(health_db.monitor_dsn) as runner,
            background(
                dsn,
                "DO $$ BEGIN CREATE INDEX maint_expr_idx ON maint_expr_t (maint_slow_key(id)); END $$",
                application_name="gecko-advisor-backend",
                autocommit=True,
            ) as build,
        ):
            p = probe()
            fams = poll(runner, p, lambda f: longest(f, "index_build") > THRESHOLD, "the build")
            assert headline(fams) == (0, 0, 0)
            assert build.done.wait(20) and build.error is None, build.error
    finally:
        script(health_db, "DROP TABLE maint_expr_t; DROP FUNCTION maint_slow_key(int)")


def test_configured_role_and_application_name_are_maintenance(health_db: HealthDb) -> None:
    dsn = health_db.admin_dsn
    user = str(health_db.fetchval("SELECT current_user"))
    with probe_runner(health_db.monitor_dsn) as runner:
        by_role = probe(maintenance=MaintenanceMatcher.of(roles=[user]))
        by_app = probe(maintenance=MaintenanceMatcher.of(application_names=["nightly-etl"]))
        plain = probe()
        with background(dsn, "SELECT pg_sleep(3)", application_name="nightly-etl",
                        autocommit=True):  # fmt: skip
            for configured in (by_role, by_app):
                fams = poll(runner, configured, lambda f: longest(f, "other") > THRESHOLD,
                            "kind other")  # fmt: skip
                assert headline(fams) == (0, 0, 0)
            # without configuration the same session is an application query
            fams = poll(runner, plain, lambda f: value(f, HEADLINE[1]) == 1, "headline")
            assert longest(fams, "other") == 0


def test_daemon_takes_the_maintenance_settings_from_its_config_file(health_db: HealthDb) -> None:
    """The real exporter: a configured ETL application and a pg_dump-named session are
    maintenance (kind other / backup), logged once as maintenance_running; the headline stays 0."""
    config = {
        "slow_query_threshold_seconds": THRESHOLD,
        "maintenance": {"application_names": ["nightly-etl"]},
    }
    with (
        ExporterProcess(health_db.monitor_dsn, config=config) as exp,
        background(health_db.admin_dsn, "SELECT pg_sleep(4)", application_name="nightly-etl",
                   autocommit=True),
        background(health_db.admin_dsn, "SELECT pg_sleep(4)", application_name="pg_dump",
                   autocommit=True),
    ):  # fmt: skip
        exp.wait_ready()
        for kind in ("other", "backup"):
            exp.wait_value(
                "gecko_maintenance_longest_seconds",
                lambda v: v > THRESHOLD,
                timeout=15,
                labels={"kind": kind},
            )
        assert exp.value("gecko_longest_active_query_seconds") == 0
        assert exp.value("gecko_slow_queries_total") == 0
        logged = {e.get("kind") for e in exp.events() if e.get("event") == "maintenance_running"}
        assert logged == {"other", "backup"}
