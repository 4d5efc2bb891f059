"""Slow-query de-duplication (pure)."""

from __future__ import annotations

from datetime import datetime

import pytest

from exporter.probes.slow_queries import (
    MAINTENANCE_KINDS,
    MaintenanceMatcher,
    SlowQueryTracker,
    build_sql,
    classify,
    is_backup_application,
)

T0 = datetime(2026, 1, 1, 12, 0, 0)
T1 = datetime(2026, 1, 1, 12, 5, 0)


def row(
    pid: int, seconds: float, state: str = "active", start: datetime = T0, **kw: object
) -> dict:  # type: ignore[type-arg]
    return {"pid": pid, "state": state, "query_start": start, "query_seconds": seconds,
            "state_seconds": seconds, "usename": "app", "application_name": "api",
            "datname": "privacy", "query_id": 42, "query": "SELECT pg_sleep(7)", **kw}  # fmt: skip


def test_counts_each_query_once() -> None:
    t = SlowQueryTracker(5)
    assert t.update([row(1, 1)]).new_slow == ()
    first = t.update([row(1, 5.5)])
    assert [q.pid for q in first.new_slow] == [1]
    assert first.longest_active_seconds == 5.5
    for s in (6, 7, 8):
        assert t.update([row(1, s)]).new_slow == ()
    assert t.total == 1
    done = t.update([])
    assert [q.pid for q in done.finished_slow] == [1]
    assert done.slow_running == 0
    assert done.longest_active_seconds == 0


def test_same_pid_new_query_counts_again() -> None:
    t = SlowQueryTracker(5)
    t.update([row(1, 6)])
    summary = t.update([row(1, 6, start=T1)])
    assert len(summary.new_slow) == 1
    assert len(summary.finished_slow) == 1
    assert t.total == 2


def test_threshold_is_strict_and_idle_in_transaction_separate() -> None:
    t = SlowQueryTracker(5)
    s = t.update([row(1, 5.0), row(2, 30, state="idle in transaction"),
                  row(3, 9, state="idle in transaction (aborted)")])  # fmt: skip
    assert s.new_slow == ()
    assert s.longest_active_seconds == 5.0
    assert s.longest_idle_in_transaction_seconds == 30
    assert t.total == 0


def test_sql_uses_query_id_only_from_14() -> None:
    assert "query_id AS query_id" in build_sql(140000)
    assert "NULL::bigint AS query_id" in build_sql(130010)


# -- planned long work is not the headline (issue 9 item 8) ----------------------------
def maint(**kw: object) -> MaintenanceMatcher:
    return MaintenanceMatcher.of(**kw)  # type: ignore[arg-type]


def test_index_build_is_maintenance_not_a_slow_query() -> None:
    t = SlowQueryTracker(5)
    s = t.update([row(1, 1200, query_head="CREATE INDEX CONCURRENTLY \"Scan_x\" ON \"Scan\" (x)",
                      progress_command="CREATE INDEX CONCURRENTLY")])  # fmt: skip
    assert (s.longest_active_seconds, s.slow_running, s.new_slow, t.total) == (0, 0, (), 0)
    assert s.maintenance_running["index_build"] == 1
    assert s.maintenance_longest_seconds["index_build"] == 1200
    assert [w.kind for w in s.new_maintenance] == ["index_build"]
    # logged once, not on every sample
    assert t.update([row(1, 1201, query_head="CREATE INDEX x")]).new_maintenance == ()


def test_progress_view_classifies_a_statement_whose_text_does_not_say() -> None:
    s = SlowQueryTracker(5).update(
        [
            row(
                1,
                60,
                query_head="DO $$ BEGIN EXECUTE 'CREATE INDEX …'; END $$",
                progress_command="CREATE INDEX",
            )
        ]  # fmt: skip
    )
    assert s.maintenance_running["index_build"] == 1
    assert s.longest_active_seconds == 0


def test_pg_dump_counts_by_its_transaction_and_its_idle_leader_is_not_idle_in_transaction() -> None:
    s = SlowQueryTracker(5).update([
        row(1, 40, application_name="pg_dump", query_head='COPY public."Scan" TO stdout;',
            xact_start=T0, xact_seconds=1800),
        row(2, 1790, state="idle in transaction", application_name="pg_dump",
            query_head=None, xact_start=T0, xact_seconds=1795),
    ])  # fmt: skip
    assert s.longest_active_seconds == 0
    assert s.longest_idle_in_transaction_seconds == 0
    assert s.maintenance_running["backup"] == 2
    assert s.maintenance_longest_seconds["backup"] == 1800


@pytest.mark.parametrize(
    ("head", "progress", "kind"),
    [
        ('VACUUM (VERBOSE) "Scan"', None, "vacuum"),
        ('vacuum full "Scan"', "VACUUM FULL", "vacuum"),
        ('ANALYZE "Evidence"', "ANALYZE", "analyze"),
        ("analyse", None, "analyze"),
        ('REINDEX INDEX CONCURRENTLY "Scan_slug_key"', "REINDEX CONCURRENTLY", "reindex"),
        ('CLUSTER "Scan" USING "Scan_pkey"', "CLUSTER", "cluster"),
        (
            '-- CreateIndex\nCREATE UNIQUE INDEX "Scan_slug_key" ON "Scan"("slug");',
            None,
            "index_build",
        ),
        (
            "/* migration 42 */ SET lock_timeout = '5s'; CREATE INDEX CONCURRENTLY i ON t (c)",
            None,
            "index_build",
        ),
        ("BEGIN; VACUUM t", None, "vacuum"),
    ],
)
def test_maintenance_statements_are_recognised(head: str, progress: str | None, kind: str) -> None:
    assert classify(row(1, 9, query_head=head, progress_command=progress), maint()) == kind


