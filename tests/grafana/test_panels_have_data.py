"""Every panel query returns data from a real Prometheus scraping the real exporter.

The exporter runs with fast probes on a demo database of its own (schema, data, and the
demo's app-like workload: backend and worker pools, so pg_stat_statements and the pool ratios
move); a real Prometheus scrapes it every second and evaluates the project's alert rules
(``for`` shortened to 0s). Series that exist only in special situations are provoked, not
papered over:

* a critical index is dropped and recreated (plan changes for the annotation,
  ``gecko_index_present`` 0, GeckoCriticalIndexMissing);
* a failed ``CREATE UNIQUE INDEX CONCURRENTLY`` (unique violation) leaves an invalid index
  (``gecko_invalid_index``, GeckoInvalidIndex);
* a ``CREATE INDEX CONCURRENTLY`` waits behind a transaction holding ROW EXCLUSIVE on the
  table (``gecko_index_build_progress_ratio``, lock waits);
* an ``ALTER TABLE`` waits for ACCESS EXCLUSIVE behind a reader, with a second reader queued
  behind it (``gecko_lock_*``, probe ``lock_timeout`` failures, GeckoLockQueueBehindDDL);
* a ``pg_sleep`` runs past the 5 s slow-query threshold (GeckoSlowQuery);
* a deploy is recorded in ``_prisma_migrations`` (one applied and one failed migration) while
  a session holds Prisma's migrate advisory lock (GeckoMigrationFailed, the annotation).

Range targets are queried over the whole run with ``query_range`` (what a panel draws);
instant targets (tables) at the moment every provoked condition was visible. A panel passes
when its query returns at least one series with a finite value.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import DEFAULT_PROBES
from gecko_demo import admin
from gecko_demo.cluster import ServerBinaries
from gecko_demo.workload import BACKEND_APP, WORKER_APP, Workload
from tests.conftest import TEST_DSN, GeckoDatabase, build_gecko_database, start_cluster
from tests.grafana.dashboard_lint import (
    PROMETHEUS_SYNTHETIC,
    QUERY_VALUES,
    REPO,
    Target,
    all_targets,
    load_dashboards,
    metric_names,
    substitute,
    variable_selectors,
)
from tests.grafana.tools import in_ci
from tests.support.exporter_proc import ExporterProcess, fast_probe_env
from tests.support.promstack import PrometheusServer, ServerError, prometheus_binary
from tests.support.wait import wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(900),
]

TARGETS = all_targets()
PANEL_TARGETS = [t for t in TARGETS if not t.annotation]
APP = "gecko-dashboard-test"
INVALID_INDEX = "gecko_dashboard_test_invalid"
BUILD_INDEX = "gecko_dashboard_test_build"
DDL_COLUMN = "gecko_dashboard_test_column"
DROPPED_INDEX = "Scan_dedupe_lookup_idx"
PRISMA_MIGRATE_LOCK = 72707369
DEPLOYED = "29991231000000_gecko_dashboard_test_applied"
BROKEN = "29991231000001_gecko_dashboard_test_failed"
POOLS = [
    {"name": "backend", "application_name": BACKEND_APP, "size": 10},
    {"name": "worker", "application_name": WORKER_APP, "size": 4},
]
BASELINE_SCRAPES = 20
PROVOKE_TIMEOUT = 120.0
STEP = "2s"


@dataclass
class Run:
    """What the module fixture observed; the tests only read it."""

    prometheus: Any
    start: float
    peak: float = 0.0
    end: float = 0.0
    exported: set[str] = field(default_factory=set)
    conditions: dict[str, bool] = field(default_factory=dict)
    alert_rules: bool = False
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


# --- alert rules ------------------------------------------------------------------------


def _rule_groups(document: Any) -> list[dict[str, Any]]:
    if not isinstance(document, dict):
        return []
    if "groups" in document:
        return list(document["groups"])
    spec = document.get("spec")
    return list(spec.get("groups", [])) if isinstance(spec, dict) else []


def immediate_alert_rules(directory: Path, out: Path) -> Path | None:
    """The project's alert rules with every ``for`` set to 0s (None when there are none)."""
    files = sorted([*directory.glob("**/*.yml"), *directory.glob("**/*.yaml")])
    groups = []
    for path in files:
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            for group in _rule_groups(document):
                rules = [dict(r) for r in group.get("rules", [])]
                for rule in rules:
                    if "alert" in rule:
                        rule["for"] = "0s"
                if any("alert" in r for r in rules):
                    groups.append({**group, "name": f"{path.stem}-{group['name']}", "rules": rules})
    if not groups:
        return None
    out.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False), encoding="utf-8")
    return out


# --- provocations -----------------------------------------------------------------------


