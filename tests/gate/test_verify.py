"""``gecko-exporter verify`` against real PostgreSQL 18 and 15 (the health databases).

Each failure is provoked for real (an index dropped, a unique CREATE INDEX
CONCURRENTLY that fails, a row breaking a data invariant, a failed Prisma
migration) and undone afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.cli import main
from exporter.gate.live_measure import PlanResult
from exporter.gate.verify import plan_checks
from gecko_demo import admin
from tests.health.conftest import HealthDb, health_db

__all__ = ["health_db"]  # the session fixture, imported for this module

pytestmark = pytest.mark.integration

RUNS = "5"
DEDUPE_DDL = 'CREATE INDEX "Scan_dedupe_lookup_idx" ON "Scan"("normalizedInput", "status", "finishedAt" DESC)'
EVIDENCE_DDL = 'CREATE INDEX "Evidence_scan_covering_idx" ON "Evidence"("scanId", "createdAt")'


@pytest.fixture
def env(health_db: HealthDb, monkeypatch: pytest.MonkeyPatch) -> HealthDb:
    monkeypatch.setenv("GECKO_DATABASE_URL", health_db.monitor_dsn)
    for var in ("GECKO_DATABASE_URL_FILE", "GECKO_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    return health_db


def verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()  # only this command's output: set-up may have logged to stdout
    code = main(["verify", "--format", "json", "--runs", RUNS, *args])
    return code, json.loads(capsys.readouterr().out)


def statuses(doc: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in doc["checks"]}


def failed(doc: dict[str, Any]) -> set[str]:
    return {name for name, status in statuses(doc).items() if status == "fail"}


def test_passes_on_the_healthy_database(env: HealthDb, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = verify(capsys)
    assert code == 0, doc["failures"]
    assert doc["result"] == "pass" and doc["failures"] == []
    got = statuses(doc)
    for name in (
        "critical_indexes",
        "invalid_indexes",
        "index_builds",
        "prisma_migrations",
        "plan:scan_lookup:custom",
        "plan:scan_lookup:generic",
        "plan:report_evidence:generic",
        "latency:scan_lookup",
        "latency:report",
        "invariant:done_scans_missing_normalized_input",
    ):
        assert got[name] == "pass", name
    latency = {lat["probe"]: lat for lat in doc["latency"]}
    assert latency["scan_lookup"]["runs"] == int(RUNS) and latency["report"]["runs"] == int(RUNS)
    assert main(["verify", "--runs", "2"]) == 0
    assert capsys.readouterr().out.startswith("verify: PASS")


@pytest.fixture
def baseline(env: HealthDb, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    sql = tmp_path / "noop.sql"
    sql.write_text("SET lock_timeout = '1s';\nSELECT 1;\n")
    path = tmp_path / "baseline.json"
    assert main(["preflight", "--runs", RUNS, "--baseline", str(path), str(sql)]) == 0
    capsys.readouterr()
    return path


def test_fails_after_drop_index_and_against_the_baseline(
    env: HealthDb, baseline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = verify(capsys, "--baseline", str(baseline))
    assert code == 0, doc["failures"]
    assert statuses(doc)["baseline_plan:scan_lookup:custom"] == "pass"
    assert statuses(doc)["baseline_latency:scan_lookup"] == "pass"
    try:
        env.execute('DROP INDEX "Scan_dedupe_lookup_idx"')
        code, doc = verify(capsys, "--baseline", str(baseline))
        assert code == 1 and doc["result"] == "fail"
        bad = failed(doc)
        assert "critical_indexes" in bad
        # without its index the plan is a warning (another index) or a failure (a seq scan);
        # losing it against the baseline fails either way
        assert statuses(doc)["plan:scan_lookup:custom"] in ("warn", "fail")
        assert statuses(doc)["plan:scan_lookup:generic"] == "warn"
        assert {"baseline_plan:scan_lookup:custom", "baseline_plan:scan_lookup:generic"} <= bad
        indexes = next(c for c in doc["checks"] if c["name"] == "critical_indexes")
        assert indexes["details"]["missing"] == ["Scan_dedupe_lookup_idx"]
        assert any("Scan_dedupe_lookup_idx" in f for f in doc["failures"])
        assert "plan:report_scan:custom" not in bad
    finally:
        env.execute('DROP INDEX IF EXISTS "Scan_dedupe_lookup_idx"')
        env.execute(DEDUPE_DDL)
    assert verify(capsys)[0] == 0


def test_fails_after_a_failed_unique_concurrent_index_build(
    env: HealthDb, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        env.execute('DROP INDEX "Evidence_scan_covering_idx"')
        with pytest.raises(admin.AdminError) as error:
            env.execute(
                'CREATE UNIQUE INDEX CONCURRENTLY "Evidence_scan_covering_idx" '
                'ON "Evidence"("scanId")'
            )
        assert error.value.is_unique_violation
        code, doc = verify(capsys)
        assert code == 1
        assert {"critical_indexes", "invalid_indexes"} <= failed(doc)
        invalid = next(c for c in doc["checks"] if c["name"] == "invalid_indexes")
        assert "Evidence_scan_covering_idx" in invalid["summary"]
        indexes = next(c for c in doc["checks"] if c["name"] == "critical_indexes")
        assert indexes["details"]["invalid"] == ["Evidence_scan_covering_idx"]
    finally:
        env.execute('DROP INDEX IF EXISTS "Evidence_scan_covering_idx"')
        env.execute(EVIDENCE_DDL)


@pytest.fixture
def bad_scan(env: HealthDb) -> Iterator[str]:
    """A done URL scan without normalizedInput (breaks the shipped invariant)."""
    scan_id = "cgateinvariant000000000001"
    env.execute(
        'INSERT INTO "Scan" ("id", "targetType", "input", "status", "slug", "finishedAt") '
        "VALUES (%s, 'url', 'https://broken.example/', 'done', 'gatebad1', now())",
        (scan_id,),
    )
    try:
        yield scan_id
    finally:
        env.execute('DELETE FROM "Scan" WHERE "id" = %s', (scan_id,))


def test_fails_on_a_broken_data_invariant(
    env: HealthDb, bad_scan: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    del bad_scan
    code, doc = verify(capsys)
    assert code == 1
    assert failed(doc) == {"invariant:done_scans_missing_normalized_input"}
    (row,) = [i for i in doc["invariants"] if i["name"] == "done_scans_missing_normalized_input"]
    assert row["rows"] == 1
    assert doc["failures"] == ["invariant:done_scans_missing_normalized_input: 1 row(s) violate it"]

    # invariants declared in the configuration file replace the shipped ones
    config = tmp_path / "gecko.yaml"
    config.write_text(
        "gate:\n  invariants:\n"
        "    - name: scans_from_the_future\n"
        '      sql: SELECT 1 FROM "Scan" WHERE "createdAt" > now() + interval \'1 day\'\n'
        "    - name: broken_sql\n"
        '      sql: SELECT "noSuchColumn" FROM "Scan"\n'
    )
    code, doc = verify(capsys, "--config", str(config))
    assert code == 1
    assert failed(doc) == {"invariant:broken_sql"}
    assert statuses(doc)["invariant:scans_from_the_future"] == "pass"
    broken = next(c for c in doc["checks"] if c["name"] == "invariant:broken_sql")
    assert "could not run" in broken["summary"] and "42703" in broken["summary"]


def test_an_invariant_cannot_write(
    env: HealthDb, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The session is read-only: a check that would write fails instead (25006)."""
    env.execute("CREATE SEQUENCE gate_probe_seq")
    try:
        env.execute("GRANT USAGE, SELECT ON SEQUENCE gate_probe_seq TO gecko_health_monitor")
        config = tmp_path / "gecko.yaml"
        config.write_text(
            "gate:\n  invariants:\n    - name: writer\n"
            "      sql: SELECT nextval('gate_probe_seq')\n"
        )
        code, doc = verify(capsys, "--config", str(config))
        assert code == 1 and failed(doc) == {"invariant:writer"}
        writer = next(c for c in doc["checks"] if c["name"] == "invariant:writer")
        assert "25006" in writer["summary"]  # cannot execute nextval() in a read-only transaction
        assert env.fetchval("SELECT nextval('gate_probe_seq')") == 1  # never advanced
    finally:
        env.execute("DROP SEQUENCE gate_probe_seq")


