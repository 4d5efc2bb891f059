"""First law: every exporter session is identified, time-limited and read-only."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from exporter.db.session import Database, SessionOptions
from exporter.errors import DatabaseError, DatabaseUnavailable, StatementTimeout
from tests.conftest import GeckoDatabase
from tests.support.exporter_proc import ExporterProcess
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

OPTIONS = SessionOptions(
    application_name="gecko-exporter",
    connect_timeout_seconds=5,
    lock_timeout_seconds=0.1,
    backoff_initial_seconds=0.25,
    backoff_max_seconds=2,
)


def test_every_lane_sets_the_safety_settings(gecko_db_any: GeckoDatabase) -> None:
    async def main() -> list[dict[str, object]]:
        db = Database(gecko_db_any.monitor_dsn, OPTIONS)
        seen = []
        try:
            for name in Database.LANES:
                async with db.lane(name).session(1.6) as s:
                    row = await s.fetch_one(
                        "SELECT current_setting('application_name') AS app,"
                        " current_setting('statement_timeout') AS st,"
                        " current_setting('lock_timeout') AS lt,"
                        " current_setting('default_transaction_read_only') AS ro,"
                        " current_setting('transaction_read_only') AS tro"
                    )
                    assert row is not None
                    seen.append(row)
                    with pytest.raises(DatabaseError, match="25006"):  # read-only transaction
                        await s.fetch("CREATE TEMP TABLE t (x int)")
        finally:
            await db.close()
        return seen

    for row in asyncio.run(main()):
        assert row == {
            "app": "gecko-exporter",
            "st": "1600ms",
            "lt": "100ms",
            "ro": "on",
            "tro": "on",
        }


def test_statement_timeout_switches_with_the_first_statement(gecko_db_any: GeckoDatabase) -> None:
    """Probes of different timeouts share a lane: the lane sets statement_timeout in one
    round trip with the session's first statement (a pipeline), and that statement already
    runs under it, also after a failed statement and with prepared statements."""

    async def main() -> list[object]:
        db = Database(gecko_db_any.monitor_dsn, OPTIONS)
        lane = db.lane("activity")
        seen: list[object] = []
        try:
            for _ in range(7):  # past psycopg's prepare threshold (5)
                async with lane.session(0.2) as s:
                    with pytest.raises(StatementTimeout):
                        await s.fetch("SELECT pg_sleep(2)")
                async with lane.session(3) as s:
                    # one round trip with the set_config: the same implicit transaction
                    row = await s.fetch_one(
                        "SELECT current_setting('statement_timeout') AS st,"
                        " transaction_timestamp() < statement_timestamp() AS with_set"
                    )
                    assert row is not None and row["with_set"] is True
                    seen.append(row["st"])
                    await s.fetch("SELECT pg_sleep(0.3)")  # under 3 s: not cancelled
                async with lane.session(3) as s:  # unchanged: no second set_config
                    row = await s.fetch_one("SELECT current_setting('statement_timeout') AS st")
                    assert row is not None
                    seen.append(row["st"])
            # a statement that fails in the pipeline rolls the setting back: set again next time
            async with lane.session(0.25) as s:
                with pytest.raises(DatabaseError):
                    await s.fetch("SELECT 1/0")
            async with lane.session(0.25) as s:
                row = await s.fetch_one("SELECT current_setting('statement_timeout') AS st")
                assert row is not None
                seen.append(row["st"])
            # a first statement that opens a transaction: a ROLLBACK undoes the setting too
            async with lane.session(0.3) as s:
                await s.fetch("BEGIN")
                await s.fetch("ROLLBACK")
            async with lane.session(0.3) as s:
                row = await s.fetch_one("SELECT current_setting('statement_timeout') AS st")
                assert row is not None
                seen.append(row["st"])
        finally:
            await db.close()
        return seen

    assert asyncio.run(main()) == ["3s", "3s"] * 7 + ["250ms", "300ms"]


def test_connect_failure_backs_off(gecko_db: GeckoDatabase) -> None:
    bad = gecko_db.monitor_dsn.replace(gecko_db.monitor_password, "wrong-password")

    async def main() -> list[str]:
        db = Database(bad, OPTIONS)
        errors = []
        for _ in range(3):
            try:
                async with db.lane("activity").session(1):
                    pass
            except DatabaseUnavailable as exc:
                errors.append(str(exc))
        await db.close()
        return errors

    errors = asyncio.run(main())
    assert "password authentication failed" in errors[0]
    assert all("reconnect backoff" in e for e in errors[1:])  # no hammering
    assert not any("wrong-password" in e for e in errors)


def test_password_never_in_argv_logs_or_metrics(gecko_db: GeckoDatabase, tmp_path: Path) -> None:
    secret_file = tmp_path / "dsn"
    secret_file.write_text(gecko_db.monitor_dsn)
    env = {"GECKO_DATABASE_URL_FILE": str(secret_file), "GECKO_LOG_LEVEL": "debug"}
    with ExporterProcess(None, env=env) as exp:
        exp.wait_ready()
        assert exp.proc is not None
        cmdline = Path(f"/proc/{exp.proc.pid}/cmdline").read_bytes().decode()
        body = exp.metrics_text()
        _, landing = exp.get("/")
    assert gecko_db.monitor_password not in cmdline
    assert gecko_db.monitor_password not in body
    assert gecko_db.monitor_password not in landing
    logs = exp.logs_text()
    assert "settings_loaded" in logs  # debug logs include the masked settings
    assert gecko_db.monitor_password not in logs


def test_sigterm_exits_zero_and_closes_sessions(gecko_db: GeckoDatabase) -> None:
    from gecko_demo import admin  # noqa: PLC0415

    exp = ExporterProcess(gecko_db.monitor_dsn).start(wait_ready=True)
    assert exp.stop() == 0
    events = [e["event"] for e in exp.events()]
    assert events[-1] == "exporter_stopped"
    with admin.connect(gecko_db.admin_dsn, application_name="gecko-tests") as conn:
        wait_until(
            lambda: conn.fetchval(
                "SELECT count(*) = 0 FROM pg_stat_activity"
                " WHERE application_name = 'gecko-exporter' AND datname = current_database()"
            ),
            timeout=5,
            message="exporter backends gone",
        )
