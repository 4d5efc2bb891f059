"""The collector's ``describe()`` is the metric contract: exactly what a full run collects."""

from __future__ import annotations

import pytest

from exporter.db.session import Health
from exporter.metrics import StoreCollector, build_registry
from exporter.probes.registry import build_probes
from exporter.settings import load_config
from exporter.store import ResultStore
from tests.health.conftest import HealthDb, probe_runner

pytestmark = pytest.mark.integration


def test_described_names_equal_collected_names_for_a_full_run(health_db: HealthDb) -> None:
    settings = load_config(
        overrides={
            "database_url": health_db.monitor_dsn,
            "bloat": {"pgstattuple": True},
            "pools": [{"name": "app", "application_name": "gecko-app*", "size": 10}],
        }
    )
    probes = build_probes(settings)
    store = ResultStore()
    for probe in probes:
        store.register(probe.name, 60, 10)
    health = Health()
    with probe_runner(health_db.monitor_dsn) as runner:
        for probe in probes:
            families = []
            for _ in range(2):  # counters and plan changes need a second run
                families = runner.collect(probe, statement_timeout=8)
            store.record(probe.name, success=True, duration_seconds=0.1, families=families)
    health.reached()
    collector = StoreCollector(store, health, up_stale_seconds=60)
    described = {m.name for m in collector.describe()}
    collected = {m.name for m in collector.collect()}
    assert collected == described
    assert collector.conflicts.total == 0
    # and the registry accepts it beside the self-metrics (no collision)
    names = {m.name for m in build_registry(collector).collect()}
    assert described <= names and "process_resident_memory_bytes" in names