def test_fails_on_a_failed_prisma_migration(
    env: HealthDb, capsys: pytest.CaptureFixture[str]
) -> None:
    env.execute(
        'INSERT INTO "_prisma_migrations" ("id", "checksum", "migration_name", "logs") '
        "VALUES ('00000000-0000-4000-8000-00000000gate', 'x', '20260101_gate_failed', "
        "'P3018 lock timeout')"
    )
    try:
        code, doc = verify(capsys)
        assert code == 1 and "prisma_migrations" in failed(doc)
        summary = next(c for c in doc["checks"] if c["name"] == "prisma_migrations")["summary"]
        assert "20260101_gate_failed" in summary
    finally:
        env.execute(
            'DELETE FROM "_prisma_migrations" WHERE "migration_name" = \'20260101_gate_failed\''
        )


def test_bad_invariant_config_is_exit_2(
    env: HealthDb, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "gecko.yaml"
    config.write_text("gate:\n  invariants:\n    - name: two\n      sql: SELECT 1; SELECT 2\n")
    assert main(["verify", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gate.invariants.0.sql" in err[0] and "single query" in err[0]


def test_plan_check_tiers() -> None:
    def plan(kind: str, indexes: tuple[str, ...], seq: tuple[str, ...]) -> PlanResult:
        used = "Scan_dedupe_lookup_idx" in indexes
        return PlanResult(
            "scan_lookup", kind, "Scan_dedupe_lookup_idx", used, "f", "s", indexes, seq
        )

    tables = {"Scan_dedupe_lookup_idx": "Scan"}
    got = [
        c.status
        for c in plan_checks(
            [
                plan("custom", ("Scan_dedupe_lookup_idx",), ()),
                plan("custom", ("Scan_status_finishedAt_idx",), ()),
                plan("custom", (), ("Scan",)),
                plan("custom", ("Evidence_x",), ("Scan",)),
                plan("generic", (), ("Scan",)),
            ],
            tables,
        )
    ]
    assert got == ["pass", "warn", "fail", "fail", "warn"]
