"""``gecko-exporter preflight`` against real PostgreSQL 18 and 15 (the health databases).

The command runs in-process (``exporter.cli.main``) as the least-privilege
monitor role, with the DSN in ``GECKO_DATABASE_URL``; exit-2 paths also run as
a subprocess to prove "one line, no traceback".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exporter.cli import main
from exporter.gate.live_locks import conflicts, normalize, strongest
from exporter.gate.preflight import (
    LockTimeout,
    Table,
    backup_check,
    blocker_checks,
    old_transaction_check,
    parse_duration,
    table_pattern,
)
from gecko_demo import admin
from gecko_demo.cluster import free_port
from tests.conftest import GeckoDatabase
from tests.health.conftest import HealthDb, health_db
from tests.health.sessions import background, open_transaction
from tests.support.wait import wait_until

__all__ = ["health_db"]  # the session fixture, imported for this module

pytestmark = pytest.mark.integration

APP = "gecko-exporter-preflight"
ADD_COLUMN = """-- AddColumn
SET lock_timeout = '1s';
ALTER TABLE "Scan" ADD COLUMN "gateProbe" TEXT;
"""


@pytest.fixture
def migration(tmp_path: Path) -> Path:
    folder = tmp_path / "20260101000000_add_gate_probe"
    folder.mkdir()
    (folder / "migration.sql").write_text(ADD_COLUMN)
    return folder


@pytest.fixture
def env(health_db: HealthDb, monkeypatch: pytest.MonkeyPatch) -> HealthDb:
    monkeypatch.setenv("GECKO_DATABASE_URL", health_db.monitor_dsn)
    for var in ("GECKO_DATABASE_URL_FILE", "GECKO_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    return health_db


def preflight(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()  # only this command's output: set-up may have logged to stdout
    code = main(["preflight", "--format", "json", *args])
    out = capsys.readouterr().out
    return code, json.loads(out)


def check(doc: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in doc["checks"] if c["name"] == name]
    assert found, f"no check {name!r} in {[c['name'] for c in doc['checks']]}"
    result: dict[str, Any] = found[0]
    return result


def test_go_on_a_quiet_database(
    env: HealthDb, migration: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = preflight(capsys, str(migration))
    assert code == 0, doc["reasons"]
    assert doc["verdict"] == "go" and doc["reasons"] == []
    (table,) = doc["tables"]
    assert table["table"] == "Scan" and table["exists"] and table["lock"] == "ACCESS EXCLUSIVE"
    assert table["rows_estimate"] >= 50_000 and table["size_bytes"] > 1_000_000
    (mig,) = doc["migrations"]
    assert mig["lock_timeout"] == {
        "seconds": 1.0, "source": "migration", "written": "'1s'", "unlimited": False
    }  # fmt: skip
    statement = next(s for s in mig["statements"] if s["kind"] == "add_column")
    assert statement["line"] == 3 and statement["lock"] == "ACCESS EXCLUSIVE"
    assert check(doc, "blockers")["status"] == "pass"
    assert check(doc, "old_transactions")["status"] == "pass"
    assert check(doc, "prisma")["status"] == "pass"
    assert check(doc, "traffic")["details"]["source"] == "pg_stat_statements"
    # archive_mode is off on the test servers: reported, never as a pass
    backup = check(doc, "backup")
    assert backup["status"] == "not_visible" and "backup" in doc["not_visible"]
    # the text rendering says what it estimates
    assert main(["preflight", str(migration)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("preflight: GO") and "(estimate)" in text


def test_no_go_with_a_transaction_holding_a_lock_on_scan(
    env: HealthDb, migration: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_transaction(
        env.admin_dsn, 'SELECT "id" FROM "Scan" LIMIT 1', application_name="gate-holder"
    ) as pid:
        code, doc = preflight(capsys, str(migration))
        assert code == 1 and doc["verdict"] == "no-go"
        blockers = check(doc, "blockers")
        assert blockers["status"] == "fail"
        assert f"pid {pid}" in blockers["summary"] and "gate-holder" in blockers["summary"]
        (entry,) = blockers["details"]["blockers"]
        assert entry["pid"] == pid and entry["state"] == "idle in transaction"
        assert entry["mode"] == "ACCESS SHARE" and entry["table"] == "Scan"
        assert "query" not in entry  # never query text unless asked
        assert any(f"pid {pid}" in reason for reason in doc["reasons"])

        code, doc = preflight(capsys, "--show-queries", str(migration))
        assert code == 1
        (entry,) = check(doc, "blockers")["details"]["blockers"]
        assert entry["query"] == 'SELECT "id" FROM "Scan" LIMIT 1'
    code, doc = preflight(capsys, str(migration))
    assert code == 0, doc["reasons"]


def test_no_go_with_an_idle_transaction_older_than_lock_timeout(
    env: HealthDb, migration: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_transaction(env.admin_dsn, "SELECT 1", application_name="gate-idle") as pid:
        wait_until(
            lambda: env.fetchval(
                "SELECT now() - xact_start > interval '1.2 seconds' FROM pg_stat_activity "
                "WHERE pid = %s",
                (pid,),
            ),
            timeout=10,
            message="the idle transaction is older than the migration's lock_timeout (1s)",
        )
        code, doc = preflight(capsys, str(migration))
        assert code == 1
        old = check(doc, "old_transactions")
        assert old["status"] == "fail" and f"pid {pid}" in old["summary"]
        (entry,) = old["details"]["transactions"]
        assert entry["application_name"] == "gate-idle"
        assert entry["state"] == "idle in transaction" and entry["transaction_age_seconds"] > 1
        assert check(doc, "blockers")["status"] == "pass"  # it holds no lock on "Scan"


def test_preflight_never_waits_behind_a_queued_access_exclusive_lock(
    env: HealthDb, migration: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A holder, then ALTER TABLE queued behind it: preflight (with --baseline) adds no waiter."""
    with (
        open_transaction(
            env.admin_dsn, 'SELECT 1 FROM "Scan" LIMIT 1', application_name="gate-a"
        ) as holder,
        background(
            env.admin_dsn,
            'ALTER TABLE "Scan" ADD COLUMN "gateQueued" TEXT',
            application_name="gate-ddl",
        ) as ddl,
    ):
        wait_until(
            lambda: env.fetchval(
                "SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted "
                "AND mode = 'AccessExclusiveLock'",
                (ddl.pid,),
            ),
            timeout=10,
            message="ALTER TABLE queued for ACCESS EXCLUSIVE",
        )
        seen_session = threading.Event()
        waiting: list[int] = []
        result: dict[str, Any] = {}

        def run() -> None:
            result["code"] = main(
                ["preflight", "--format", "json", "--baseline", str(tmp_path / "b.json"),
                 str(migration)]
            )  # fmt: skip

        thread = threading.Thread(target=run)
        with admin.connect(env.admin_dsn, application_name="gate-watch") as watch:
            thread.start()
            while thread.is_alive():
                rows = watch.fetchall(
                    "SELECT a.pid, bool_or(NOT l.granted) FROM pg_stat_activity a "
                    "LEFT JOIN pg_locks l ON l.pid = a.pid "
                    "WHERE a.application_name = %s GROUP BY a.pid",
                    (APP,),
                )
                if rows:
                    seen_session.set()
                waiting.extend(int(pid) for pid, not_granted in rows if not_granted)
            thread.join()
            watch.execute("SELECT pg_cancel_backend(%s)", (ddl.pid,))  # end the queued ALTER
        assert ddl.done.wait(10)
        ddl.rollback()
        assert seen_session.is_set(), "the watcher never saw preflight's session"
        assert waiting == [], "preflight waited in the lock queue"
        assert result["code"] == 1
        doc = json.loads(capsys.readouterr().out)
        summary = check(doc, "blockers")["summary"]
        assert f"pid {ddl.pid}" in summary and f"pid {holder}" in summary
        assert check(doc, "baseline")["status"] == "fail"
        assert not (tmp_path / "b.json").exists()