class Blocked(threading.Thread):
    """A statement that is expected to block, run on its own connection in a thread."""

    def __init__(self, dsn: str, statement: str, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.conn = admin.connect(dsn, application_name=f"{APP}-{name}")
        self.pid = self.conn.backend_pid
        self.statement = statement
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.conn.execute(self.statement)
        except admin.AdminError as exc:  # cancelled at the end of the provocation
            self.error = exc

    def finish(self, control: Any, timeout: float = 60) -> None:
        control.execute("SELECT pg_cancel_backend(%s)", (self.pid,))
        self.join(timeout)
        self.conn.close()
        if self.is_alive():
            raise RuntimeError(f"{self.name} did not finish")


def _waiting(control: Any, sql: str) -> bool:
    return bool(control.fetchval(sql))


@contextmanager
def invalid_index(control: Any) -> Iterator[None]:
    """A failed CREATE UNIQUE INDEX CONCURRENTLY (duplicate statuses) leaves it invalid."""
    with pytest.raises(admin.AdminError) as failure:
        control.execute(f'CREATE UNIQUE INDEX CONCURRENTLY {INVALID_INDEX} ON "Scan" ("status")')
    assert failure.value.is_unique_violation
    assert control.fetchval(
        f"SELECT NOT indisvalid FROM pg_index WHERE indexrelid = '{INVALID_INDEX}'::regclass"
    )
    try:
        yield
    finally:
        control.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INVALID_INDEX}")


@contextmanager
def waiting_index_build(dsn: str, control: Any) -> Iterator[None]:
    """CREATE INDEX CONCURRENTLY on "Issue" waits for a writer's transaction to end."""
    writer = admin.connect(dsn, application_name=f"{APP}-writer", autocommit=False)
    writer.execute('LOCK TABLE "Issue" IN ROW EXCLUSIVE MODE')
    build = Blocked(
        dsn, f'CREATE INDEX CONCURRENTLY {BUILD_INDEX} ON "Issue" ("createdAt")', "build"
    )
    build.start()
    try:
        wait_until(
            lambda: _waiting(
                control,
                "SELECT count(*) FROM pg_stat_progress_create_index "
                "WHERE relid = '\"Issue\"'::regclass",
            ),
            timeout=30,
            message="CREATE INDEX CONCURRENTLY in pg_stat_progress_create_index",
        )
        yield
    finally:
        build.finish(control)
        writer.close()
        control.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {BUILD_INDEX}")


@contextmanager
def ddl_lock_queue(dsn: str, control: Any) -> Iterator[None]:
    """ALTER TABLE "Scan" waits behind a reader; another reader queues behind the ALTER."""
    reader = admin.connect(dsn, application_name=f"{APP}-reader", autocommit=False)
    reader.execute('SELECT 1 FROM "Scan" LIMIT 1')
    ddl = Blocked(dsn, f'ALTER TABLE "Scan" ADD COLUMN {DDL_COLUMN} integer', "ddl")
    ddl.start()
    queued: Blocked | None = None
    try:
        wait_until(
            lambda: _waiting(
                control,
                "SELECT count(*) FROM pg_locks WHERE NOT granted "
                "AND mode = 'AccessExclusiveLock' AND relation = '\"Scan\"'::regclass",
            ),
            timeout=30,
            message="ALTER TABLE waiting for ACCESS EXCLUSIVE",
        )
        queued = Blocked(dsn, 'SELECT count(*) FROM "Scan"', "queued")
        queued.start()
        wait_until(
            lambda: _waiting(
                control,
                "SELECT count(*) FROM pg_locks WHERE NOT granted "
                "AND mode = 'AccessShareLock' AND relation = '\"Scan\"'::regclass",
            ),
            timeout=30,
            message="a reader queued behind the ALTER TABLE",
        )
        yield
    finally:
        ddl.finish(control)  # cancel the ALTER first: the column is never added
        reader.close()
        if queued is not None:
            queued.join(30)
            queued.conn.close()
        assert not control.fetchval(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = '\"Scan\"'::regclass "
            f"AND attname = '{DDL_COLUMN}'"
        )


@contextmanager
def slow_query(dsn: str, control: Any) -> Iterator[None]:
    """A query that runs past the 5 s slow-query threshold until the provocation ends."""
    sleeper = Blocked(dsn, "SELECT pg_sleep(600)", "sleeper")
    sleeper.start()
    try:
        yield
    finally:
        sleeper.finish(control)


@contextmanager
def dropped_critical_index(control: Any) -> Iterator[None]:
    """Drop a critical index (the plan of the dedupe lookup changes); recreate it after."""
    definition = control.fetchval(
        "SELECT pg_get_indexdef(%s::regclass)", (f'public."{DROPPED_INDEX}"',)
    )
    assert definition
    control.execute(f'DROP INDEX public."{DROPPED_INDEX}"')
    try:
        yield
    finally:
        control.execute(definition)


