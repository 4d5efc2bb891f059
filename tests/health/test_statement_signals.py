"""pg_stat_statements: absent, present, not preloaded — never an error loop."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import datetime

import pytest
from structlog.testing import capture_logs

from exporter.probes import app_queries
from exporter.probes.app_statements import APP_QUERY_NAMES
from exporter.probes.bloat import BloatProbe
from exporter.probes.indexes import DEFAULT_CRITICAL_INDEXES, IndexesProbe
from exporter.probes.statements import StatementsProbe
from exporter.probes.tables import TablesProbe
from exporter.samples import Family
from gecko_demo import admin
from tests.conftest import GeckoDatabase, require_tool
from tests.health.conftest import MONITOR_ROLE, HealthDb, probe_runner, series, value
from tests.support.exporter_proc import ExporterProcess, fast_probe_env

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
            # the app's statements: a state (0), the counters still served
            assert series(fams, "gecko_app_query_identified") == {
                (n,): 0.0 for n in APP_QUERY_NAMES
            }
            assert set(series(fams, "gecko_app_query_calls_total")) == {
                (n,) for n in APP_QUERY_NAMES
            }
            unavailable = [e for e in logs if e["event"] == "statements_unavailable"]
            assert [e["reason"] for e in unavailable] == ["not_installed"]  # once, no loop
        finally:
            health_db.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        assert value(runner.collect(probe), "gecko_statements_available") == 1


def test_top_statements_of_the_last_interval(health_db: HealthDb) -> None:
    probe = StatementsProbe(top_n=3)
    with probe_runner(health_db.monitor_dsn) as runner:
        baseline = series(runner.collect(probe), "gecko_statement_calls_total")  # deltas from here
        with health_db.connect(application_name="gecko-backend") as conn:
            for _ in range(3):  # 0.6 s: more than the counts take on a loaded machine
                conn.execute("SELECT pg_sleep(%s) AS top_statement_test", (0.2,))
            for n in range(8):  # more distinct statements than top_n
                conn.execute(f'SELECT count(*) FROM "Issue" WHERE "sortWeight" > {n}')
            queryid = conn.fetchval(
                # exactly this statement: other tests' pg_sleep statements share the database
                "SELECT queryid::text FROM pg_stat_statements "
                "WHERE query = 'SELECT pg_sleep($1) AS top_statement_test' "
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
        # the statements exported at the baseline keep their series; at most top_n enter
        assert set(baseline) <= set(calls) and 1 <= len(set(calls) - set(baseline)) <= 3
        assert all(len(series(fams, name)) == len(calls) for name in STATEMENT_FAMILIES)
        # the sleep's time in this interval is exported (other tests' statements on the shared
        # server may rank beside it, so its rank is not asserted)
        interval = series(fams, "gecko_statement_interval_exec_time_seconds")
        assert interval[(queryid,)] >= 0.55
        assert calls[(queryid,)] >= 3
        assert (value(fams, "gecko_statement_max_exec_time_seconds", queryid) or 0) >= 0.05
        assert (value(fams, "gecko_statement_mean_exec_time_seconds", queryid) or 0) >= 0.05
        total = value(fams, "gecko_statement_exec_time_seconds_total", queryid) or 0
        assert total >= 0.15
        # the exporter's own role is left out
        assert own and not {q for (q,) in own} & {k[0] for k in calls}
        # nothing ran since: the statements keep their series (stable set), no new time
        quiet = runner.collect(probe)
        assert series(quiet, "gecko_statement_calls_total") == calls
        assert set(series(quiet, "gecko_statement_interval_exec_time_seconds").values()) == {0.0}
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
    assert set(series(second, "gecko_app_query_identified").values()) == {0.0}
    reasons = [e["reason"] for e in logs if e["event"] == "statements_unavailable"]
    assert reasons == ["not_preloaded"]


# -- the application's statements from real traffic (issue 11 §1) --------------------
#: statement shapes as the app sends them: extended protocol, bind parameters, prepared
SHAPES = {
    "scan_lookup": app_queries.dedupe_lookup("public"),
    "report_scan": app_queries.scan_by_slug("public"),
    "report_evidence": app_queries.evidence_for_scan("public"),
    "report_issues": app_queries.issues_for_scan("public"),
    "recent_reports": app_queries.recent_reports("public"),
}


def app_traffic(
    conn: admin.AdminConnection, times: int, *, untyped: bool = False
) -> dict[str, int]:
    """Each of the app's five statements ``times`` times, prepared, with bind parameters.

    ``untyped``: integers sent as text, their types left to the server (another queryid).
    """
    scan_id, slug, url = conn.fetchone(
        'SELECT "id", "slug", "normalizedInput" FROM "Scan" WHERE "status" = %s '
        'AND "normalizedInput" IS NOT NULL ORDER BY "createdAt" DESC LIMIT 1',
        ("done",),
    ) or ("", "", "")

    def n(value: int) -> int | str:
        return str(value) if untyped else value

    params: dict[str, tuple[object, ...]] = {
        "scan_lookup": (url, "done", datetime(2000, 1, 1), n(1), n(0)),
        "report_scan": (slug, n(1), n(0)),
        "report_evidence": (scan_id, n(0)),
        "report_issues": (scan_id, n(0)),
        "recent_reports": ("done", n(10), n(0)),
    }
    for _ in range(times):
        for name, sql in SHAPES.items():
            conn.fetchall(sql, params[name], prepare=True)
    return dict.fromkeys(SHAPES, times)


def app_counters(fams: list[Family]) -> dict[str, float]:
    return {k[0]: v for k, v in series(fams, "gecko_app_query_calls_total").items()}


@pytest.mark.parametrize("exclude_own_role", [True, False])
def test_app_statements_counted_from_real_traffic(
    health_db: HealthDb, exclude_own_role: bool
) -> None:
    """``exclude_own_role`` is about the top-N; the app's statements never count the exporter."""
    probe = StatementsProbe(text_refresh_seconds=0, exclude_own_role=exclude_own_role)
    with probe_runner(health_db.monitor_dsn) as runner:
        with health_db.connect(application_name="gecko-advisor-backend") as app:
            app_traffic(app, 1)  # every shape has an entry
        before = runner.collect(probe)
        assert set(series(before, "gecko_app_query_identified").values()) == {1.0}
        with health_db.connect(application_name="gecko-advisor-backend") as app:
            app_traffic(app, 3)
        # the exporter's own executions of the same shapes (its latency probes) never count
        with admin.connect(health_db.monitor_dsn, application_name="gecko-exporter") as own:
            app_traffic(own, 4)
        after = runner.collect(probe)
    grown = {k: app_counters(after)[k] - app_counters(before)[k] for k in APP_QUERY_NAMES}
    assert grown == dict.fromkeys(APP_QUERY_NAMES, 3.0)
    exec_before = series(before, "gecko_app_query_exec_time_seconds_total")
    exec_after = series(after, "gecko_app_query_exec_time_seconds_total")
    assert all(exec_after[k] > exec_before[k] for k in exec_before)
    rows = series(after, "gecko_app_query_rows_total")
    rows_before = series(before, "gecko_app_query_rows_total")
    assert rows[("recent_reports",)] - rows_before[("recent_reports",)] == 30  # 3 x LIMIT 10
    assert set(series(after, "gecko_app_query_identified").values()) == {1.0}


