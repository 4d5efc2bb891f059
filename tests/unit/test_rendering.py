"""Store -> collector -> exposition text, without a database."""

from __future__ import annotations

import subprocess

from prometheus_client import generate_latest

from exporter.db.session import Health
from exporter.metrics import StoreCollector, build_registry, merge
from exporter.samples import Histogram, counter, gauge, histogram
from exporter.store import ResultStore
from tests.conftest import require_tool
from tests.support.exporter_proc import parse_metrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock) -> tuple[ResultStore, Health, StoreCollector]:
    store = ResultStore()
    health = Health()
    store.register("scan_lookup", 5, 3)
    return store, health, StoreCollector(store, health, up_stale_seconds=10, clock=clock)


def test_histogram_buckets_hold_thresholds_exactly() -> None:
    h = Histogram()
    for v in (0.1, 0.1000001, 2.0, 5.0, 11):
        h.observe(v)
    snap = dict(h.snapshot().buckets)
    assert snap[0.1] == 1  # 100 ms exactly is "not above" the threshold
    assert snap[2.0] == 3 and snap[5.0] == 4 and snap[float("inf")] == 5


def test_families_go_stale_but_owned_counters_stay() -> None:
    clock = Clock()
    store, health, collector = make(clock)
    h = Histogram()
    h.observe(0.01)
    store.record("scan_lookup", success=True, duration_seconds=0.01,
                 families=[gauge("gecko_scan_lookup_last_duration_seconds", "x", 0.01)],
                 persistent=[histogram("gecko_scan_lookup_duration_seconds", "x", [h.snapshot()])],
                 monotonic=clock.now, wall=1.7e9)  # fmt: skip
    health.last_reached = clock.now
    text = generate_latest(build_registry(collector)).decode()
    samples = parse_metrics(text)
    assert samples[("gecko_up", ())] == 1
    assert samples[("gecko_scan_lookup_last_duration_seconds", ())] == 0.01
    assert (
        samples[("gecko_probe_last_success_timestamp_seconds", (("probe", "scan_lookup"),))]
        == 1.7e9
    )
    clock.now += 2 * 5 + 3 + 1  # past 2 x interval + timeout
    samples = parse_metrics(generate_latest(build_registry(collector)).decode())
    assert ("gecko_scan_lookup_last_duration_seconds", ()) not in samples
    assert samples[("gecko_scan_lookup_duration_seconds_count", ())] == 1
    assert samples[("gecko_up", ())] == 0  # nothing answered for longer than up_stale_seconds


def test_failures_counted_by_reason() -> None:
    clock = Clock()
    store, _, collector = make(clock)
    store.record("scan_lookup", success=False, duration_seconds=0.1, reason="lock_timeout")
    store.record("scan_lookup", success=False, duration_seconds=0.1, reason="lock_timeout")
    samples = parse_metrics(generate_latest(build_registry(collector)).decode())
    key = ("gecko_probe_failures_total", (("probe", "scan_lookup"), ("reason", "lock_timeout")))
    assert samples[key] == 2
    assert samples[("gecko_probe_success", (("probe", "scan_lookup"),))] == 0
    assert samples[("gecko_probe_runs_total", (("probe", "scan_lookup"),))] == 2


def test_merge_same_family_from_two_probes() -> None:
    a = gauge("gecko_x", "x", labelnames=("t",), values={("a",): 1})
    b = gauge("gecko_x", "x", labelnames=("t",), values={("b",): 2})
    (m,) = merge([a, b])
    assert len(m.samples) == 2
    assert counter("gecko_y_total", "y", 1).kind == "counter"


def test_output_passes_promtool() -> None:
    promtool = require_tool("promtool")
    clock = Clock()
    store, health, collector = make(clock)
    h = Histogram()
    h.observe(0.2)
    store.record("scan_lookup", success=True, duration_seconds=0.2,
                 persistent=[histogram("gecko_scan_lookup_duration_seconds", "Lookup.", [h.snapshot()])],
                 monotonic=clock.now)  # fmt: skip
    health.last_reached = clock.now
    text = generate_latest(build_registry(collector)).decode()
    res = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True,
                         check=False)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr


def test_exposition_cache_reuses_until_store_changes() -> None:
    from exporter.metrics import ExpositionCache  # noqa: PLC0415

    clock = Clock()
    store, _, collector = make(clock)
    cache = ExpositionCache(store, collector, max_age=1.0, clock=clock)
    calls: list[int] = []

    def produce() -> bytes:
        calls.append(1)
        return str(len(calls)).encode()

    assert cache.render("text", produce) == b"1"
    assert cache.render("text", produce) == b"1"  # unchanged store: reused
    store.record("scan_lookup", success=False, duration_seconds=0.1, reason="busy")
    assert cache.render("text", produce) == b"2"  # a probe wrote: re-rendered
    clock.now += 1.5
    assert cache.render("text", produce) == b"3"  # older than max_age: re-rendered
    assert cache.render("openmetrics", produce) == b"4"  # per content type
