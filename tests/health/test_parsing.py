"""Probe SQL builders and row parsing, pure: canned rows in, families out."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from exporter.probes import bloat, database, indexes, locks, migrations, plans, statements, tables
from exporter.samples import Family

Row = dict[str, Any]


def series(families: list[Family], name: str) -> dict[tuple[str, ...], float]:
    fam = next(f for f in families if f.name == name)
    return {s.labels: s.value for s in fam.samples}


# -- indexes ----------------------------------------------------------------------
def test_indexes_absent_invalid_and_healthy() -> None:
    rows: list[Row] = [
        {"index_name": "A", "table_name": "T", "valid": True, "ready": True,
         "size_bytes": 16384, "scans": 7},
        {"index_name": "B", "table_name": "T", "valid": False, "ready": True,
         "size_bytes": 8192, "scans": 0},
        {"index_name": "D", "table_name": "T", "valid": True, "ready": False,
         "size_bytes": 8192, "scans": 0},
    ]  # fmt: skip
    fams = indexes.parse(rows, ["A", "B", "C", "D"])
    assert series(fams, "gecko_index_present") == {("A",): 1, ("B",): 1, ("C",): 0, ("D",): 1}
    assert series(fams, "gecko_index_valid") == {("A",): 1, ("B",): 0, ("C",): 0, ("D",): 0}
    assert series(fams, "gecko_index_size_bytes") == {("A",): 16384, ("B",): 8192, ("D",): 8192}
    assert series(fams, "gecko_index_scans_total")[("A",)] == 7
    assert ("C",) not in series(fams, "gecko_index_scans_total")


# -- plans ------------------------------------------------------------------------
PLAN: list[Row] = [
    {
        "Plan": {
            "Node Type": "Limit",
            "Parallel Aware": False,
            "Total Cost": 8.3,
            "Plans": [
                {
                    "Node Type": "Index Scan",
                    "Parent Relationship": "Outer",
                    "Scan Direction": "Backward",
                    "Index Name": "Scan_dedupe_lookup_idx",
                    "Relation Name": "Scan",
                    "Alias": "Scan",
                    "Plan Rows": 1,
                    "Index Cond": "(...)",
                }
            ],
        }
    }
]


def test_plan_shape_keeps_structure_and_drops_costs() -> None:
    shape = plans.plan_shape(plans.plan_root(PLAN))
    assert shape == {
        "Node Type": "Limit",
        "Plans": [
            {
                "Node Type": "Index Scan",
                "Parent Relationship": "Outer",
                "Scan Direction": "Backward",
                "Index Name": "Scan_dedupe_lookup_idx",
                "Relation Name": "Scan",
            }
        ],
    }
    costlier = [{"Plan": {**PLAN[0]["Plan"], "Total Cost": 999.0, "Plan Rows": 5}}]
    assert plans.fingerprint(plans.plan_shape(plans.plan_root(costlier))) == plans.fingerprint(
        shape
    )
    assert plans.uses_index(shape, "Scan_dedupe_lookup_idx")
    assert not plans.uses_index(shape, "Scan_recent_reports_idx")
    assert plans.shape_text(shape) == "Limit(Index Scan Backward[Scan.Scan_dedupe_lookup_idx])"
    # JSON text as well as parsed JSON
    assert plans.plan_root('[{"Plan": {"Node Type": "Result"}}]') == {"Node Type": "Result"}
    with pytest.raises(TypeError):
        plans.plan_root([{"Nope": 1}])


def test_plan_tracker_counts_each_change_once() -> None:
    tracker = plans.PlanTracker()
    index_scan = plans.plan_shape(plans.plan_root(PLAN))
    seq_scan = {"Node Type": "Limit", "Plans": [{"Node Type": "Seq Scan", "Relation Name": "Scan"}]}
    assert tracker.observe("q", "custom", index_scan) is None  # baseline
    assert tracker.observe("q", "custom", index_scan) is None
    change = tracker.observe("q", "custom", seq_scan)
    assert change is not None and change.old_shape == index_scan and change.new_shape == seq_scan
    assert tracker.observe("q", "custom", seq_scan) is None
    assert tracker.observe("q", "generic", seq_scan) is None  # its own baseline
    assert tracker.changes == {("q", "custom"): 1, ("q", "generic"): 0}


def test_generic_plan_statements_by_version() -> None:
    sql = 'SELECT * FROM "Scan" WHERE "slug" = %s AND "status" = %s LIMIT %s'
    assert plans.dollar_params(sql).endswith('"slug" = $1 AND "status" = $2 LIMIT $3')
    when = datetime(2026, 11, 24, 8, 0, 0, 123000)
    new = plans.generic_plan_steps(160000, "q", sql, ("a", "done", 1))
    assert new == [
        plans.Step(
            'EXPLAIN (GENERIC_PLAN, FORMAT JSON, COSTS OFF) SELECT * FROM "Scan" WHERE "slug" = $1 '
            'AND "status" = $2 LIMIT $3'
        )
    ]
    old = plans.generic_plan_steps(150010, "q", sql, ("it's", when, 1))
    assert [s.sql for s in old[:2]] == [
        "BEGIN READ ONLY", "SET LOCAL plan_cache_mode = force_generic_plan"
    ]  # fmt: skip
    assert old[2].sql.startswith("PREPARE gecko_plan_q AS SELECT") and old[2].literals is None
    # the arguments are bound client-side by the driver (Session.fetch_literals), not quoted here
    assert old[3] == plans.Step(
        "EXPLAIN (FORMAT JSON, COSTS OFF) EXECUTE gecko_plan_q(%s, %s, %s)", ("it's", when, 1)
    )
    assert old[3].explains and not any(s.explains for s in old[:3] + old[4:])
    assert old[4:] == [plans.Step("DEALLOCATE gecko_plan_q"), plans.Step("COMMIT")]
    with pytest.raises(ValueError, match="placeholders"):
        plans.dollar_params("SELECT %(x)s")


def test_critical_queries_bind_realistic_values() -> None:
    inputs = plans.PlanInputs(
        "https://a.example/", plans.FALLBACK_SCAN, datetime(2026, 1, 1, 0, 0, 0)
    )
    by_name = {q.name: q for q in plans.critical_queries("public")}
    assert set(by_name) == {
        "scan_lookup", "report_scan", "report_evidence", "report_issues", "recent_reports"
    }  # fmt: skip
    for query in by_name.values():
        assert query.sql.count("%s") == len(query.params(inputs))
    assert by_name["scan_lookup"].params(inputs)[:2] == ("https://a.example/", "done")
    assert by_name["report_evidence"].index == "Evidence_scan_covering_idx"


# -- tables, database, bloat ----------------------------------------------------------
TABLE: Row = {
    "schema_name": "public", "table_name": "Scan", "size_bytes": 81920.0, "seq_scan": 3,
    "seq_tup_read": 300, "idx_scan": 9, "idx_tup_fetch": 12, "n_live_tup": 75,
    "n_dead_tup": 25, "last_autovacuum": 1.7e9, "last_autoanalyze": None,
    "heap_blks_hit": 40, "heap_blks_read": 2, "idx_blks_hit": 30, "idx_blks_read": 1,
}  # fmt: skip


def test_tables_parse_labels_ratios_and_absent_timestamps() -> None:
    other = {**TABLE, "schema_name": "audit", "n_live_tup": 0, "n_dead_tup": 0,
             "last_autovacuum": None}  # fmt: skip
    fams = tables.parse({"tables_total": 120, "tables": [TABLE, other]}, "public")
    assert series(fams, "gecko_table_seq_scans_total") == {("Scan",): 3, ("audit.Scan",): 3}
    assert series(fams, "gecko_table_dead_tuple_ratio") == {("Scan",): 0.25, ("audit.Scan",): 0}
    assert series(fams, "gecko_table_last_autovacuum_timestamp_seconds") == {("Scan",): 1.7e9}
    assert series(fams, "gecko_table_last_autoanalyze_timestamp_seconds") == {}
    assert series(fams, "gecko_table_heap_blocks_read_total")[("Scan",)] == 2
    assert series(fams, "gecko_tables") == {(): 120}
    assert series(fams, "gecko_tables_exported") == {(): 2}
    kinds = {f.name: f.kind for f in fams}
    assert kinds["gecko_table_index_blocks_hit_total"] == "counter"
    assert kinds["gecko_table_size_bytes"] == "gauge"


def test_tables_sql_is_bounded_by_parameters() -> None:
    assert "LIMIT %(limit)s" in tables.SQL and "ANY(%(schemas)s)" in tables.SQL
    assert "pg_relation_size" not in tables.SQL + bloat.CATALOG_SQL + indexes.SQL


def test_database_counters() -> None:
    fams = database.parse({"blks_hit": 900, "blks_read": 100})
    assert series(fams, "gecko_database_blocks_hit_total") == {(): 900}
    assert series(fams, "gecko_database_blocks_read_total") == {(): 100}


CATALOG_ROW: Row = {
    "relpages": 1000.0, "reltuples": 50_000.0, "toast_pages": 0.0, "toast_tuples": 0.0,
    "fillfactor": 100, "block_size": 8192, "n_columns": 2, "n_stats": 2,
    "data_width": 100.0, "max_null_frac": 0.0,
}  # fmt: skip


def test_catalog_bloat_estimate() -> None:
    # tuple = 4 + align(23) 24 + align(100) 104 = 132 bytes; 50 000 x 132 / 8168 = 808.03
    # -> 809 pages expected of 1000: 191 pages wasted
    estimate = bloat.catalog_estimate(CATALOG_ROW)
    assert estimate is not None
    assert estimate.bytes == 191 * 8192
    assert estimate.ratio == pytest.approx(0.191)
    packed = bloat.catalog_estimate({**CATALOG_ROW, "relpages": 700.0})
    assert packed == bloat.Bloat(0.0, 0.0)  # never negative
    half_full = bloat.catalog_estimate({**CATALOG_ROW, "fillfactor": 50, "relpages": 1617.0})
    assert half_full is not None and half_full.ratio == 0  # fillfactor space is not bloat
    assert bloat.catalog_estimate({**CATALOG_ROW, "reltuples": -1.0}) is None  # never analyzed
    assert bloat.catalog_estimate({**CATALOG_ROW, "n_stats": 1}) is None  # missing stats
    assert bloat.catalog_estimate({**CATALOG_ROW, "relpages": 0.0}) == bloat.Bloat(0.0, 0.0)


def test_pgstattuple_bloat_and_families() -> None:
    measured = bloat.approx_bloat(
        {"table_len": 8192 * 10, "dead_tuple_len": 8192 * 3, "approx_free_space": 8192 * 2}
    )
    assert measured == bloat.Bloat(8192 * 5, 0.5)
    fams = bloat.families({"Scan": measured}, exact=1)
    assert series(fams, "gecko_table_bloat_ratio") == {("Scan",): 0.5}
    assert series(fams, "gecko_table_bloat_pgstattuple_tables") == {(): 1}
    assert "pgstattuple_approx(%s::oid::regclass)" in bloat.approx_sql("public")


def test_bloat_probe_lane_follows_pgstattuple() -> None:
    probe = bloat.BloatProbe(["public"], max_tables=5, default_schema="public")
    assert probe.lane == "catalog"
    exact = bloat.BloatProbe(["public"], max_tables=5, default_schema="public", pgstattuple=True)
    assert exact.lane == "app"


# -- statements -------------------------------------------------------------------
def stmt_rows(**totals: float) -> list[Row]:
    return [{"queryid": q, "calls": 10, "total_ms": t, "max_ms": 50} for q, t in totals.items()]


def test_statement_deltas_pick_the_top_of_the_interval() -> None:
    tracker = statements.StatementTracker(top_n=2)
    top, tracked = tracker.update(stmt_rows(a=1000, b=10, c=500))
    assert [s.queryid for s in top] == ["a", "c"] and tracked == 3  # first run: since reset
    top, _ = tracker.update(stmt_rows(a=1001, b=600, c=500))
    assert [(s.queryid, s.interval_ms) for s in top] == [("b", 590), ("a", 1)]
    top, _ = tracker.update(stmt_rows(a=20, b=600, c=500))  # a was reset
    assert [(s.queryid, s.interval_ms) for s in top] == [("a", 20)]
    top, tracked = tracker.update([])
    assert top == [] and tracked == 0


def test_statement_families() -> None:
    top = [statements.Statement("-42", calls=4, total_ms=200, max_ms=120, interval_ms=50)]
    fams = statements.parse(top, tracked=9)
    assert series(fams, "gecko_statements_available") == {(): 1}
    assert series(fams, "gecko_statement_calls_total") == {("-42",): 4}
    assert series(fams, "gecko_statement_exec_time_seconds_total") == {("-42",): 0.2}
    assert series(fams, "gecko_statement_mean_exec_time_seconds") == {("-42",): 0.05}
    assert series(fams, "gecko_statement_max_exec_time_seconds") == {("-42",): 0.12}
    assert series(statements.unavailable(), "gecko_statements_available") == {(): 0}


@pytest.mark.parametrize(
    ("version", "total", "peak", "since"),
    [("1.7", "total_time", "max_time", False),  # PostgreSQL 12 and older
     ("1.8", "total_exec_time", "max_exec_time", False),  # 13
     ("1.9", "total_exec_time", "max_exec_time", False),  # 14
     ("1.10", "total_exec_time", "max_exec_time", False),  # 15, 16
     ("1.11", "total_exec_time", "max_exec_time", True),  # 17: stats_since
     ("1.12", "total_exec_time", "max_exec_time", True)],  # 18
)  # fmt: skip
def test_statement_columns_follow_the_extension_version(
    version: str, total: str, peak: str, since: bool
) -> None:
    sql = statements.build_sql("ext", version, exclude_own_role=False)
    assert f"s.{total}::float8 AS total_ms" in sql and f"s.{peak}::float8 AS max_ms" in sql
    assert "s.rows::float8 AS rows" in sql and "FULL JOIN unnest(" in sql
    assert ("s.stats_since AS since" in sql) is since
    newer = statements.version_tuple(version) >= (1, 9)
    toplevel = "s.toplevel AS toplevel" if newer else "true AS toplevel"
    assert toplevel in sql
    assert '"ext".pg_stat_statements(showtext := false)' in sql
    assert "AS own" in sql and "s.userid <>" not in sql
    assert "s.userid <>" in statements.build_sql("ext", version, exclude_own_role=True)


def test_preload_detection_and_reasons() -> None:
    assert statements.preloaded("pg_stat_statements")
    assert statements.preloaded('auto_explain, "$libdir/pg_stat_statements.so"')
    assert not statements.preloaded("")
    assert not statements.preloaded("pg_stat_statements_extra, auto_explain")
    assert statements.unavailable_reason("SQLSTATE 42501: permission denied") == (
        "permission_denied"
    )


# -- locks ----------------------------------------------------------------------
def test_lock_queue_summary_excludes_the_exporter() -> None:
    activity: list[Row] = [
        {"pid": 10, "application_name": "", "state_seconds": 9.0},  # ALTER TABLE
        {"pid": 11, "application_name": "api", "state_seconds": 4.0},  # SELECT behind it
        {"pid": 12, "application_name": "gecko-exporter", "state_seconds": 0.05},
        {"pid": 13, "application_name": "worker", "state_seconds": 2.0},  # row lock
    ]
    lock_rows: list[Row] = [
        {"pid": 10, "locktype": "relation", "mode": "AccessExclusiveLock", "relation": 1,
         "wait_seconds": 8.5, "blocked_by": [5]},
        {"pid": 11, "locktype": "relation", "mode": "AccessShareLock", "relation": 1,
         "wait_seconds": 3.5, "blocked_by": [10]},
        {"pid": 12, "locktype": "relation", "mode": "AccessShareLock", "relation": 1,
         "wait_seconds": 20.0, "blocked_by": [10]},
        {"pid": 13, "locktype": "transactionid", "mode": "ShareLock", "relation": None,
         "wait_seconds": None, "blocked_by": [6]},
        {"pid": 99, "locktype": "relation", "mode": "AccessShareLock", "relation": 1,
         "wait_seconds": 1.0, "blocked_by": [10]},  # no longer waiting: ignored
    ]  # fmt: skip
    found = locks.waiters(activity, lock_rows)
    assert [w.pid for w in found] == [10, 11, 12, 13]
    assert found[3].wait_seconds == 2.0  # PG 13 / no waitstart: state age
    summary = locks.summarize(found, "gecko-exporter")
    assert summary == locks.LockSummary(
        waiting=3,
        longest_wait_seconds=8.5,
        access_exclusive_waiting=1,
        waiting_behind_access_exclusive=1,
        access_exclusive_pids=(10,),
    )
    fams = locks.parse(summary)
    assert series(fams, "gecko_lock_waiting_behind_access_exclusive") == {(): 1}
    assert locks.summarize([], "x") == locks.LockSummary(0, 0.0, 0, 0, ())


def test_locks_sql_by_version() -> None:
    assert "l.waitstart" in locks.locks_sql(140000)
    assert "waitstart" not in locks.locks_sql(130010)
    assert "pg_blocking_pids" not in locks.WAITING_SQL  # only for backends already waiting


# -- migrations -------------------------------------------------------------------
def test_migrations_parse_builds_and_invalid_indexes() -> None:
    catalog: Row = {
        "table_present": True, "lock_holders": 1, "lock_waiters": 0, "builds_total": 1,
        "builds": [{"table_schema": "public", "table_name": "Scan",
                    "index_name": "Scan_new_idx", "phase": "building index: scanning table",
                    "blocks_total": 200, "blocks_done": 50, "tuples_total": 0, "tuples_done": 0,
                    "lockers_total": 0, "lockers_done": 0}],
        "invalid_total": 2,
        "invalid": [{"schema_name": "public", "index_name": "Evidence_x_idx",
                     "table_name": "Evidence", "ready": False},
                    {"schema_name": "audit", "index_name": "log_idx", "table_name": "log",
                     "ready": True}],
    }  # fmt: skip
    row: Row = {"applied": 11, "failed": 1, "unfinished": 0, "rolled_back": 1,
                "last_finished": 1.76e9, "failed_rows": [{"migration_name": "x"}]}  # fmt: skip
    state = migrations.migration_state(True, row)
    fams = migrations.parse(catalog, state, "public")
    assert series(fams, "gecko_migrations_failed") == {(): 1}
    assert series(fams, "gecko_migrations_applied") == {(): 11}
    assert series(fams, "gecko_migration_in_progress") == {(): 1}
    assert series(fams, "gecko_migration_last_finished_timestamp_seconds") == {(): 1.76e9}
    assert series(fams, "gecko_index_build_progress_ratio") == {
        ("Scan", "Scan_new_idx", "building index: scanning table"): 0.25
    }
    assert series(fams, "gecko_invalid_index") == {
        ("Evidence_x_idx", "Evidence"): 1,
        ("audit.log_idx", "audit.log"): 1,
    }
    absent = migrations.parse(
        {**catalog, "lock_holders": 0}, migrations.migration_state(False, None), "public"
    )
    assert series(absent, "gecko_migrations_table_present") == {(): 0}
    assert series(absent, "gecko_migrations_failed") == {(): 0}
    assert "gecko_migration_last_finished_timestamp_seconds" not in {f.name for f in absent}


def test_build_ratio_follows_the_phase_counters() -> None:
    assert migrations.build_ratio({"blocks_total": 0, "tuples_total": 10, "tuples_done": 4}) == 0.4
    assert migrations.build_ratio({"lockers_total": 2, "lockers_done": 1}) == 0.5
    assert migrations.build_ratio({}) == 0.0


def test_advisory_key_split_and_table_sql() -> None:
    assert migrations.split_key(72707369) == (0, 72707369)
    assert migrations.split_key((5 << 32) | 7) == (5, 7)
    sql = migrations.table_sql("public", "_prisma_migrations")
    assert 'FROM "public"."_prisma_migrations"' in sql
    assert "logs IS NOT NULL" in sql