def test_app_statements_survive_reset_types_and_a_rebuilt_table(health_db: HealthDb) -> None:
    probe = StatementsProbe(text_refresh_seconds=0)
    with probe_runner(health_db.monitor_dsn) as runner:
        with health_db.connect(application_name="gecko-advisor-backend") as app:
            app_traffic(app, 2)
        first = app_counters(runner.collect(probe))
        # a reset: entries gone, nothing identified, and the counters do not go down
        health_db.execute("SELECT pg_stat_statements_reset()")
        fams = runner.collect(probe)
        assert app_counters(fams) == first
        assert set(series(fams, "gecko_app_query_identified").values()) == {0.0}
        # the same statements with typed and untyped parameters: two queryids each
        with health_db.connect(application_name="gecko-advisor-backend") as app:
            app_traffic(app, 2)
            app_traffic(app, 3, untyped=True)
            ids = app.fetchval(
                "SELECT count(DISTINCT queryid) FROM pg_stat_statements "
                'WHERE query LIKE \'SELECT s."id", s."slug"%%\' AND dbid = '
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        assert ids == 2  # the premise: parameter types change the queryid
        second = app_counters(runner.collect(probe))
        assert {k: second[k] - first[k] for k in APP_QUERY_NAMES} == dict.fromkeys(
            APP_QUERY_NAMES, 5.0
        )
        # "Issue" dropped and recreated (a new OID): the report's issues get a new queryid
        with health_db.connect() as ddl:
            ddl.execute('ALTER TABLE "Issue" RENAME TO "Issue_gecko_test"')
            try:
                ddl.execute('CREATE TABLE "Issue" (LIKE "Issue_gecko_test" INCLUDING ALL)')
                ddl.execute('INSERT INTO "Issue" SELECT * FROM "Issue_gecko_test"')
                with health_db.connect(application_name="gecko-advisor-backend") as app:
                    app_traffic(app, 2)
                fams = runner.collect(probe)
            finally:
                ddl.execute('DROP TABLE IF EXISTS "Issue"')
                ddl.execute('ALTER TABLE "Issue_gecko_test" RENAME TO "Issue"')
        third = app_counters(fams)
        assert {k: third[k] - second[k] for k in APP_QUERY_NAMES} == dict.fromkeys(
            APP_QUERY_NAMES, 2.0
        )
        assert value(fams, "gecko_app_query_identified", "report_issues") == 1


def test_statement_series_stay_while_the_ranking_shifts(health_db: HealthDb) -> None:
    """top_n 1: a statement out of the top 2 keeps its series for retention_seconds."""
    clock = [0.0]
    probe = StatementsProbe(top_n=1, retention_seconds=120, clock=lambda: clock[0])
    sleeps = {  # three parse trees (an alias alone does not change the queryid)
        "a": "SELECT pg_sleep(%s) IS NULL AS gecko_shift_a",
        "b": "SELECT pg_sleep(%s) IS NOT NULL AS gecko_shift_b",
        "c": "SELECT pg_sleep(%s)::text AS gecko_shift_c",
    }

    def busy(*names: str) -> None:
        with health_db.connect(application_name="gecko-advisor-backend") as conn:
            for rank, name in enumerate(names):
                for _ in range(len(names) - rank):
                    conn.execute(sleeps[name], (0.02,))

    def exported(fams: list[Family]) -> set[str]:
        return {k[0] for k in series(fams, "gecko_statement_calls_total")}

    with probe_runner(health_db.monitor_dsn) as runner:
        runner.collect(probe)
        busy("a")
        first = exported(runner.collect(probe))
        clock[0] = 60
        busy("b", "c")  # a is third: out of the top 2
        second = exported(runner.collect(probe))
        with health_db.connect() as conn:
            qid = {
                n: str(
                    conn.fetchval(
                        "SELECT queryid::text FROM pg_stat_statements WHERE query LIKE %s",
                        (f"%gecko_shift_{n}%",),
                    )
                )
                for n in sleeps
            }
        assert qid["a"] in first
        assert {qid["a"], qid["b"]} <= second and qid["c"] not in second
        clock[0] = 200  # a: 200 s since it last ranked in the top 2
        busy("c", "b")
        third = exported(runner.collect(probe))
        assert qid["a"] not in third and {qid["b"], qid["c"]} <= third


def test_daemon_serves_the_app_statements(health_db: HealthDb) -> None:
    """The real exporter process: every gecko_app_query_* family, values that grow, promtool."""
    promtool = require_tool("promtool")
    env = fast_probe_env(statements=1)
    env["GECKO_STATEMENTS__TEXT_REFRESH_SECONDS"] = "0"
    with ExporterProcess(health_db.monitor_dsn, env=env) as exp:
        exp.wait_ready()
        with health_db.connect(application_name="gecko-advisor-backend") as app:
            app_traffic(app, 2)
        for name in APP_QUERY_NAMES:
            exp.wait_value(
                "gecko_app_query_identified", lambda v: v == 1, timeout=30, labels={"query": name}
            )
        before = exp.value("gecko_app_query_calls_total", query="recent_reports") or 0
        with health_db.connect(application_name="gecko-advisor-backend") as app:
            app_traffic(app, 3)
        exp.wait_value(
            "gecko_app_query_calls_total",
            lambda v: v >= before + 3,
            timeout=30,
            labels={"query": "recent_reports"},
        )
        text = exp.metrics_text()
    for family in ("calls_total", "exec_time_seconds_total", "rows_total", "identified"):
        for name in APP_QUERY_NAMES:
            assert f'gecko_app_query_{family}{{query="{name}"}}' in text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
