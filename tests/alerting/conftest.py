"""Fixtures for the alerting tests: tool lookup with CI-aware skip/fail, and the
end-to-end helpers (a PostgreSQL server shared by a module, the exporter ->
Prometheus -> Alertmanager -> webhook stack, notification lookup)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from alert_rules.config import RUNBOOK_BASE_URL, load_config
from alert_rules.render import render_plain
from gecko_demo.cluster import ServerBinaries
from tests.conftest import TEST_DSN, GeckoDatabase, build_gecko_database, start_cluster
from tests.support.exporter_proc import ExporterProcess
from tests.support.promstack import (
    AlertmanagerServer,
    Delivery,
    PrometheusServer,
    WebhookReceiver,
    alertmanager_binary,
    prometheus_binary,
)
from tests.support.wait import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
ALERT_RULES = REPO_ROOT / "alert_rules"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_tool(path: str | None, name: str, install_hint: str) -> str:
    """Return ``path``; a missing tool fails the test under CI=true, else skips it."""
    if path:
        return path
    reason = f"{name} not found ({install_hint})"
    if in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_tool(shutil.which("promtool"), "promtool", "apt-get install prometheus")


@pytest.fixture(scope="session")
def amtool() -> str:
    return require_tool(shutil.which("amtool"), "amtool", "apt-get install prometheus-alertmanager")


@pytest.fixture(scope="session")
def helm() -> str:
    explicit = os.environ.get("HELM")
    candidates = [explicit] if explicit else [str(REPO_ROOT / "tools" / "bin" / "helm")]
    found = next((c for c in candidates if c and Path(c).is_file()), None)
    return require_tool(
        found or (None if explicit else shutil.which("helm")), "helm", "run scripts/install-helm.sh"
    )


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return require_tool(prometheus_binary(), "prometheus", "apt-get install prometheus")


@pytest.fixture(scope="session")
def alertmanager_bin() -> str:
    return require_tool(
        alertmanager_binary(), "prometheus-alertmanager", "apt-get install prometheus-alertmanager"
    )


# -- end to end: shared server, stack and webhook helpers ---------------------------------


@pytest.fixture(scope="module")
def shared_gecko_db() -> Iterator[GeckoDatabase]:
    """A Gecko database on a PostgreSQL server of its own, shared by one module's tests.

    A test that stops the server starts it again before it ends (``ensure_running``
    repairs it otherwise), so the module's tests do not depend on their order.
    """
    if TEST_DSN:
        pytest.skip("needs a server the test suite owns (GECKO_TEST_DSN is set)")
    cluster = start_cluster(ServerBinaries.embedded())
    try:
        yield build_gecko_database(cluster.dsn(), cluster=cluster, scans=300)
    finally:
        cluster.destroy()


def ensure_running(db: GeckoDatabase) -> GeckoDatabase:
    """Start the database's server when an earlier test left it stopped."""
    if db.cluster is not None and not db.cluster.is_running():
        db.cluster.start()
    return db


@dataclass
class Stack:
    db: GeckoDatabase
    exporter: ExporterProcess
    prometheus: PrometheusServer
    alertmanager: AlertmanagerServer
    hook: WebhookReceiver
    instance: str


@dataclass(frozen=True)
class Notification:
    delivery: Delivery
    alert: dict[str, Any]


@contextmanager
def e2e_stack(
    workdir: Path,
    db: GeckoDatabase,
    *,
    overrides: Mapping[str, float | str],
    env: Mapping[str, str],
    config: Mapping[str, Any] | None = None,
) -> Iterator[Stack]:
    """Exporter on ``db`` -> Prometheus with the shipped rules (``overrides`` applied)
    -> Alertmanager with the example configuration -> a webhook receiver; every
    process is stopped when the block ends. Yields once Prometheus scrapes the exporter."""
    from tests.alerting.amconfig import write_localized  # noqa: PLC0415 - imports this module

    rules = workdir / "e2e.rules.yml"
    rules.write_text(render_plain(load_config().with_overrides(**overrides)))
    with ExitStack() as stack:
        hook = stack.enter_context(WebhookReceiver())
        am_config = write_localized(workdir / "alertmanager.yml", hook.url)
        am = stack.enter_context(AlertmanagerServer(workdir / "am", am_config))
        exporter = stack.enter_context(
            ExporterProcess(db.monitor_dsn, env=env, config=config, workdir=workdir)
        )
        exporter.wait_ready()
        instance = f"127.0.0.1:{exporter.port}"
        prom = stack.enter_context(
            PrometheusServer(workdir / "prom", [instance], [rules], alertmanager_url=am.url)
        )
        wait_until(
            lambda: prom.query('gecko_up{job="gecko-exporter"} == 1'),
            timeout=30,
            message="Prometheus scraping the exporter",
        )
        yield Stack(db, exporter, prom, am, hook, instance)


def alert_notification(
    hook: WebhookReceiver,
    *,
    alertname: str,
    status: str,
    severity: str,
    since: float,
    timeout: float,
) -> Notification:
    """The first delivery after ``since`` carrying that alert in that status."""

    def find() -> Notification | None:
        for delivery in hook.deliveries:
            if delivery.received_monotonic < since:
                continue
            for alert in delivery.payload.get("alerts", []):
                labels = alert["labels"]
                if (
                    labels.get("alertname") == alertname
                    and labels.get("severity") == severity
                    and alert["status"] == status
                ):
                    return Notification(delivery, alert)
        return None

    return wait_until(
        find, timeout=timeout, interval=0.05, message=f"{status} {alertname} ({severity})"
    )


def notified(hook: WebhookReceiver, *, alertname: str, severity: str, since: float) -> bool:
    """Whether any delivery after ``since`` carried that alert (any status)."""
    return any(
        a["labels"].get("alertname") == alertname and a["labels"].get("severity") == severity
        for d in hook.deliveries
        if d.received_monotonic >= since
        for a in d.payload.get("alerts", [])
    )


def report(label: str, seconds: float) -> None:
    print(f"\n[e2e timing] {label}: {seconds:.2f}s")


def check_annotations(alert: dict[str, Any], name: str, description: str) -> None:
    ann = alert["annotations"]
    assert set(ann) == {"summary", "description", "runbook_url"}
    assert ann["runbook_url"] == f"{RUNBOOK_BASE_URL}/{name}.md"
    assert ann["summary"].endswith(".")
    assert re.fullmatch(description, ann["description"]), ann["description"]
