"""Lint rules, each positive and negative, and their Prisma-version behaviour (real squawk)."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.cli import main
from exporter.gate.lint import Finding, LintOptions, LintResult, LintToolError, lint
from exporter.gate.sql import load_migrations

LOCKED = "SET lock_timeout = '5s';\nSET statement_timeout = '30s';\n"


class Repo:
    """A prisma/migrations folder in tmp_path."""

    def __init__(self, root: Path) -> None:
        self.root = root / "migrations"
        self.root.mkdir()
        self.count = 0

    def add(self, sql: str, *, down: str | None = "SELECT 1;\n", name: str = "m") -> Path:
        self.count += 1
        folder = self.root / f"2024010100{self.count:04d}_{name}"
        folder.mkdir()
        (folder / "migration.sql").write_text(sql)
        if down is not None:
            (folder / "down.sql").write_text(down)
        return folder


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path)


def run(*paths: Path, prisma: str = "5.22", ignore: tuple[str, ...] = ()) -> LintResult:
    return lint(
        load_migrations(list(paths)),
        LintOptions(prisma_version=prisma, ignore=frozenset(ignore)),
    )


def found(result: LintResult, rule: str) -> list[Finding]:
    return [f for f in result.findings if f.rule == rule]


def lines(result: LintResult, rule: str) -> list[tuple[int, str]]:
    return [(f.line, f.severity) for f in found(result, rule)]


# --------------------------------------------------------------------------- index builds


def test_plain_create_index_on_existing_table_is_an_error(repo: Repo) -> None:
    r = run(repo.add(LOCKED + 'CREATE INDEX "Scan_x_idx" ON "Scan"("x");\n'))
    assert lines(r, "require-concurrent-index-creation") == [(3, "error")]
    assert r.exit_code == 1


def test_create_index_on_table_created_earlier_in_the_migration_is_fine(repo: Repo) -> None:
    sql = (
        'CREATE TABLE "New" ("id" TEXT NOT NULL, "u" TEXT);\n'
        'CREATE INDEX "New_u_idx" ON "New"("u");\n'
        'CREATE UNIQUE INDEX "New_id_key" ON "New"("id");\n'
    )
    r = run(repo.add(sql))
    assert not found(r, "require-concurrent-index-creation")
    assert not found(r, "require-lock-timeout")  # nobody can queue on a table nobody sees yet
    assert r.exit_code == 0


def test_concurrent_create_index_alone_is_fine(repo: Repo) -> None:
    r = run(repo.add('CREATE INDEX CONCURRENTLY IF NOT EXISTS "i" ON "Scan"("x");\n'))
    assert not found(r, "require-concurrent-index-creation")
    assert not found(r, "prisma-concurrently-in-transaction")
    assert r.exit_code == 0


def test_plain_drop_index_is_an_error_concurrent_alone_is_fine(repo: Repo) -> None:
    r = run(repo.add(LOCKED + 'DROP INDEX IF EXISTS "Scan_x_idx";\n'))
    assert lines(r, "require-concurrent-index-deletion") == [(3, "error")]
    r = run(repo.add('DROP INDEX CONCURRENTLY IF EXISTS "Scan_x_idx";\n'))
    assert not found(r, "require-concurrent-index-deletion")
    assert r.exit_code == 0


# --------------------------------------------------------------------------- CONCURRENTLY x Prisma


def test_concurrently_sharing_a_file_fails_before_prisma_splits(repo: Repo) -> None:
    sql = 'CREATE INDEX CONCURRENTLY "a" ON "Scan"("x");\nDROP INDEX CONCURRENTLY "b";\n'
    r = run(repo.add(sql), prisma="5.22")
    assert lines(r, "prisma-concurrently-in-transaction") == [(1, "error"), (2, "error")]
    assert "one implicit transaction" in found(r, "prisma-concurrently-in-transaction")[0].message
    assert r.exit_code == 1


def test_a_leading_set_counts_as_a_second_statement(repo: Repo) -> None:
    r = run(
        repo.add("SET lock_timeout = '5s';\n" + 'CREATE INDEX CONCURRENTLY "a" ON "Scan"("x");\n')
    )
    assert lines(r, "prisma-concurrently-in-transaction") == [(2, "error")]


def test_prisma_that_splits_runs_create_index_concurrently_alongside_others(repo: Repo) -> None:
    sql = (
        LOCKED
        + 'CREATE INDEX CONCURRENTLY "a" ON "Scan"("x");\nCREATE INDEX CONCURRENTLY "b" ON "Scan"("y");\n'
    )
    folder = repo.add(sql)
    assert found(run(folder, prisma="7.3"), "prisma-concurrently-in-transaction")
    r = run(folder, prisma="7.4")
    assert not found(r, "prisma-concurrently-in-transaction")
    assert lines(r, "prisma-split-script") == [(3, "info")]
    assert r.exit_code == 0


def test_drop_index_concurrently_defeats_prismas_splitter(repo: Repo) -> None:
    sql = 'CREATE INDEX CONCURRENTLY "a" ON "Scan"("x");\nDROP INDEX CONCURRENTLY "b";\n'
    r = run(repo.add(sql), prisma="7.4.0")
    problems = found(r, "prisma-concurrently-in-transaction")
    assert [(f.line, f.severity) for f in problems] == [(1, "error"), (2, "error")]
    assert "cannot split this file" in problems[0].message
    assert "line 2" in problems[0].message
    assert not found(r, "prisma-split-script")


def test_drop_index_concurrently_alone_works_with_every_prisma(repo: Repo) -> None:
    folder = repo.add('DROP INDEX CONCURRENTLY IF EXISTS "b";\n')
    for version in ("5.22", "7.4", "7.9"):
        assert not found(run(folder, prisma=version), "prisma-concurrently-in-transaction")


def test_concurrently_inside_begin_commit_fails_with_any_prisma(repo: Repo) -> None:
    folder = repo.add('BEGIN;\nCREATE INDEX CONCURRENTLY "a" ON "Scan"("x");\nCOMMIT;\n')
    for version in ("5.22", "7.4"):
        r = run(folder, prisma=version)
        assert lines(r, "prisma-concurrently-in-transaction") == [(2, "error")], version


# --------------------------------------------------------------------------- timeouts


def test_missing_lock_timeout_before_a_locking_statement(repo: Repo) -> None:
    r = run(repo.add('ALTER TABLE "Scan" ADD COLUMN "x" TEXT;\n'))
    assert lines(r, "require-lock-timeout") == [(1, "error")]
    r = run(repo.add(LOCKED + 'ALTER TABLE "Scan" ADD COLUMN "x" TEXT;\n'))
    assert not found(r, "require-lock-timeout")
    assert r.exit_code == 0


def test_lone_concurrent_statement_gets_role_level_timeout_advice_as_info(repo: Repo) -> None:
    r = run(repo.add('CREATE INDEX CONCURRENTLY "a" ON "Scan"("x");\n'))
    [finding] = found(r, "require-lock-timeout")
    assert finding.severity == "info"
    assert "options=-c lock_timeout" in finding.fix


# --------------------------------------------------------------------------- app compatibility


@pytest.mark.parametrize(
    ("sql", "rule"),
    [
        ('ALTER TABLE "Scan" RENAME COLUMN "label" TO "tag";', "renaming-column"),
        ('ALTER TABLE "Scan" RENAME TO "Scans";', "renaming-table"),
        ('ALTER TABLE "Scan" DROP COLUMN "label";', "ban-drop-column"),
        ('DROP TABLE "RateLimit";', "ban-drop-table"),
    ],
)
def test_renames_and_drops_break_the_running_app(repo: Repo, sql: str, rule: str) -> None:
    r = run(repo.add(LOCKED + sql + "\n"))
    assert lines(r, rule) == [(3, "error")]


def test_additive_changes_do_not_trigger_rename_or_drop_rules(repo: Repo) -> None:
    r = run(
        repo.add(
            LOCKED + 'ALTER TABLE "Scan" ADD COLUMN "tag" TEXT;\nCREATE TABLE "T" ("id" TEXT);\n'
        )
    )
    rules = {f.rule for f in r.findings}
    assert not rules & {"renaming-column", "renaming-table", "ban-drop-column", "ban-drop-table"}
    assert r.exit_code == 0


def test_prisma_rename_as_drop_and_add(repo: Repo) -> None:
    sql = LOCKED + 'ALTER TABLE "Issue" DROP COLUMN "whyItMatters",\nADD COLUMN "impact" TEXT;\n'
    r = run(repo.add(sql))
    assert lines(r, "prisma-rename-as-drop-add") == [(3, "warning")]
    r = run(
        repo.add(
            LOCKED
            + 'ALTER TABLE "Issue" DROP COLUMN "whyItMatters";\nALTER TABLE "Scan" ADD COLUMN "impact" TEXT;\n'
        )
    )
    assert not found(r, "prisma-rename-as-drop-add")


# --------------------------------------------------------------------------- columns and constraints


def test_not_null_column_without_default(repo: Repo) -> None:
    r = run(repo.add(LOCKED + 'ALTER TABLE "Scan" ADD COLUMN "v" INTEGER NOT NULL;\n'))
    assert lines(r, "adding-required-field") == [(3, "error")]
    r = run(repo.add(LOCKED + 'ALTER TABLE "Scan" ADD COLUMN "v" INTEGER NOT NULL DEFAULT 1;\n'))
    assert not found(r, "adding-required-field")


@pytest.mark.parametrize(
    "constraint",
    [
        'FOREIGN KEY ("userId") REFERENCES "User"("id") ON DELETE SET NULL ON UPDATE CASCADE',
        'CHECK ("progress" BETWEEN 0 AND 100)',
    ],
)
def test_constraints_without_not_valid(repo: Repo, constraint: str) -> None:
    stmt = f'ALTER TABLE "Scan" ADD CONSTRAINT "c" {constraint}'
    r = run(repo.add(LOCKED + stmt + ";\n"))
    assert lines(r, "constraint-missing-not-valid") == [(3, "error")]
    r = run(repo.add(LOCKED + stmt + " NOT VALID;\n"))
    assert not found(r, "constraint-missing-not-valid")
    assert r.exit_code == 0


def test_validate_in_the_same_prisma_file_keeps_the_strong_lock(repo: Repo) -> None:
    add = 'ALTER TABLE "Scan" ADD CONSTRAINT "c" CHECK ("progress" >= 0) NOT VALID;\n'
    validate = 'ALTER TABLE "Scan" VALIDATE CONSTRAINT "c";\n'
    r = run(repo.add(LOCKED + add + validate))
    assert lines(r, "constraint-missing-not-valid") == [(4, "error")]
    r = run(repo.add(LOCKED + add), repo.add(LOCKED + validate))
    assert r.exit_code == 0


def test_alter_column_type_rewrites(repo: Repo) -> None:
    r = run(
        repo.add(
            LOCKED + 'ALTER TABLE "Scan" ALTER COLUMN "score" SET DATA TYPE DOUBLE PRECISION;\n'
        )
    )
    assert lines(r, "changing-column-type") == [(3, "error")]
    r = run(repo.add(LOCKED + 'ALTER TABLE "Scan" ADD COLUMN "scoreExact" DOUBLE PRECISION;\n'))
    assert not found(r, "changing-column-type")


def test_set_not_null_scans(repo: Repo) -> None:
    r = run(repo.add(LOCKED + 'ALTER TABLE "Issue" ALTER COLUMN "sortWeight" SET NOT NULL;\n'))
    assert lines(r, "adding-not-nullable-field") == [(3, "error")]
    r = run(repo.add(LOCKED + 'ALTER TABLE "Issue" ALTER COLUMN "sortWeight" SET DEFAULT 0;\n'))
    assert not found(r, "adding-not-nullable-field")


# --------------------------------------------------------------------------- rollback


def test_missing_rollback(repo: Repo) -> None:
    r = run(repo.add(LOCKED + 'ALTER TABLE "Scan" ADD COLUMN "x" TEXT;\n', down=None))
    [finding] = found(r, "missing-rollback")
    assert (finding.line, finding.severity) == (1, "warning")
    assert "down.sql or rollback.sql" in finding.message
    assert not found(
        run(repo.add(LOCKED + 'ALTER TABLE "Scan" ADD COLUMN "x" TEXT;\n')), "missing-rollback"
    )


def test_rollback_sql_and_loose_file_conventions(repo: Repo, tmp_path: Path) -> None:
    folder = repo.add(LOCKED + 'ALTER TABLE "Scan" ADD COLUMN "x" TEXT;\n', down=None)
    (folder / "rollback.sql").write_text('ALTER TABLE "Scan" DROP COLUMN IF EXISTS "x";\n')
    assert not found(run(folder), "missing-rollback")
    loose = tmp_path / "hotfix.sql"
    loose.write_text(LOCKED + 'ALTER TABLE "Scan" ADD COLUMN "x" TEXT;\n')
    assert "hotfix.down.sql" in found(run(loose), "missing-rollback")[0].message
    (tmp_path / "hotfix.down.sql").write_text("SELECT 1;\n")
    assert not found(run(loose), "missing-rollback")


def test_no_rollback_needed_when_nothing_can_be_undone(repo: Repo) -> None:
    r = run(repo.add(LOCKED + 'ALTER TABLE "Scan" VALIDATE CONSTRAINT "c";\n', down=None))
    assert not found(r, "missing-rollback")


# --------------------------------------------------------------------------- ignoring


def test_ignore_flag_and_inline_comments(repo: Repo) -> None:
    sql = (
        LOCKED
        + 'ALTER TABLE "Scan" RENAME COLUMN "a" TO "b";\nALTER TABLE "Issue" RENAME COLUMN "a" TO "b";\n'
    )
    assert len(found(run(repo.add(sql)), "renaming-column")) == 2
    assert not found(run(repo.add(sql), ignore=("renaming-column",)), "renaming-column")
    inline = LOCKED + (
        "-- the app reads both names since release 2.3\n"
        "-- gecko-lint: ignore renaming-column\n"
        'ALTER TABLE "Scan" RENAME COLUMN "a" TO "b";\n'
        'ALTER TABLE "Issue" RENAME COLUMN "a" TO "b";\n'
    )
    assert lines(run(repo.add(inline)), "renaming-column") == [(6, "error")]  # only the next one
    whole = "-- gecko-lint: ignore-file renaming-column, require-statement-timeout\n" + sql
    r = run(repo.add(whole))
    assert not found(r, "renaming-column")
    assert r.exit_code == 0


def test_squawk_inline_ignore_still_works(repo: Repo) -> None:
    sql = (
        LOCKED + '-- squawk-ignore renaming-column\nALTER TABLE "Scan" RENAME COLUMN "a" TO "b";\n'
    )
    assert not found(run(repo.add(sql)), "renaming-column")


# --------------------------------------------------------------------------- the demo examples

EXAMPLES = Path(__file__).resolve().parents[2] / "gecko_demo" / "migrations"


def test_risky_examples_fail_with_the_analysis_findings() -> None:
    r = run(EXAMPLES / "risky")
    assert r.exit_code == 1
    phase1 = {f.rule for f in r.findings if f.migration.endswith("phase1_schema")}
    assert {
        "renaming-column",
        "adding-required-field",
        "changing-column-type",
        "adding-not-nullable-field",
        "ban-drop-column",
        "prisma-rename-as-drop-add",
        "constraint-missing-not-valid",
        "require-concurrent-index-creation",
        "require-lock-timeout",
        "missing-rollback",
    } <= phase1
    indices = {f.rule for f in r.findings if f.migration.endswith("backend_indices")}
    assert {
        "require-concurrent-index-deletion",
        "require-concurrent-index-creation",
        "missing-rollback",
    } <= indices


def test_safe_examples_pass_for_every_prisma_version() -> None:
    for version in ("5.22", "7.4"):
        r = run(EXAMPLES / "safe", prisma=version)
        assert r.exit_code == 0, [
            (f.migration, f.rule) for f in r.findings if f.severity == "error"
        ]
        assert not [f for f in r.findings if f.severity == "warning"]
    assert len(load_migrations([EXAMPLES / "safe"])) == 8


def test_inline_ignore_accepts_space_separated_rules(repo: Repo) -> None:
    sql = (
        LOCKED
        + "-- gecko-lint: ignore renaming-column require-lock-timeout\n"
        + 'ALTER TABLE "Scan" RENAME COLUMN "a" TO "b";\n'
    )
    assert not found(run(repo.add(sql)), "renaming-column")


# --------------------------------------------------------------------------- squawk failures


@pytest.mark.parametrize(
    ("binary", "message"),
    [
        ("/nonexistent/squawk", "squawk: cannot run"),
        ("/bin/false", "squawk: exit code 1 without findings"),
    ],
)
def test_a_missing_or_failing_squawk_is_an_error_not_a_pass(
    repo: Repo, binary: str, message: str
) -> None:
    migrations = load_migrations(
        [repo.add(LOCKED + 'ALTER TABLE "Scan" RENAME COLUMN "a" TO "b";\n')]
    )
    with pytest.raises(LintToolError, match=message):
        lint(migrations, LintOptions(squawk=binary))


def test_bad_pg_version_for_squawk_is_bad_input(
    capsys: pytest.CaptureFixture[str], repo: Repo
) -> None:
    folder = repo.add(LOCKED + 'ALTER TABLE "Scan" ADD COLUMN "x" TEXT;\n')
    assert main(["lint", "--pg-version", "banana", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gecko-exporter lint: error: squawk: exit code")
    assert err.count("\n") == 1


# --------------------------------------------------------------------------- order and duplicates


def test_findings_follow_the_order_of_the_paths_and_a_path_counts_once(repo: Repo) -> None:
    first = repo.add(LOCKED + 'ALTER TABLE "Scan" RENAME COLUMN "a" TO "b";\n', name="first")
    second = repo.add(LOCKED + 'ALTER TABLE "Scan" RENAME COLUMN "c" TO "d";\n', name="second")
    r = run(second, first, second / "migration.sql")
    assert [m.name for m in r.migrations] == [second.name, first.name]
    assert [f.migration for f in found(r, "renaming-column")] == [second.name, first.name]


def test_a_squawk_finding_for_an_unknown_file_is_never_dropped(repo: Repo, tmp_path: Path) -> None:
    """Findings are matched to files by name: a mismatch must fail loudly, not pass."""
    fake = tmp_path / "squawk"
    fake.write_text(
        "#!/bin/sh\n"
        'echo \'[{"file": "elsewhere.sql", "line": 0, "column": 0, "level": "Warning",'
        ' "message": "m", "help": null, "rule_name": "renaming-column"}]\'\n'
        "exit 1\n"
    )
    fake.chmod(0o755)
    migrations = load_migrations([repo.add(LOCKED)])
    with pytest.raises(LintToolError, match="finding for a file it was not given: 'elsewhere.sql'"):
        lint(migrations, LintOptions(squawk=str(fake)))
