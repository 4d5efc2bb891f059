"""A probe's conflicting family never breaks the scrape; every probe's last run is exported."""

from __future__ import annotations

import subprocess

from prometheus_client import generate_latest
from structlog.testing import capture_logs

from exporter.db.session import Health
from exporter.metrics import StoreCollector, build_registry
from exporter.samples import Histogram, counter, gauge, histogram
from exporter.store import ResultStore
from tests.conftest import require_tool
from tests.support.exporter_proc import parse_metrics


def collector_with(store: ResultStore) -> StoreCollector:
    health = Health()
    health.reached()
    return StoreCollector(store, health, up_stale_seconds=60)


def render(collector: StoreCollector) -> str:
    return generate_latest(build_registry(collector)).decode()


def test_conflicting_family_is_dropped_logged_once_and_counted() -> None:
    store = ResultStore()
    store.register("locks", 5, 3)
    store.register("tables", 60, 10)
    good = gauge("gecko_shared_value", "Right.", labelnames=("table",), values={("a",): 1.0})
    # same name, other labels (a bug in one probe)
    bad = gauge("gecko_shared_value", "Wrong.", labelnames=("index",), values={("i",): 2.0})
    # a counter whose samples collide with a gauge of another probe
    clash = counter("gecko_other_total", "Counter.", 3.0)
    other = gauge("gecko_other_total", "Gauge.", 4.0)
    # a probe exporting one of the exporter's own names
    own = gauge("gecko_up", "Not ours to set.", 0.0)
    store.record("locks", success=True, duration_seconds=0.01, families=[bad, clash, own])
    store.record("tables", success=True, duration_seconds=0.01, families=[good, other])
    collector = collector_with(store)
    with capture_logs() as logs:
        first = parse_metrics(render(collector))
        second = parse_metrics(render(collector))
    for samples in (first, second):
        assert samples[("gecko_shared_value", (("index", "i"),))] == 2.0  # first one seen is kept
        assert ("gecko_shared_value", (("table", "a"),)) not in samples
        assert samples[("gecko_other_total", ())] == 3.0
        assert samples[("gecko_up", ())] == 1.0  # the exporter's own, not the probe's
        assert samples[("gecko_probe_success", (("probe", "tables"),))] == 1.0
    assert first[("gecko_exporter_metric_conflicts_total", ())] == 3
    assert second[("gecko_exporter_metric_conflicts_total", ())] == 6
    conflicts = [e for e in logs if e["event"] == "metric_conflict"]
    assert sorted(e["family"] for e in conflicts) == [
        "gecko_other_total",
        "gecko_shared_value",
        "gecko_up",
    ]


def test_output_with_a_conflict_passes_promtool() -> None:
    promtool = require_tool("promtool")
    store = ResultStore()
    store.register("scan_lookup", 5, 3)
    store.register("tables", 60, 10)  # rendered after scan_lookup (probes in name order)
    h = Histogram()
    h.observe(0.2)
    hist = histogram("gecko_scan_lookup_duration_seconds", "Lookup.", [h.snapshot()])
    count_gauge = gauge("gecko_scan_lookup_duration_seconds_count", "Collides.", 1.0)
    store.record("scan_lookup", success=True, duration_seconds=0.2, persistent=[hist])
    store.record("tables", success=True, duration_seconds=0.2, families=[count_gauge])
    text = render(collector_with(store))
    res = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr
    samples = parse_metrics(text)
    assert samples[("gecko_exporter_metric_conflicts_total", ())] == 1
    assert samples[("gecko_scan_lookup_duration_seconds_count", ())] == 1


def test_last_run_timestamp_from_start_then_every_outcome() -> None:
    store = ResultStore()
    store.register("scan_lookup", 5, 3)
    collector = collector_with(store)
    key = ("gecko_probe_last_run_timestamp_seconds", (("probe", "scan_lookup"),))
    started = parse_metrics(render(collector))[key]
    assert started > 1.7e9  # the exporter's start until the first run
    store.record("scan_lookup", success=False, duration_seconds=0, reason="busy", wall=2e9)
    assert parse_metrics(render(collector))[key] == 2e9  # a busy run is a run
    store.record("scan_lookup", success=True, duration_seconds=0.1, wall=2e9 + 5)
    assert parse_metrics(render(collector))[key] == 2e9 + 5
