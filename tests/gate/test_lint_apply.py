"""The lint rules' claims about Prisma, checked on real PostgreSQL (18 and 15).

Prisma Migrate (< 7.4) sends a whole migration.sql as one simple-Query message, which
PostgreSQL runs as one implicit transaction. psycopg does the same for a parameterless
multi-statement ``execute`` in autocommit mode, so these tests apply the example migrations
exactly the way ``prisma migrate deploy`` would and check that what lint flags fails and
what lint passes works, including the rollback files.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from exporter.gate.lint import LintOptions, lint
from exporter.gate.sql import load_migrations
from gecko_demo.cluster import LocalCluster
from tests.conftest import GeckoDatabase, build_gecko_database

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "gecko_demo" / "migrations"


@pytest.fixture(params=["18", "15"])
def fresh_db(request: pytest.FixtureRequest) -> Iterator[GeckoDatabase]:
    """A small incremental-variant Gecko database of its own (the tests change the schema)."""
    cluster: LocalCluster = request.getfixturevalue(
        "pg18_cluster" if request.param == "18" else "pg15_cluster"
    )
    db = build_gecko_database(cluster.dsn(), cluster=cluster, scans=200, variant="incremental")
    try:
        yield db
    finally:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db.dbname}" WITH (FORCE)')


def apply_like_prisma(dsn: str, sql_file: Path) -> None:
    """One simple-Query message with the whole file, as Prisma Migrate sends it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql_file.read_text().encode())


def index_state(dsn: str) -> dict[str, bool]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
        ).fetchall()
    return {str(name): bool(valid) for name, valid in rows}


def columns(dsn: str, table: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,)
        ).fetchall()
    return {r[0] for r in rows}


def test_concurrently_in_a_shared_file_fails_as_lint_says(
    fresh_db: GeckoDatabase, tmp_path: Path
) -> None:
    shared = tmp_path / "20240101000000_shared" / "migration.sql"
    shared.parent.mkdir()
    shared.write_text(
        "SET lock_timeout = '5s';\n" + 'CREATE INDEX CONCURRENTLY "x_idx" ON "Scan"("label");\n'
    )
    (shared.parent / "down.sql").write_text('DROP INDEX CONCURRENTLY IF EXISTS "x_idx";\n')
    result = lint(load_migrations([shared]), LintOptions(prisma_version="5.22"))
    assert "prisma-concurrently-in-transaction" in {f.rule for f in result.findings}
    with pytest.raises(psycopg.errors.ActiveSqlTransaction):  # SQLSTATE 25001
        apply_like_prisma(fresh_db.admin_dsn, shared)

    alone = tmp_path / "20240101000001_alone" / "migration.sql"
    alone.parent.mkdir()
    alone.write_text('CREATE INDEX CONCURRENTLY "x_idx" ON "Scan"("label");\n')
    (alone.parent / "down.sql").write_text('DROP INDEX CONCURRENTLY IF EXISTS "x_idx";\n')
    result = lint(load_migrations([alone]), LintOptions(prisma_version="5.22"))
    assert result.exit_code == 0
    apply_like_prisma(fresh_db.admin_dsn, alone)
    assert index_state(fresh_db.admin_dsn)["x_idx"] is True


def test_risky_phase1_fails_on_a_table_with_rows_and_rolls_back_whole(
    fresh_db: GeckoDatabase,
) -> None:
    """ADD COLUMN … NOT NULL without default (adding-required-field) aborts the whole file."""
    before = columns(fresh_db.admin_dsn, "Scan")
    with pytest.raises(psycopg.errors.NotNullViolation):
        apply_like_prisma(
            fresh_db.admin_dsn,
            EXAMPLES / "risky" / "20250919050000_phase1_schema" / "migration.sql",
        )
    assert columns(fresh_db.admin_dsn, "Scan") == before  # the rename before it rolled back too


def test_safe_examples_apply_in_order_and_roll_back(fresh_db: GeckoDatabase) -> None:
    dsn = fresh_db.admin_dsn
    migrations = load_migrations([EXAMPLES / "safe"])
    before_indexes = index_state(dsn)
    before_scan, before_issue = columns(dsn, "Scan"), columns(dsn, "Issue")
    for m in migrations:
        apply_like_prisma(dsn, m.path)
    after = index_state(dsn)
    assert after["Scan_dedupeOfId_idx"] and after["Issue_severity_category_idx"]
    assert after["Issue_evidenceId_idx"]
    assert "Evidence_scanId_count_idx" not in after and "Issue_scanId_idx" not in after
    assert {"shareText", "reportVersion", "scoreExact"} <= columns(dsn, "Scan")
    with psycopg.connect(dsn) as conn:
        unvalidated = conn.execute(
            "SELECT conname FROM pg_constraint WHERE NOT convalidated AND connamespace = 'public'::regnamespace"
        ).fetchall()
        not_null = conn.execute(
            "SELECT attnotnull FROM pg_attribute WHERE attrelid = '\"Issue\"'::regclass AND attname = 'sortWeight'"
        ).fetchone()
    assert unvalidated == []
    assert not_null == (True,)

    for m in reversed(migrations):
        assert m.rollback is not None
        apply_like_prisma(dsn, m.rollback)
    assert index_state(dsn) == before_indexes
    assert (columns(dsn, "Scan"), columns(dsn, "Issue")) == (before_scan, before_issue)