@contextmanager
def deploy_with_a_failed_migration(dsn: str, control: Any) -> Iterator[None]:
    """Prisma's migrate lock held; one migration applied, the next one failed with logs."""
    migrate = admin.connect(dsn, application_name=f"{APP}-prisma-migrate")
    migrate.execute("SELECT pg_advisory_lock(%s)", (PRISMA_MIGRATE_LOCK,))
    insert = (
        'INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at, '
        "finished_at, logs, applied_steps_count) VALUES (%s, %s, %s, now(), {}, {}, %s)"
    )
    control.execute(insert.format("now()", "NULL"), (f"{APP}-1", "0" * 64, DEPLOYED, 1))
    control.execute(
        insert.format("NULL", "'ERROR: could not create unique index'"),
        (f"{APP}-2", "1" * 64, BROKEN, 0),
    )
    try:
        yield
    finally:
        control.execute(
            'DELETE FROM "_prisma_migrations" WHERE migration_name IN (%s, %s)', (DEPLOYED, BROKEN)
        )
        migrate.close()


# --- the run ----------------------------------------------------------------------------

#: Conditions (PromQL) that show the dropped index reached Prometheus (first phase).
REGRESSION_CONDITIONS = {
    "index missing": f'gecko_index_present{{index="{DROPPED_INDEX}"}} == 0',
    "plan changed": "sum(increase(gecko_query_plan_changes_total[1m])) > 0",
}
#: Conditions (PromQL) that show each held provocation reached Prometheus (second phase).
CONDITIONS = {
    "slow query": "max(gecko_longest_active_query_seconds) > 5",
    "failed migration": "max(gecko_migrations_failed) > 0",
    "migration applied": "max(changes(gecko_migrations_applied[1m])) > 0",
    "migrate lock held": "max(gecko_migration_in_progress) == 1",
    "statements": "count(gecko_statement_mean_exec_time_seconds) > 0",
    "invalid index": f'gecko_invalid_index{{index="{INVALID_INDEX}"}}',
    "index build": "gecko_index_build_progress_ratio",
    "lock queue": "max(gecko_lock_waiting_behind_access_exclusive) > 0",
    "probe lock timeouts": 'sum(gecko_probe_failures_total{reason="lock_timeout"}) > 0',
}
ALERT_CONDITION = 'ALERTS{alertname="GeckoSlowQuery", alertstate="firing"}'


def _exported_names(exporter: Any) -> set[str]:
    text = exporter.metrics_text()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def _poll(prom: Any, exporter: Any, run: Run, conditions: dict[str, str], timeout: float) -> None:
    """Record the exporter's metric names and wait until every condition holds (or timeout).

    Conditions that never hold stay False in ``run.conditions``; a test reports them.
    """

    def check() -> bool:
        run.exported |= _exported_names(exporter)
        for name, expr in conditions.items():
            if not run.conditions[name]:
                run.conditions[name] = bool(prom.query(expr))
        return all(run.conditions[name] for name in conditions)

    run.conditions.update(dict.fromkeys(conditions, False))
    try:
        wait_until(check, timeout=timeout, interval=1.0, message="provoked conditions")
    except TimeoutError:
        return


def _query(prom: Any, target: Target, run: Run) -> list[dict[str, Any]]:
    expr = substitute(target.expr, QUERY_VALUES)
    if target.instant:
        return list(prom.query(expr, time=run.peak))
    data = prom.api(
        "query_range", query=expr, start=f"{run.start:.3f}", end=f"{run.end:.3f}", step=STEP
    )
    return list(data["result"])


def _fast_probes() -> dict[str, str]:
    intervals = {name: min(1.0, p.interval_seconds) for name, p in DEFAULT_PROBES.items()}
    intervals["scan_lookup"] = 0.5
    return fast_probe_env(**intervals)


@contextmanager
def own_database() -> Iterator[GeckoDatabase]:
    """A demo database nobody else uses: the provocations lock and alter it."""
    if TEST_DSN:
        db = build_gecko_database(TEST_DSN, cluster=None)
        try:
            yield db
        finally:
            with admin.connect(TEST_DSN, application_name=APP) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {conn.ident(db.dbname)} WITH (FORCE)")
        return
    cluster = start_cluster(ServerBinaries.embedded())
    try:
        yield build_gecko_database(cluster.dsn(), cluster=cluster)
    finally:
        cluster.destroy()


