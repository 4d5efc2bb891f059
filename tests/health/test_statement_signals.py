"""pg_stat_statements: absent, present, not preloaded — never an error loop."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from exporter.probes.bloat import BloatProbe
from exporter.probes.indexes import DEFAULT_CRITICAL_INDEXES, IndexesProbe
from exporter.probes.statements import StatementsProbe
from exporter.probes.tables import TablesProbe
from tests.conftest import GeckoDatabase
from tests.health.conftest import MONITOR_ROLE, HealthDb, probe_runner, series, value

pytestmark = pytest.mark.integration

STATEMENT_FAMILIES = (
    "gecko_statement_calls_total",
    "gecko_statement_exec_time_seconds_total",
    "gecko_statement_mean_exec_time_seconds",
    "gecko_statement_max_exec_time_seconds",
)


def test_extension_dropped_and_recreated(health_db: HealthDb) -> None:
    probe = StatementsProbe(top_n=3)
    with probe_runner(health_db.monitor_dsn) as runner:
        assert value(runner.collect(probe), "gecko_statements_available") == 1
        try:
            health_db.execute("DROP EXTENSION pg_stat_statements")
            with capture_logs() as logs:
                fams = runner.collect(probe)
                runner.collect(probe)
            assert value(fams, "gecko_statements_available") == 0
            assert all(series(fams, name) == {} for name in STATEMENT_FAMILIES)
            unavailable = [e for e in logs if e["event"] == "statements_unavailable"]
            assert [e["reason"] for e in unavailable] == ["not_installed"]  # once, no loop
        finally:
            health_db.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        assert value(runner.collect(probe), "gecko_statements_available") == 1


def test_top_statements_of_the_last_interval(health_db: HealthDb) -> None:
    probe = StatementsProbe(top_n=3)
    with probe_runner(health_db.monitor_dsn) as runner:
        runner.collect(probe)  # baseline: deltas count from here
        with health_db.connect(application_name="gecko-backend") as conn:
            for _ in range(3):
                conn.execute("SELECT pg_sleep(%s)", (0.05,))
            for n in range(8):  # more distinct statements than top_n
                conn.execute(f'SELECT count(*) FROM "Issue" WHERE "sortWeight" > {n}')
            queryid = conn.fetchval(
                "SELECT queryid::text FROM pg_stat_statements WHERE query LIKE 'SELECT pg_sleep%%' "
                "AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            own = conn.fetchall(
                "SELECT DISTINCT queryid::text FROM pg_stat_statements s "
                "JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = %s",
                (MONITOR_ROLE,),
            )
        fams = runner.collect(probe)
        assert value(fams, "gecko_statements_available") == 1
        assert (value(fams, "gecko_statements_tracked") or 0) >= 9
        calls = series(fams, "gecko_statement_calls_total")
        assert 1 <= len(calls) <= 3
        assert all(len(series(fams, name)) == len(calls) for name in STATEMENT_FAMILIES)
        # the sleep used the most time in this interval
        interval = series(fams, "gecko_statement_interval_exec_time_seconds")
        assert max(interval, key=lambda k: interval[k]) == (queryid,)
        assert calls[(queryid,)] >= 3
        assert (value(fams, "gecko_statement_max_exec_time_seconds", queryid) or 0) >= 0.05
        assert (value(fams, "gecko_statement_mean_exec_time_seconds", queryid) or 0) >= 0.05
        total = value(fams, "gecko_statement_exec_time_seconds_total", queryid) or 0
        assert total >= 0.15
        # the exporter's own role is left out
        assert own and not {q for (q,) in own} & {k[0] for k in calls}
        # nothing ran since: the top list is empty, the availability stays
        quiet = runner.collect(probe)
        assert series(quiet, "gecko_statement_calls_total") == {}
        assert value(quiet, "gecko_statements_available") == 1


def test_empty_database_reports_states(empty_db: HealthDb) -> None:
    with probe_runner(empty_db.monitor_dsn) as runner:
        stmts = runner.collect(StatementsProbe())
        indexes = runner.collect(IndexesProbe("public", DEFAULT_CRITICAL_INDEXES))
        tables = runner.collect(TablesProbe(["public"], max_tables=30, default_schema="public"))
        bloat = runner.collect(
            BloatProbe(["public"], max_tables=30, default_schema="public", pgstattuple=True)
        )
    assert value(stmts, "gecko_statements_available") == 0
    assert set(series(indexes, "gecko_index_present").values()) == {0.0}
    assert series(indexes, "gecko_index_size_bytes") == {}
    assert value(tables, "gecko_tables") == 0
    assert series(tables, "gecko_table_size_bytes") == {}
    assert value(bloat, "gecko_table_bloat_pgstattuple_tables") == 0


def test_not_preloaded_is_unavailable(private_gecko_db: Callable[..., GeckoDatabase]) -> None:
    """Extension created, library not in shared_preload_libraries: a state, logged once."""
    db = private_gecko_db(scans=50, shared_preload_libraries="''")
    probe = StatementsProbe()
    with probe_runner(db.monitor_dsn) as runner, capture_logs() as logs:
        first = runner.collect(probe)
        second = runner.collect(probe)
    assert value(first, "gecko_statements_available") == 0
    assert value(second, "gecko_statements_available") == 0
    reasons = [e["reason"] for e in logs if e["event"] == "statements_unavailable"]
    assert reasons == ["not_preloaded"]
