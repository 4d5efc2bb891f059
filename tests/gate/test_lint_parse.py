"""The shared parse layer (exporter.gate.sql): kinds, tables, lock levels, layouts, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.gate.sql import (
    LOCK_LEVELS,
    GateInputError,
    Statement,
    load_migrations,
    parse_sql,
)

# (sql, kind, tables, lock, rewrites, scans, concurrent) for every shape the lint rules and
# preflight rely on; locks per PostgreSQL's "Explicit Locking" and "ALTER TABLE" docs.
SHAPES: list[tuple[str, str, tuple[str, ...], str, bool, bool, bool]] = [
    ('CREATE INDEX "i" ON "Scan"("a")', "create_index", ("Scan",), "SHARE", False, True, False),
    (
        'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "i" ON public."Scan"("a")',
        "create_index",
        ("public.Scan",),
        "SHARE UPDATE EXCLUSIVE",
        False,
        True,
        True,
    ),
    (
        'DROP INDEX IF EXISTS "Scan_x"',
        "drop_index",
        ("Scan_x",),
        "ACCESS EXCLUSIVE",
        False,
        False,
        False,
    ),
    (
        'DROP INDEX CONCURRENTLY "Scan_x"',
        "drop_index",
        ("Scan_x",),
        "SHARE UPDATE EXCLUSIVE",
        False,
        False,
        True,
    ),
    (
        'ALTER TABLE "Scan" ADD COLUMN "x" TEXT',
        "add_column",
        ("Scan",),
        "ACCESS EXCLUSIVE",
        False,
        False,
        False,
    ),
    (
        'ALTER TABLE "Scan" ADD COLUMN "x" TEXT NOT NULL',
        "add_column",
        ("Scan",),
        "ACCESS EXCLUSIVE",
        False,
        True,
        False,
    ),
    (
        'ALTER TABLE "Scan" ADD COLUMN "x" TEXT NOT NULL DEFAULT \'a\'',
        "add_column",
        ("Scan",),
        "ACCESS EXCLUSIVE",
        False,
        False,
        False,
    ),
    (
        'ALTER TABLE "Scan" ADD COLUMN "x" UUID DEFAULT gen_random_uuid()',
        "add_column",
        ("Scan",),
        "ACCESS EXCLUSIVE",
        True,
        False,
        False,
    ),
    (
        'ALTER TABLE "Scan" ADD COLUMN "n" SERIAL',
        "add_column",
        ("Scan",),
        "ACCESS EXCLUSIVE",
        True,
        False,
        False,
    ),
    (
        'ALTER TABLE "Scan" ALTER COLUMN "score" SET DATA TYPE BIGINT',
        "alter_column_type",
        ("Scan",),
        "ACCESS EXCLUSIVE",
        True,
        False,
        False,
    ),
    (
        'ALTER TABLE "Scan" ALTER COLUMN "label" SET NOT NULL',
        "set_not_null",
        ("Scan",),
        "ACCESS EXCLUSIVE",
        False,
        True,
        False,
    ),
    (
        'ALTER TABLE "Scan" ALTER COLUMN "label" DROP NOT NULL',
        "drop_not_null",
        ("Scan",),
        "ACCESS EXCLUSIVE",
        False,
        False,
        False,
    ),
    (
        'ALTER TABLE "Scan" ADD CONSTRAINT "f" FOREIGN KEY ("userId") REFERENCES "User"("id")',
        "add_constraint",
        ("Scan", "User"),
        "SHARE ROW EXCLUSIVE",
        False,
        True,
        False,
    ),
    (
        'ALTER TABLE "Scan" ADD CONSTRAINT "f" FOREIGN KEY ("userId") REFERENCES "User"("id") NOT VALID',
        "add_constraint",
        ("Scan", "User"),
        "SHARE ROW EXCLUSIVE",
        False,
        False,
        False,
    ),
    (
        'ALTER TABLE "Scan" ADD CONSTRAINT "c" CHECK ("score" > 0)',
        "add_constraint",
        ("Scan",),
        "ACCESS EXCLUSIVE",
        False,
        True,
        False,
    ),
    (
        'ALTER TABLE "Scan" ADD CONSTRAINT "c" CHECK ("score" > 0) NOT VALID',
        "add_constraint",
        ("Scan",),
        "ACCESS EXCLUSIVE",
        False,
        False,
        False,
    ),
    (
        'ALTER TABLE "Scan" ADD CONSTRAINT "u" UNIQUE ("slug")',
        "add_constraint",
        ("Scan",),
        "ACCESS EXCLUSIVE",
        False,
        True,
        False,
    ),
    (
        'ALTER TABLE "Scan" ADD CONSTRAINT "u" UNIQUE USING INDEX "i"',
        "add_constraint",
        ("Scan",),
        "ACCESS EXCLUSIVE",
        False,
        False,
        False,
    ),
    (
        'ALTER TABLE "Scan" VALIDATE CONSTRAINT "c"',
        "validate_constraint",
        ("Scan",),
        "SHARE UPDATE EXCLUSIVE",
        False,
        True,
        False,
    ),
    (
        'ALTER TABLE "Scan" DROP COLUMN "label"',
        "drop_column",
        ("Scan",),
        "ACCESS EXCLUSIVE",
        False,
        False,
        False,
    ),
    (
        'ALTER TABLE "Scan" RENAME COLUMN "a" TO "b"',
        "rename_column",
        ("Scan",),
        "ACCESS EXCLUSIVE",
        False,
        False,
        False,
    ),
    (
        'ALTER TABLE "Scan" RENAME TO "Scans"',
        "rename_table",
        ("Scan",),
        "ACCESS EXCLUSIVE",
        False,
        False,
        False,
    ),
    (
        'ALTER INDEX "i" RENAME TO "j"',
        "rename_index",
        ("i",),
        "SHARE UPDATE EXCLUSIVE",
        False,
        False,
        False,
    ),
    ('DROP TABLE IF EXISTS "Old"', "drop_table", ("Old",), "ACCESS EXCLUSIVE", False, False, False),
    (
        'CREATE TABLE "New" ("id" TEXT PRIMARY KEY)',
        "create_table",
        ("New",),
        "",
        False,
        False,
        False,
    ),
    (
        'CREATE TABLE "New" ("id" TEXT, "u" TEXT REFERENCES "User"("id"))',
        "create_table",
        ("New", "User"),
        "SHARE ROW EXCLUSIVE",
        False,
        False,
        False,
    ),
    ('TRUNCATE "Scan"', "truncate", ("Scan",), "ACCESS EXCLUSIVE", False, False, False),
    ('UPDATE "Scan" SET "label" = \'x\'', "update", ("Scan",), "ROW EXCLUSIVE", False, True, False),
    (
        'LOCK TABLE "Scan" IN SHARE ROW EXCLUSIVE MODE',
        "lock",
        ("Scan",),
        "SHARE ROW EXCLUSIVE",
        False,
        False,
        False,
    ),
    (
        'REINDEX INDEX CONCURRENTLY "i"',
        "reindex",
        ("i",),
        "SHARE UPDATE EXCLUSIVE",
        False,
        True,
        True,
    ),
    ('VACUUM FULL "Scan"', "vacuum_full", ("Scan",), "ACCESS EXCLUSIVE", True, True, False),
    (
        'ALTER TABLE "Scan" DETACH PARTITION "Scan_2024" CONCURRENTLY',
        "detach_partition",
        ("Scan", "Scan_2024"),
        "SHARE UPDATE EXCLUSIVE",
        False,
        False,
        True,
    ),
    ("SET lock_timeout = '5s'", "set", (), "", False, False, False),
    ("BEGIN", "begin", (), "", False, False, False),
    ("DO $$ BEGIN RAISE NOTICE 'x;y'; END $$", "do", (), "", False, False, False),
    ("ALTER TYPE \"IssueSeverity\" ADD VALUE 'blocker'", "alter_enum", (), "", False, False, False),
]


def _one(sql: str) -> Statement:
    stmts = parse_sql(sql + ";\n", Path("m.sql"))
    assert len(stmts) == 1
    return stmts[0]


@pytest.mark.parametrize(
    ("sql", "kind", "tables", "lock", "rewrites", "scans", "concurrent"),
    SHAPES,
    ids=[f"{i}-{s[1]}" for i, s in enumerate(SHAPES)],
)
def test_statement_shapes_give_kind_tables_and_lock(
    sql: str,
    kind: str,
    tables: tuple[str, ...],
    lock: str,
    rewrites: bool,
    scans: bool,
    concurrent: bool,
) -> None:
    st = _one(sql)
    assert (st.kind, st.tables, st.lock, st.rewrites, st.scans, st.concurrent) == (
        kind,
        tables,
        lock,
        rewrites,
        scans,
        concurrent,
    )
    assert st.lock in LOCK_LEVELS


def test_names_resolve_like_postgresql() -> None:
    st = _one("ALTER TABLE Public.ScanTable ADD COLUMN x TEXT")
    assert st.tables == ("public.scantable",)  # unquoted identifiers fold to lower case
    st = _one('ALTER TABLE "Public"."Scan" ADD COLUMN x TEXT')
    assert st.tables == ("Public.Scan",)


def test_multi_command_alter_table_keeps_every_action_and_the_strongest_lock() -> None:
    st = _one('ALTER TABLE "Issue" DROP COLUMN "whyItMatters", ADD COLUMN "impact" TEXT')
    assert st.actions == ("drop_column", "add_column")
    assert st.kind == "add_column"
    st = _one('ALTER TABLE "Scan" VALIDATE CONSTRAINT "c", ALTER COLUMN "a" SET NOT NULL')
    assert st.lock == "ACCESS EXCLUSIVE"


def test_set_statements_expose_the_setting() -> None:
    st = _one("SET LOCAL lock_timeout TO 5000")
    assert (st.setting, st.setting_value, st.setting_local) == ("lock_timeout", "5000", True)


def test_lines_point_at_the_first_token_after_comments(tmp_path: Path) -> None:
    sql = (
        "-- CreateIndex\n"
        "/* a block\n comment */\n"
        'CREATE INDEX "i" ON "Scan"(("a" || \'é\'));\n'
        "\n"
        "  -- AlterTable\n"
        '  ALTER TABLE "Scan"\n    ADD COLUMN "x" TEXT; SELECT 1;\n'
    )
    stmts = parse_sql(sql, tmp_path / "m.sql")
    assert [(s.line, s.column, s.end_line) for s in stmts] == [(4, 1, 4), (7, 3, 8), (8, 26, 8)]
    assert stmts[1].text == 'ALTER TABLE "Scan"\n    ADD COLUMN "x" TEXT'


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    sql = "SELECT 'é';\n\nCREATE INDEX ON;\n"
    with pytest.raises(GateInputError, match=r"m\.sql:3: syntax error at or near"):
        parse_sql(sql, tmp_path / "m.sql")
    with pytest.raises(GateInputError, match=r"m\.sql:2: unterminated quoted string"):
        parse_sql("SELECT 1;\nSELECT 'open\n", tmp_path / "m.sql")


def _folder(root: Path, name: str, sql: str, *extra: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "migration.sql").write_text(sql)
    for filename in extra:
        (folder / filename).write_text("SELECT 1;\n")
    return folder


def test_migrations_folder_is_loaded_in_name_order(tmp_path: Path) -> None:
    root = tmp_path / "migrations"
    _folder(root, "20240301000000_c", "SELECT 3;")
    _folder(root, "20240101000000_a", "SELECT 1;", "down.sql")
    _folder(root, "20240201000000_b", "SELECT 2;", "rollback.sql")
    (root / "migration_lock.toml").write_text('provider = "postgresql"\n')
    ms = load_migrations([root])
    assert [m.name for m in ms] == ["20240101000000_a", "20240201000000_b", "20240301000000_c"]
    assert [m.rollback.name if m.rollback else None for m in ms] == [
        "down.sql",
        "rollback.sql",
        None,
    ]


def test_single_folder_file_and_loose_file_layouts(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "20240101000000_a", "SELECT 1;")
    loose = tmp_path / "hotfix.sql"
    loose.write_text("SELECT 1;")
    (tmp_path / "hotfix.down.sql").write_text("SELECT 1;")
    ms = load_migrations([folder, folder / "migration.sql", loose])
    assert [m.name for m in ms] == ["20240101000000_a", "20240101000000_a", "hotfix"]
    assert ms[2].rollback == tmp_path / "hotfix.down.sql"


def test_bad_layouts_raise_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(GateInputError, match="no such file or directory"):
        load_migrations([tmp_path / "missing"])
    root = tmp_path / "migrations"
    _folder(root, "20240101000000_a", "SELECT 1;")
    (root / "20240201000000_b").mkdir()
    with pytest.raises(
        GateInputError, match="20240201000000_b: migration folder without migration.sql"
    ):
        load_migrations([root])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GateInputError, match="no migration.sql"):
        load_migrations([empty])
    bad = tmp_path / "latin1.sql"
    bad.write_bytes(b"SELECT 1;\nSELECT '\xe9';\n")
    with pytest.raises(GateInputError, match=r"latin1\.sql:2: not valid UTF-8"):
        load_migrations([bad])


def test_error_quoting_a_newline_stays_one_line(tmp_path: Path) -> None:
    # PostgreSQL's "at or near" token may span lines (an unterminated $$ string)
    with pytest.raises(GateInputError) as err:
        parse_sql("SELECT 1;\nSELECT $$open\nmore\n", tmp_path / "m.sql")
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(f"{tmp_path / 'm.sql'}:2: unterminated dollar-quoted string")


def test_nul_byte_is_bad_input_not_a_silent_pass(tmp_path: Path) -> None:
    # the parser stops at a NUL: everything after it (and squawk's findings) would vanish
    bad = tmp_path / "nul.sql"
    bad.write_bytes(b'SELECT 1;\nCREATE INDEX "i" ON "Scan"("a");\x00\nDROP TABLE "Scan";\n')
    with pytest.raises(GateInputError, match=r"nul\.sql:2: contains a NUL byte"):
        load_migrations([bad])


def test_byte_order_mark_is_named(tmp_path: Path) -> None:
    # PostgreSQL reads U+FEFF as part of the first word: the deploy would fail on it
    bom = tmp_path / "bom.sql"
    bom.write_bytes(b'\xef\xbb\xbfCREATE INDEX "i" ON "Scan"("a");\n')
    with pytest.raises(GateInputError, match=r"bom\.sql:1: starts with a UTF-8 byte order mark"):
        load_migrations([bom])


def test_line_numbers_of_a_long_data_migration(tmp_path: Path) -> None:
    # counted incrementally: recounting from the file's start per statement took 20 s for
    # 60 000 INSERTs (1.5 MB); the numbers must stay exact
    sql = "-- seed\n" + "".join(f"INSERT INTO t VALUES ({i});\n\n" for i in range(3000))
    stmts = parse_sql(sql, tmp_path / "seed.sql")
    assert [s.line for s in stmts[:3]] == [2, 4, 6]
    assert stmts[-1].line == 2 + 2 * 2999
    assert all(s.column == 1 for s in stmts)
