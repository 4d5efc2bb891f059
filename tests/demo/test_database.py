"""The demo database on real PostgreSQL 18 and 15, in both schema variants."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gecko_demo import admin, queries, schema
from tests.demo.conftest import DemoDatabase
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

COMMON_INDEXES = {
    "User_email_key", "User_apiKey_key", "User_email_idx", "User_apiKey_idx", "Scan_slug_key",
    "Scan_user_history_idx", "Scan_public_reports_idx", "Scan_ip_ratelimit_idx",
    "RateLimit_identifier_date_key", "RateLimit_lookup_idx", "WatchedUrl_userId_url_key",
    "WatchedUrl_schedule_idx", "PasswordResetToken_tokenHash_key", "PasswordResetToken_user_idx",
    "WalletLink_userId_key", "WalletLink_walletAddressHash_key", "WalletLink_walletAddressHash_idx",
}  # fmt: skip


def _plan_nodes(plan: Any) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        nodes.append(node)
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return nodes


def _indexes_used(plan: Any) -> set[str]:
    return {str(n["Index Name"]) for n in _plan_nodes(plan) if "Index Name" in n}


def _seq_scanned(plan: Any) -> set[str]:
    return {str(n["Relation Name"]) for n in _plan_nodes(plan) if n["Node Type"] == "Seq Scan"}


def _custom_plan(conn: admin.AdminConnection, statement: str, params: tuple[Any, ...]) -> Any:
    """EXPLAIN with bound values: the custom plan a prepared statement starts with."""
    return conn.fetchval("EXPLAIN (FORMAT JSON) " + statement, params)


def _generic_plan(conn: admin.AdminConnection, statement: str, params: tuple[Any, ...]) -> Any:
    """The generic plan (plan_cache_mode=force_generic_plan) of the prepared statement."""
    numbered = statement
    for n in range(1, len(params) + 1):
        numbered = numbered.replace("%s", f"${n}", 1)
    name = f"g_{secrets.token_hex(4)}"
    conn.execute("SET plan_cache_mode = force_generic_plan")
    conn.execute(f"PREPARE {name} AS {numbered}")
    try:
        args = ", ".join(conn.literal(p) for p in params)
        return conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE {name}({args})")
    finally:
        conn.execute(f"DEALLOCATE {name}")
        conn.execute("RESET plan_cache_mode")


def _sample_done_scan(conn: admin.AdminConnection) -> tuple[str, str, str]:
    row = conn.fetchone(
        'SELECT "id", "slug", "normalizedInput" FROM "Scan" WHERE "status" = %s'
        ' AND "targetType" = %s AND EXISTS (SELECT 1 FROM "Issue" i WHERE i."scanId" = "Scan"."id")'
        ' ORDER BY "createdAt" DESC LIMIT 1',
        ("done", "url"),
    )
    assert row is not None
    return str(row[0]), str(row[1]), str(row[2])


def test_row_counts_match_the_load(demo_db: DemoDatabase) -> None:
    stats = demo_db.stats
    with admin.connect(demo_db.app_dsn, application_name="gecko-tests") as conn:
        counts = {
            table: conn.fetchval(f'SELECT count(*) FROM "{table}"')
            for table in ("Scan", "Evidence", "Issue", "User", "CachedList")
        }
        rows = conn.fetchall('SELECT "status", count(*) FROM "Scan" GROUP BY 1')
    statuses = {str(r[0]): int(r[1]) for r in rows}
    assert counts == {
        "Scan": stats.scans,
        "Evidence": stats.evidence,
        "Issue": stats.issues,
        "User": stats.users,
        "CachedList": 3,
    }
    assert statuses == stats.statuses
    assert stats.evidence > stats.scans * 5
    assert statuses["done"] > 0.9 * stats.scans


def test_columns_match_the_prisma_schema(demo_db: DemoDatabase) -> None:
    with admin.connect(demo_db.app_dsn, application_name="gecko-tests") as conn:
        rows = conn.fetchall(
            "SELECT table_name, column_name, data_type, udt_name, is_nullable, column_default,"
            " datetime_precision FROM information_schema.columns WHERE table_schema = 'public'"
            " AND table_name = ANY(%s)",
            (list(schema.APP_TABLES),),
        )
    cols = {(r[0], r[1]): r[2:] for r in rows}
    scan = [c for (t, c) in cols if t == "Scan"]
    assert len(scan) == 22
    assert cols[("Scan", "status")][:3] == ("text", "text", "NO")
    assert cols[("Scan", "status")][3] is None  # no default, not an enum
    assert cols[("Scan", "progress")][1:4] == ("int4", "NO", "0")
    assert cols[("Scan", "meta")][1] == "jsonb"
    for (table, column), (data_type, _udt, _null, _default, precision) in cols.items():
        if data_type.startswith("timestamp") and table != "_prisma_migrations":
            assert (data_type, precision) == ("timestamp without time zone", 3), (table, column)
        if column == "id":
            assert data_type == "text", table
    assert cols[("Issue", "severity")][:3] == ("USER-DEFINED", "IssueSeverity", "NO")
    assert cols[("Issue", "sortWeight")][2:4] == ("YES", "0")
    assert cols[("Evidence", "kind")][2] == "NO"
    prt_default = cols[("PasswordResetToken", "updatedAt")][3]
    if demo_db.variant == "incremental":
        assert prt_default == "CURRENT_TIMESTAMP"
    else:
        assert prt_default is None


def test_foreign_keys_and_cascades(demo_db: DemoDatabase) -> None:
    expected = {
        "Scan_userId_fkey": ("n", "c"),
        "Scan_dedupeOfId_fkey": ("n", "c"),
        "Evidence_scanId_fkey": ("c", "c"),
        "Issue_scanId_fkey": ("c", "c"),
        "WatchedUrl_userId_fkey": ("c", "c"),
        "PasswordResetToken_userId_fkey": ("c", "c"),
        "WalletLink_userId_fkey": ("c", "c"),
    }
    conn = admin.connect(demo_db.app_dsn, application_name="gecko-tests", autocommit=False)
    try:
        found = {
            str(r[0]): (str(r[1]), str(r[2]))
            for r in conn.fetchall(
                "SELECT conname, confdeltype, confupdtype FROM pg_constraint"
                " WHERE contype = 'f' AND connamespace = 'public'::regnamespace"
            )
        }
        assert found == expected
        scan_id, _slug, _input = _sample_done_scan(conn)
        conn.execute('DELETE FROM "Scan" WHERE "id" = %s', (scan_id,))
        left = conn.fetchval(
            'SELECT (SELECT count(*) FROM "Evidence" WHERE "scanId" = %s)'
            ' + (SELECT count(*) FROM "Issue" WHERE "scanId" = %s)',
            (scan_id, scan_id),
        )
        assert left == 0
    finally:
        conn.close()  # never committed: the data stays as loaded


def test_indexes_of_the_variant(demo_db: DemoDatabase) -> None:
    with admin.connect(demo_db.app_dsn, application_name="gecko-tests") as conn:
        rows = conn.fetchall(
            "SELECT c.relname, i.indisvalid, i.indisready, i.indisprimary, i.indpred IS NOT NULL"
            " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
        )
    secondary = {str(r[0]) for r in rows if not r[3]}
    assert secondary == COMMON_INDEXES | schema.VARIANT_INDEXES[demo_db.variant]
    assert all(r[1] and r[2] for r in rows)
    partial = {str(r[0]) for r in rows if r[4]}
    if demo_db.variant == "incremental":
        assert partial == {"Scan_dedupe_lookup_idx", "Scan_recent_reports_idx"}
    else:
        assert partial == set()


def test_prisma_migrations_table(demo_db: DemoDatabase) -> None:
    with admin.connect(demo_db.app_dsn, application_name="gecko-tests") as conn:
        columns = conn.fetchall(
            "SELECT column_name, data_type, character_maximum_length, is_nullable"
            " FROM information_schema.columns WHERE table_name = '_prisma_migrations'"
            " ORDER BY ordinal_position"
        )
        rows = conn.fetchall(
            "SELECT migration_name, checksum, finished_at, rolled_back_at, logs,"
            " applied_steps_count FROM _prisma_migrations ORDER BY started_at"
        )
    assert columns == [
        ("id", "character varying", 36, "NO"),
        ("checksum", "character varying", 64, "NO"),
        ("finished_at", "timestamp with time zone", None, "YES"),
        ("migration_name", "character varying", 255, "NO"),
        ("logs", "text", None, "YES"),
        ("rolled_back_at", "timestamp with time zone", None, "YES"),
        ("started_at", "timestamp with time zone", None, "NO"),
        ("applied_steps_count", "integer", None, "NO"),
    ]
    assert [r[0] for r in rows] == list(schema.MIGRATIONS[demo_db.variant])
    for _name, checksum, finished, rolled_back, logs, steps in rows:
        assert len(checksum) == 64
        assert finished is not None and rolled_back is None and logs is None
        assert steps == 1


def test_tables_are_analyzed_and_extensions_present(demo_db: DemoDatabase) -> None:
    with admin.connect(demo_db.superuser_dsn, application_name="gecko-tests") as conn:
        analyzed = conn.fetchall(
            "SELECT relname FROM pg_stat_user_tables WHERE schemaname = 'public'"
            " AND coalesce(last_analyze, last_autoanalyze) IS NOT NULL"
        )
        extensions = {str(r[0]) for r in conn.fetchall("SELECT extname FROM pg_extension")}
    assert {"Scan", "Evidence", "Issue"} <= {str(r[0]) for r in analyzed}
    assert {"pg_stat_statements", "pgstattuple"} <= extensions
    assert schema.ensure_extensions(demo_db.superuser_dsn) == {"pg_stat_statements", "pgstattuple"}


def test_app_queries_use_the_expected_indexes(demo_db: DemoDatabase) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    with admin.connect(demo_db.app_dsn, application_name="gecko-tests") as conn:
        scan_id, slug, normalized = _sample_done_scan(conn)
        dedupe = _custom_plan(
            conn, queries.DEDUPE_LOOKUP, (normalized, "done", now - timedelta(minutes=15), 1, 0)
        )
        by_slug = _custom_plan(conn, queries.REPORT_SCAN_BY_SLUG, (slug, 1, 0))
        evidence = _custom_plan(conn, queries.REPORT_EVIDENCE, (scan_id, 0))
        issues = _custom_plan(conn, queries.REPORT_ISSUES, (scan_id, 0))
        recent = _custom_plan(conn, queries.RECENT_REPORTS, ("done", 10, 0))
        poll = _custom_plan(conn, queries.STATUS_POLL, (scan_id, 1, 0))
        rows = conn.fetchall(queries.REPORT_ISSUES, (scan_id, 0), prepare=True)
    assert _indexes_used(by_slug) == {"Scan_slug_key"}
    assert _indexes_used(poll) == {"Scan_pkey"}
    assert "Scan_recent_reports_idx" in _indexes_used(recent)
    assert "Evidence" in _seq_scanned(recent)  # the count groups the whole Evidence table
    for plan in (dedupe, by_slug, evidence, issues, poll):
        assert not _seq_scanned(plan), json.dumps(plan)[:500]
    if demo_db.variant == "fresh":
        assert _indexes_used(dedupe) == {"Scan_dedupe_lookup_idx"}
        assert _indexes_used(evidence) == {"Evidence_scan_covering_idx"}
        assert _indexes_used(issues) == {"Issue_scan_covering_idx"}
    else:
        assert _indexes_used(dedupe) <= {"Scan_dedupe_lookup_idx", "Scan_status_finishedAt_idx"}
        assert len(_indexes_used(evidence)) == 1
        assert _indexes_used(evidence) <= {
            "Evidence_scan_covering_idx", "Evidence_scanId_idx", "Evidence_scanId_count_idx",
        }  # fmt: skip
        assert _indexes_used(issues) <= {"Issue_scan_covering_idx", "Issue_scanId_idx"}
    # issues come back in sortWeight order with the enum as text
    weights = [r[10] for r in rows]
    assert weights == sorted(weights) and rows and all(isinstance(r[3], str) for r in rows)


def test_generic_plans_cannot_use_the_partial_indexes(demo_db: DemoDatabase) -> None:
    """§4.1: Prisma binds 'done' as $2, so a generic plan cannot prove the partial predicate."""
    now = datetime.now(UTC).replace(tzinfo=None)
    with admin.connect(demo_db.app_dsn, application_name="gecko-tests") as conn:
        _scan_id, _slug, normalized = _sample_done_scan(conn)
        dedupe = _generic_plan(
            conn, queries.DEDUPE_LOOKUP, (normalized, "done", now - timedelta(minutes=15), 1, 0)
        )
        recent = _generic_plan(conn, queries.RECENT_REPORTS, ("done", 10, 0))
    if demo_db.variant == "fresh":
        assert "Scan_dedupe_lookup_idx" in _indexes_used(dedupe)
    else:
        assert "Scan_dedupe_lookup_idx" not in _indexes_used(dedupe)
        assert "Scan_recent_reports_idx" not in _indexes_used(recent)


def test_monitor_role_reads_everything_and_writes_nothing(demo_db: DemoDatabase) -> None:
    with (
        admin.connect(demo_db.app_dsn, application_name="gecko-advisor-backend") as app,
        admin.connect(demo_db.monitor_dsn, application_name="gecko-tests-monitor") as mon,
    ):
        app.execute("SELECT 42 AS visible_to_the_monitor")
        for table in (*schema.APP_TABLES, schema.MIGRATIONS_TABLE):
            assert mon.fetchval(f'SELECT count(*) >= 0 FROM "public"."{table}"') is True
        activity = wait_until(
            lambda: mon.fetchone(
                "SELECT usename, query FROM pg_stat_activity WHERE pid = %s", (app.backend_pid,)
            ),
            timeout=10,
            message="the app session in pg_stat_activity",
        )
        assert activity == (demo_db.app_role, "SELECT 42 AS visible_to_the_monitor")
        assert mon.fetchval("SELECT count(*) > 0 FROM pg_stat_statements") is True
        assert mon.fetchval(
            "SELECT count(*) FROM pg_stat_statements WHERE query LIKE %s", ("%visible_to%",)
        )
        assert mon.fetchval("SELECT pg_has_role(current_user, 'pg_monitor', 'USAGE')") is True
        assert mon.fetchval("SELECT rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles"
                            " WHERE rolname = current_user") is False  # fmt: skip
        denied = [
            'INSERT INTO "CachedList" ("id", "source", "version", "data") VALUES (%s, %s, %s, %s)',
            'UPDATE "Scan" SET "progress" = 0',
            'DELETE FROM "Issue"',
            'TRUNCATE "Evidence"',
            'CREATE TABLE "public"."monitor_was_here" ("id" int)',
            "DELETE FROM _prisma_migrations",
        ]
        for statement in denied:
            params = ("x", "easyprivacy", "demo-2", "{}") if "%s" in statement else None
            with pytest.raises(admin.AdminError) as failure:
                mon.execute(statement, params)
            assert failure.value.sqlstate == "42501", statement
    with admin.connect(demo_db.app_dsn, application_name="gecko-tests") as conn:
        assert conn.fetchval('SELECT count(*) FROM "CachedList"') == 3


def test_monitor_role_is_idempotent(demo_db: DemoDatabase) -> None:
    role = f"gecko_monitor_again_{secrets.token_hex(3)}"
    schema.create_monitor_role(demo_db.superuser_dsn, role, password="first-password")
    schema.create_monitor_role(demo_db.superuser_dsn, role, password="second-password")
    new_dsn = admin.dsn_replace(demo_db.superuser_dsn, user=role, password="second-password")
    old_dsn = admin.dsn_replace(demo_db.superuser_dsn, user=role, password="first-password")
    with admin.connect(new_dsn, application_name="gecko-tests") as conn:
        assert conn.fetchval('SELECT count(*) FROM "Scan"') == demo_db.stats.scans
    with pytest.raises(admin.AdminError) as failure:
        admin.connect(old_dsn, application_name="gecko-tests").close()
    assert "password authentication failed" in str(failure.value)