@contextmanager
def workload(dsn: str) -> Iterator[Workload]:
    traffic = Workload(dsn, rate_per_second=8.0, seed=5, scan_seconds=(1.0, 3.0))
    traffic.start()
    try:
        yield traffic
    finally:
        assert traffic.stop(timeout=20), "workload threads did not stop"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    if prometheus_binary() is None:
        if in_ci():
            pytest.fail("prometheus is not installed (CI=true)", pytrace=False)
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    work = tmp_path_factory.mktemp("dashboards-e2e")
    rules = immediate_alert_rules(REPO / "alert_rules", work / "alerts-immediate.yml")
    with ExitStack() as stack:
        db = stack.enter_context(own_database())
        stack.enter_context(workload(db.admin_dsn))
        exporter = stack.enter_context(
            ExporterProcess(db.monitor_dsn, env=_fast_probes(), config={"pools": POOLS})
        )
        exporter.wait_ready()
        prom = stack.enter_context(
            PrometheusServer(
                work / "prometheus", [f"127.0.0.1:{exporter.port}"], [rules] if rules else []
            )
        )
        result = Run(prometheus=prom, start=time.time(), alert_rules=rules is not None)
        wait_until(
            lambda: prom.query(f"count_over_time(gecko_up[1m]) >= {BASELINE_SCRAPES}"),
            timeout=BASELINE_SCRAPES + 60,
            interval=0.5,
            message=f"{BASELINE_SCRAPES} scrapes of the exporter",
        )
        control = stack.enter_context(admin.connect(db.admin_dsn, application_name=APP))
        with dropped_critical_index(control):
            _poll(prom, exporter, result, REGRESSION_CONDITIONS, PROVOKE_TIMEOUT)
        with ExitStack() as provoked:
            provoked.enter_context(invalid_index(control))
            provoked.enter_context(deploy_with_a_failed_migration(db.admin_dsn, control))
            provoked.enter_context(waiting_index_build(db.admin_dsn, control))
            provoked.enter_context(ddl_lock_queue(db.admin_dsn, control))
            provoked.enter_context(slow_query(db.admin_dsn, control))
            conditions = dict(CONDITIONS)
            if rules is not None:
                conditions["slow query alert firing"] = ALERT_CONDITION
            _poll(prom, exporter, result, conditions, PROVOKE_TIMEOUT)
            result.peak = time.time()
        result.end = time.time()
        for target in TARGETS:
            try:
                result.results[target.where] = _query(prom, target, result)
            except ServerError as exc:
                result.errors[target.where] = str(exc)
        yield result


def _finite(series: list[dict[str, Any]]) -> bool:
    values = [s["value"] for s in series if "value" in s]
    values += [v for s in series for v in s.get("values", [])]
    return any(math.isfinite(float(v[1])) for v in values)


def test_provocations_reached_prometheus(run: Run) -> None:
    missing = sorted(name for name, seen in run.conditions.items() if not seen)
    assert missing == [], f"not visible in Prometheus within {PROVOKE_TIMEOUT:.0f}s: {missing}"


def test_variables_offer_the_scraped_job_and_instance(run: Run) -> None:
    """``label_values(<selector>, job|instance)`` finds the exporter Prometheus scrapes."""
    prom = run.prometheus
    (target,) = prom.targets()
    for board in load_dashboards().values():
        for selector in variable_selectors(board):
            series = prom.api("series", **{"match[]": substitute(selector, QUERY_VALUES)})
            assert {s["job"] for s in series} == {target["labels"]["job"]}
            assert {s["instance"] for s in series} == {target["labels"]["instance"]}


def test_panel_metrics_are_exported(run: Run) -> None:
    """Every metric a dashboard or its variables select is on the running exporter's /metrics."""
    selectors = [t.expr for t in TARGETS]
    selectors += [v for board in load_dashboards().values() for v in variable_selectors(board)]
    referenced = {m for expr in selectors for m in metric_names(expr)} - PROMETHEUS_SYNTHETIC
    missing = sorted(referenced - run.exported)
    assert not missing, f"selected by dashboards but not on /metrics: {missing}"


@pytest.mark.parametrize("target", PANEL_TARGETS, ids=lambda t: t.where)
def test_panel_query_returns_data(run: Run, target: Target) -> None:
    if "ALERTS" in target.expr and not run.alert_rules and "vector(0)" not in target.expr:
        message = "alert_rules/ has no alerting rules: the firing-alerts table cannot be shown"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    assert target.where not in run.errors, run.errors.get(target.where)
    series = run.results[target.where]
    assert series, f"no series for {target.expr}"
    assert _finite(series), f"only NaN/Inf values for {target.expr}"


@pytest.mark.parametrize("target", [t for t in TARGETS if t.annotation], ids=lambda t: t.where)
def test_annotation_marks_the_provoked_event(run: Run, target: Target) -> None:
    """Plan changes (index dropped/recreated) and the recorded deploy show as annotations."""
    assert target.where not in run.errors, run.errors.get(target.where)
    assert _finite(run.results[target.where]), f"no event for {target.expr}"