def test_baseline_file_is_written(
    env: HealthDb, migration: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "baseline.json"
    code, doc = preflight(capsys, "--baseline", str(path), "--runs", "3", str(migration))
    assert code == 0, doc["reasons"]
    stored = json.loads(path.read_text())
    assert stored["kind"] == "gecko-exporter-baseline"
    plans = {(p["query"], p["plan"]): p for p in stored["plans"]}
    assert plans[("scan_lookup", "custom")]["uses_index"] is True
    latency = {lat["probe"]: lat for lat in stored["latency"]}
    assert latency["scan_lookup"]["runs"] == 3 and latency["report"]["p95_seconds"] > 0


# -- bad input and an unreachable server: exit 2, one line ----------------------------
def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GECKO_")}
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **env},
        check=False,
    )


@pytest.fixture
def clean_env() -> dict[str, str]:
    """Extra environment of a CLI subprocess (every inherited GECKO_* variable is dropped)."""
    return {}


def test_bad_input_is_one_line_exit_2(
    env: HealthDb, tmp_path: Path, clean_env: dict[str, str]
) -> None:
    bad = tmp_path / "bad.sql"
    bad.write_text("SET lock_timeout = '1s';\nALTER TABLE \"Scan\" ADD COLUMN;\n")
    base = {**clean_env, "GECKO_DATABASE_URL": env.monitor_dsn}
    for args, expected in (
        (["preflight", str(bad)], f"{bad}:2"),
        (["preflight", str(tmp_path / "missing")], "no such file"),
        (["verify", "--baseline", str(bad)], "invalid JSON"),
        (["verify", "--runs", "0"], "--runs"),
    ):
        proc = run_cli(*args, env=base)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (args, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stdout == ""
    proc = run_cli("preflight", str(bad), env=clean_env)  # no DSN at all
    assert proc.returncode == 2 and "database_url" in proc.stderr


def test_unreachable_database_exit_2(tmp_path: Path, clean_env: dict[str, str]) -> None:
    sql = tmp_path / "m.sql"
    sql.write_text(ADD_COLUMN)
    dsn = f"postgresql://gate:s3cretpw@127.0.0.1:{free_port()}/gecko?connect_timeout=2"
    for args in (["preflight", str(sql)], ["verify"]):
        proc = run_cli(*args, env={**clean_env, "GECKO_DATABASE_URL": dsn})
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "database unreachable" in lines[0], proc.stderr
        assert "s3cretpw" not in proc.stderr


# -- pure pieces ----------------------------------------------------------------------
def test_lock_modes_and_durations() -> None:
    assert normalize("AccessExclusiveLock") == "ACCESS EXCLUSIVE"
    assert normalize("ShareUpdateExclusiveLock") == "SHARE UPDATE EXCLUSIVE"
    assert conflicts("AccessShareLock", "ACCESS EXCLUSIVE")
    assert conflicts("RowExclusiveLock", "SHARE") and not conflicts("AccessShareLock", "SHARE")
    assert not conflicts("RowExclusiveLock", "SHARE UPDATE EXCLUSIVE")
    assert strongest(["SHARE", "ACCESS EXCLUSIVE", ""]) == "ACCESS EXCLUSIVE"
    assert parse_duration("'5s'") == 5 and parse_duration("250") == 0.25
    assert parse_duration("'1min'") == 60 and parse_duration("'2 h'") == 7200
    assert parse_duration("'soon'") is None
    assert table_pattern("public", "Scan") == '"Scan"'
    assert table_pattern("public", "users").startswith("(?i)")


def test_traffic_that_would_queue_past_80_percent_of_a_pool_is_no_go(
    env: HealthDb, migration: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """App-like reads on "Scan" during the sample window: ~rate x lock_timeout would queue."""
    config = tmp_path / "gecko.yaml"
    config.write_text(
        "pools:\n  - name: backend\n    application_name: gate-app\n    size: 10\n"
        "gate:\n  traffic_sample_seconds: 1.0\n"
    )
    stop = threading.Event()
    slug = env.fetchval('SELECT "slug" FROM "Scan" ORDER BY "createdAt" DESC LIMIT 1')

    def reads() -> None:
        with admin.connect(env.admin_dsn, application_name="gate-app") as conn:
            while not stop.is_set():
                conn.execute('SELECT "id" FROM "Scan" WHERE "slug" = %s', (slug,))

    thread = threading.Thread(target=reads)
    thread.start()
    try:
        code, doc = preflight(capsys, "--config", str(config), str(migration))
    finally:
        stop.set()
        thread.join(10)
    assert code == 1
    traffic = check(doc, "traffic")
    assert traffic["details"]["source"] == "pg_stat_statements"
    (estimate,) = traffic["details"]["migrations"]
    # hundreds of lookups per second on a quiet test server; 1 s lock_timeout
    assert estimate["blocked_statements_per_second"] > 20
    assert estimate["queued_during_lock_timeout"] > 8
    pools = check(doc, "pools")
    assert pools["status"] == "fail" and "pool backend would reach" in pools["summary"]


def test_drop_index_is_resolved_to_its_table(
    env: HealthDb, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    sql = tmp_path / "drop.sql"
    sql.write_text("SET lock_timeout = '2s';\nDROP INDEX \"Scan_recent_reports_idx\";\n")
    with open_transaction(
        env.admin_dsn, 'SELECT 1 FROM "Scan" LIMIT 1', application_name="gate-reader"
    ) as pid:
        code, doc = preflight(capsys, str(sql))
    assert code == 1
    (table,) = doc["tables"]
    assert table["name"] == "Scan_recent_reports_idx" and table["table"] == "Scan"
    assert table["lock"] == "ACCESS EXCLUSIVE"
    assert f"pid {pid}" in check(doc, "blockers")["summary"]


def test_backup_freshness_from_the_archiver(
    private_gecko_db: Callable[..., GeckoDatabase],
    migration: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """archive_mode=on: a failing archive_command is a no-go, a working one a pass."""
    db = private_gecko_db(archive_mode="on", archive_command="'exit 1'")
    monkeypatch.setenv("GECKO_DATABASE_URL", db.monitor_dsn)
    for var in ("GECKO_DATABASE_URL_FILE", "GECKO_CONFIG"):
        monkeypatch.delenv(var, raising=False)

    def archiver(column: str) -> int:
        with admin.connect(db.admin_dsn, application_name="gate-wal") as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS gate_wal (x int)")
            conn.execute("INSERT INTO gate_wal VALUES (1)")
            conn.execute("SELECT pg_switch_wal()")
            return int(conn.fetchval(f"SELECT {column} FROM pg_stat_archiver"))

    wait_until(lambda: archiver("failed_count") > 0, timeout=30, message="archiving fails")
    code, doc = preflight(capsys, str(migration))
    backup = check(doc, "backup")
    assert code == 1 and backup["status"] == "fail" and "failing" in backup["summary"]

    with admin.connect(db.admin_dsn, application_name="gate-wal") as conn:
        conn.execute("ALTER SYSTEM SET archive_command = 'true'")
        conn.execute("SELECT pg_reload_conf()")
    wait_until(lambda: archiver("archived_count") > 0, timeout=30, message="archiving works")
    code, doc = preflight(capsys, str(migration))
    assert check(doc, "backup")["status"] == "pass", check(doc, "backup")
    assert code == 0, doc["reasons"]


def test_pure_verdict_pieces() -> None:
    row = {
        "archive_mode": "off", "in_recovery": False, "archived_count": 0, "failed_count": 0,
        "last_archived_age": None, "last_failed_age": None, "failing": False,
    }  # fmt: skip
    assert backup_check(row, 3600, False, None).status == "not_visible"
    assert backup_check(row, 3600, True, None).status == "fail"
    assert backup_check(None, 3600, False, "permission denied").status == "not_visible"
    on = {**row, "archive_mode": "on", "archived_count": 5, "last_archived_age": 7200.0}
    assert backup_check(on, 3600, False, None).status == "fail"
    assert backup_check({**on, "last_archived_age": 60.0}, 3600, False, None).status == "pass"
    timeout = LockTimeout(5.0, "default")
    assert old_transaction_check([], [], timeout).status == "pass"
    assert old_transaction_check([], [], timeout, hidden=2).status == "not_visible"
    hidden_holder = {
        "pid": 7, "relation": 1, "mode": "AccessShareLock", "granted": True, "state": "",
        "xact_seconds": None, "backend_type": "client backend", "application_name": "",
    }  # fmt: skip
    scan = Table(name="Scan", table="Scan", oid=1, lock="ACCESS EXCLUSIVE")
    result, _ = blocker_checks([scan], [hidden_holder])
    assert result.status == "fail" and "not visible" in result.summary
    brief = {**hidden_holder, "state": "active", "xact_seconds": 0.01}
    assert blocker_checks([scan], [brief])[0].status == "warn"
    share = Table(name="Scan", table="Scan", oid=1, lock="SHARE UPDATE EXCLUSIVE")
    idle = {**hidden_holder, "state": "idle in transaction", "xact_seconds": 60.0}
    assert blocker_checks([share], [idle])[0].status == "pass"  # ACCESS SHARE vs CIC: no conflict


def test_without_pg_monitor_traffic_comes_from_counters_and_hidden_sessions_are_named(
    env: HealthDb,
    migration: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A role that cannot read other roles' activity or statement texts."""
    password = "gate-limited-pw"
    with admin.connect(env.admin_dsn, application_name="gate-setup") as conn:
        conn.execute("DROP ROLE IF EXISTS gate_limited")
        conn.execute(f"CREATE ROLE gate_limited LOGIN PASSWORD {conn.literal(password)}")
        conn.execute(f"GRANT CONNECT ON DATABASE {conn.ident(env.dbname)} TO gate_limited")
    config = tmp_path / "gecko.yaml"
    config.write_text("gate:\n  traffic_sample_seconds: 2.0\n")
    stop = threading.Event()

    def reads() -> None:
        with admin.connect(env.admin_dsn, application_name="gate-app") as conn:
            while not stop.is_set():
                conn.execute('SELECT "id" FROM "Scan" WHERE "slug" = %s', ("none",))

    thread = threading.Thread(target=reads)
    thread.start()
    try:
        dsn = admin.dsn_replace(env.admin_dsn, user="gate_limited", password=password)
        monkeypatch.setenv("GECKO_DATABASE_URL", dsn)
        _, doc = preflight(capsys, "--config", str(config), str(migration))
    finally:
        stop.set()
        thread.join(10)
        with admin.connect(env.admin_dsn, application_name="gate-setup") as conn:
            conn.execute(f"REVOKE CONNECT ON DATABASE {conn.ident(env.dbname)} FROM gate_limited")
            conn.execute("DROP ROLE gate_limited")
    traffic = check(doc, "traffic")
    assert traffic["details"]["source"] == "counters"
    assert traffic["details"]["tables"]["Scan"]["reads_per_second"] > 1
    old = check(doc, "old_transactions")
    assert old["status"] == "not_visible" and "not visible" in old["summary"]
