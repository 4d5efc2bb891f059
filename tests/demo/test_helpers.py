"""Pure helpers of the demo: DSN editing, migration rows, statement shapes, progress bar."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime

import pytest

from gecko_demo import admin, queries, schema, seed


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        (
            "postgresql://postgres:s%40cr%3Aet@127.0.0.1:5432/privacy",
            {"user": "postgres", "host": "127.0.0.1", "port": "5432", "dbname": "privacy"},
        ),
        (
            "postgresql://app:pw@db.internal/privacy?sslmode=require&application_name=x",
            {
                "user": "app",
                "host": "db.internal",
                "dbname": "privacy",
                "sslmode": "require",
                "application_name": "x",
            },
        ),
        (
            "host=db user=app password='a b' dbname=privacy",
            {"host": "db", "user": "app", "dbname": "privacy"},
        ),
    ],
)
def test_dsn_without_password(dsn: str, expected: dict[str, str]) -> None:
    out = admin.dsn_without_password(dsn)
    assert "password" not in out
    assert admin.dsn_params(out) == expected


def test_dsn_replace_switches_user_database_and_quotes() -> None:
    dsn = admin.dsn_replace(
        "postgresql://postgres:x@127.0.0.1:6543/postgres",
        dbname="privacy",
        user="gecko monitor",
        password="p@ss/word 'q' \\",
    )
    assert dsn == (
        r"user='gecko monitor' password='p@ss/word \'q\' \\' dbname=privacy"
        " host=127.0.0.1 port=6543"
    )


@pytest.mark.parametrize("variant", schema.VARIANTS)
def test_migration_rows(variant: schema.Variant) -> None:
    now = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    rows = schema.migration_rows(variant, now=now)
    assert [r.migration_name for r in rows] == list(schema.MIGRATIONS[variant])
    assert rows[-2].migration_name == "20251029154900_init"
    assert len({r.id for r in rows}) == len(rows)
    for r in rows:
        assert re.fullmatch(r"[0-9a-f]{64}", r.checksum)
        assert len(r.id) == 36
        assert r.started_at < r.finished_at < now
        assert r.applied_steps_count == 1
    started = [r.started_at for r in rows]
    assert started == sorted(started)
    if variant == "incremental":
        assert rows[0].migration_name == "20250913190000_init"
        assert rows[0].started_at.date().isoformat() == "2025-09-13"
    else:
        assert len(rows) == 2
        assert (now - rows[0].started_at).total_seconds() < 60


def test_schema_script_rejects_unknown_variant() -> None:
    with pytest.raises(ValueError, match="unknown schema variant"):
        schema.schema_script("squashed")  # type: ignore[arg-type]


def test_index_files_name_the_variant_indexes() -> None:
    for variant in schema.VARIANTS:
        script = schema.schema_script(variant)
        created = set(re.findall(r'CREATE (?:UNIQUE )?INDEX "([^"]+)"', script))
        assert schema.VARIANT_INDEXES[variant] <= created
        other: schema.Variant = "fresh" if variant == "incremental" else "incremental"
        assert not (schema.VARIANT_INDEXES[other] - schema.VARIANT_INDEXES[variant]) & created


@pytest.mark.parametrize(
    ("statement", "params"),
    [
        (queries.DEDUPE_LOOKUP, 5),
        (queries.SCAN_INSERT, len(queries.SCAN_INSERT_COLUMNS)),
        (queries.STATUS_POLL, 3),
        (queries.PROGRESS_UPDATE, 3),
        (queries.REPORT_SCAN_BY_SLUG, 3),
        (queries.REPORT_EVIDENCE, 2),
        (queries.REPORT_ISSUES, 2),
        (queries.RECENT_REPORTS, 3),
        (queries.WORKER_START, 5),
        (queries.SCAN_DONE, 9),
        (queries.SCAN_ERROR, 5),
        (queries.evidence_insert(3), 21),
        (queries.issue_insert(2), 26),
    ],
)
def test_statements_bind_every_value(statement: str, params: int) -> None:
    assert statement.count("%s") == params
    # Prisma binds literals: no quoted string constants in the app's statements
    assert "'" not in statement


def test_enabled_progress_bar_writes_to_stderr_and_leaves_no_thread(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = set(threading.enumerate())
    with seed.progress_bar(total=4, desc="loading", unit="scan", enabled=True) as bar:
        bar.set_postfix(evidence=3, refresh=False)
        bar.update(4)
    captured = capsys.readouterr()
    assert "loading" in captured.err and "4/4" in captured.err
    assert captured.out == ""
    assert set(threading.enumerate()) == before