@pytest.mark.parametrize(
    "head",
    ["SELECT pg_sleep(7)", "EXPLAIN ANALYZE SELECT 1", "WITH x AS (SELECT 1) SELECT * FROM x",
     "SELECT 'VACUUM'", "UPDATE \"Scan\" SET status = 'done'", "SETTINGS", None,
     "INSERT INTO analyze_log VALUES (1)"],
)  # fmt: skip
def test_application_statements_stay_application(head: str | None) -> None:
    assert classify(row(1, 9, query_head=head), maint()) is None


@pytest.mark.parametrize(
    ("application", "backup"),
    [("pg_dump", True), ("pg_dumpall", True), ("pgBackRest [backup]", True),
     ("barman_receive_wal", True), ("wal-g", True), ("pg_basebackup", True), ("PG_DUMP", True),
     ("pg_dumper", False), ("my-pg_dump", False), ("gecko-advisor-backend", False), ("", False)],
)  # fmt: skip
def test_backup_tools_by_application_name(application: str, backup: bool) -> None:
    assert is_backup_application(application) is backup


def test_configured_roles_and_application_names_are_other_maintenance() -> None:
    matcher = maint(roles=["backup_user"], application_names=["nightly-etl"])
    t = SlowQueryTracker(5, matcher)
    s = t.update([row(1, 600, usename="backup_user"), row(2, 600, application_name="nightly-etl"),
                  row(3, 6, usename="app", application_name="api")])  # fmt: skip
    assert s.maintenance_running["other"] == 2
    assert s.maintenance_longest_seconds["other"] == 600
    assert s.longest_active_seconds == 6 and s.slow_running == 1 and t.total == 1
    # a configured role's index build is still an index build
    assert classify(row(4, 9, usename="backup_user", query_head="CREATE INDEX i ON t (c)"),
                    matcher) == "index_build"  # fmt: skip
    # an idle-in-transaction maintenance session is not the app's idle transaction
    s = t.update([row(5, 900, state="idle in transaction", usename="backup_user", xact_start=T0,
                      xact_seconds=900)])  # fmt: skip
    assert s.longest_idle_in_transaction_seconds == 0
    assert s.maintenance_running["other"] == 1


def test_application_idle_in_transaction_with_a_maintenance_last_statement_stays_app() -> None:
    """The text of an idle session is its last statement: it is not running maintenance."""
    s = SlowQueryTracker(5).update([row(1, 30, state="idle in transaction",
                                        query_head="ANALYZE t")])  # fmt: skip
    assert s.longest_idle_in_transaction_seconds == 30
    assert all(v == 0 for v in s.maintenance_running.values())


def test_every_kind_is_always_exported() -> None:
    s = SlowQueryTracker(5).update([])
    assert tuple(s.maintenance_running) == MAINTENANCE_KINDS
    assert tuple(s.maintenance_longest_seconds) == MAINTENANCE_KINDS
    assert set(MAINTENANCE_KINDS) == {
        "index_build", "reindex", "vacuum", "analyze", "cluster", "backup", "other"
    }  # fmt: skip


def test_sql_reads_only_the_monitored_and_configured_databases_and_progress_views() -> None:
    sql = build_sql(150000)
    assert "a.datname = current_database() OR a.datname = ANY(%(databases)s::text[])" in sql
    for view in ("create_index", "vacuum", "cluster", "analyze"):
        assert f"pg_stat_progress_{view}" in sql
    assert "left(a.query, 256) END AS query_head" in sql


class RowsSession:
    """Just enough of a session for the probe: every statement answers ``rows``."""

    server_version = 180000
    backend_pid = 1

    def __init__(self) -> None:
        self.rows: list[dict] = []  # type: ignore[type-arg]

    async def fetch(self, sql: str, params: object = None, *, prepare: bool | None = None) -> list:  # type: ignore[type-arg]
        del sql, params, prepare
        return self.rows


def test_a_run_with_the_same_values_returns_the_same_family_objects() -> None:
    """At one run a second, most values do not change: the probe hands the store the objects
    of the run before (renderers convert a family once per object); a changed value is new."""
    import asyncio  # noqa: PLC0415
    from typing import cast  # noqa: PLC0415

    from exporter.probes.base import Session  # noqa: PLC0415
    from exporter.probes.slow_queries import SlowQueriesProbe  # noqa: PLC0415

    probe = SlowQueriesProbe(5, own_application_name="gecko-exporter")
    session = RowsSession()
    session.rows = [row(1, 0.5)]
    first = asyncio.run(probe.collect(cast(Session, session), 0.0))
    first_persistent = probe.persistent()
    session.rows = [row(1, 0.5, state="idle in transaction")]  # idle tx appears, active goes
    second = asyncio.run(probe.collect(cast(Session, session), 0.0))
    assert [f.name for f in second] == [f.name for f in first]
    changed = {f.name for a, f in zip(first, second, strict=True) if a is not f}
    assert changed == {
        "gecko_longest_active_query_seconds",
        "gecko_longest_idle_in_transaction_seconds",
    }
    assert all(a == b for a, b in zip(first[2:], second[2:], strict=True))
    assert all(a is b for a, b in zip(first_persistent, probe.persistent(), strict=True))
    session.rows = [row(2, 7.0)]  # a slow query: counted, so the counter is a new object
    asyncio.run(probe.collect(cast(Session, session), 0.0))
    assert probe.persistent()[0] is not first_persistent[0]
    assert probe.persistent()[0].samples[0].value == 1.0
