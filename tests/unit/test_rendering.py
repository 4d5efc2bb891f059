"""Store -> collector -> exposition text, without a database."""

from __future__ import annotations

import gzip
import subprocess
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import generate_latest as om_generate_latest
from prometheus_client.registry import Collector

from exporter.db.session import Health
from exporter.metrics import StoreCollector, build_registry, merge
from exporter.samples import Family, Histogram, counter, gauge, histogram
from exporter.store import ResultStore
from tests.conftest import require_tool
from tests.support.exporter_proc import parse_metrics
from tests.support.wait import wait_until


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
    """Scrapes read rendered bytes; a store write (then the render step) changes them."""
    from exporter.metrics import ExpositionCache  # noqa: PLC0415

    clock = Clock()
    store, health, collector = make(clock)
    health.last_reached = clock.now
    cache = ExpositionCache(store, collector, clock=clock)
    text_type, om_type = "text/plain; version=0.0.4; charset=utf-8", "application/openmetrics-text"
    first = cache.body(text_type, generate_latest, gz=False)  # first request: rendered once
    assert cache.renders == 1
    assert cache.body(text_type, generate_latest, gz=False) is first  # no rendering
    assert cache.renders == 1
    store.record("scan_lookup", success=False, duration_seconds=0.1, reason="busy")
    assert cache.body(text_type, generate_latest, gz=False) is first  # until the render step
    cache.refresh()
    changed = cache.body(text_type, generate_latest, gz=False)
    key = ("gecko_probe_failures_total", (("probe", "scan_lookup"), ("reason", "busy")))
    assert parse_metrics(first.decode())[key] == 0
    assert parse_metrics(changed.decode())[key] == 1
    # per content type and encoding, each rendered by the same step
    om = cache.body(om_type, om_generate_latest, gz=True)
    assert gzip.decompress(om).endswith(b"# EOF\n")
    renders = cache.renders
    cache.refresh()
    assert cache.renders == renders + 1
    assert cache.body(om_type, om_generate_latest, gz=True) is not om


def test_cached_exposition_equals_a_direct_rendering() -> None:
    """Pre-converted probe families + own families + self-metrics == the registry's output."""
    from exporter.metrics import ExpositionCache  # noqa: PLC0415

    clock = Clock()
    store, health, collector = make(clock)
    store.register("report", 15, 10)
    health.last_reached = clock.now
    h = Histogram()
    h.observe(0.2)
    for probe in ("scan_lookup", "report"):  # one family from two probes: merged
        store.record(probe, success=True, duration_seconds=0.01, monotonic=clock.now,
                     families=[gauge("gecko_shared", "Shared.", labelnames=("p",),
                                     values={(probe,): 1.0}),
                               gauge(f"gecko_{probe}_x", "X.", 2.0)],
                     persistent=[histogram(f"gecko_{probe}_seconds", "H.", [h.snapshot()])])  # fmt: skip
    others = [ConstCollector()]
    cache = ExpositionCache(store, collector, others)
    for encoder in (generate_latest, om_generate_latest):
        direct = encoder(build_registry(collector, others))
        assert cache.body(str(encoder), encoder, gz=False) == direct
        cache.refresh()  # from converted chunks now
        assert cache.body(str(encoder), encoder, gz=False) == direct
    assert b"Sampled by probe report every 15s." in direct


def test_probe_families_are_converted_once_per_change() -> None:
    from exporter.metrics import ExpositionCache  # noqa: PLC0415

    clock = Clock()
    store, _, collector = make(clock)
    fam = gauge("gecko_scan_lookup_last_duration_seconds", "x", 0.01)
    store.record("scan_lookup", success=True, duration_seconds=0.01, families=[fam],
                 monotonic=clock.now)  # fmt: skip
    cache = ExpositionCache(store, collector)
    cache.body("t", generate_latest, gz=False)
    converted = dict(cache._converted["t"].families)  # what the renderer keeps per family
    cache.refresh()
    cache.refresh()
    assert cache._converted["t"].families == converted  # same objects: not converted again
    assert all(a[1] is b[1] for a, b in zip(converted.values(), cache._converted["t"].families.values(),
                                              strict=True))  # fmt: skip
    # a new run with an equal family: the store keeps the previous object, not converted again
    store.record("scan_lookup", success=True, duration_seconds=0.01,
                 families=[gauge("gecko_scan_lookup_last_duration_seconds", "x", 0.01)],
                 monotonic=clock.now)  # fmt: skip
    cache.refresh()
    assert cache._converted["t"].families == converted
    assert all(a[1] is b[1] for a, b in zip(converted.values(), cache._converted["t"].families.values(),
                                              strict=True))  # fmt: skip
    store.record("scan_lookup", success=True, duration_seconds=0.01,
                 families=[gauge("gecko_scan_lookup_last_duration_seconds", "x", 0.02)],
                 monotonic=clock.now)  # fmt: skip
    cache.refresh()
    assert cache._converted["t"].families != converted  # a changed value: converted again
    assert b"gecko_scan_lookup_last_duration_seconds 0.02" in cache.body(
        "t", generate_latest, gz=False
    )


def test_render_thread_renders_at_least_every_max_age() -> None:
    from exporter.metrics import ExpositionCache  # noqa: PLC0415

    store, _, collector = make(Clock())
    cache = ExpositionCache(store, collector, min_interval=0.05, max_age=0.1)
    cache.start()
    try:
        before = cache.body("t", generate_latest, gz=False)
        store.record("scan_lookup", success=False, duration_seconds=0.1, reason="timeout")
        wait_until(lambda: cache.body("t", generate_latest, gz=False) != before, timeout=5,
                   message="rendered after the write")  # fmt: skip
        text = cache.body("t", generate_latest, gz=False).decode()
        key = ("gecko_probe_failures_total", (("probe", "scan_lookup"), ("reason", "timeout")))
        assert parse_metrics(text)[key] == 1
    finally:
        cache.stop()


def test_renders_just_before_the_next_expected_scrape() -> None:
    from exporter.metrics import ExpositionCache  # noqa: PLC0415

    clock = Clock()
    store, _, collector = make(clock)
    cache = ExpositionCache(store, collector, lead=1, min_interval=1, max_age=5, clock=clock)
    cache.refresh()
    assert cache.next_render() == clock.now + 5  # nothing asked for: every max_age
    cache.body("t", generate_latest, gz=False)  # first scrape (rendered for it)
    clock.now += 15
    cache.body("t", generate_latest, gz=False)  # every 15 s: next one expected at +15
    cache.refresh()
    assert cache.next_render() == clock.now + 5  # max_age first ...
    clock.now += 10
    cache.refresh()
    assert cache.next_render() == clock.now + 4  # ... then 1 s before the scrape at +15
    clock.now += 4
    cache.refresh()
    assert cache.next_render() == clock.now + 5  # ready for it: max_age again
    clock.now += 0.5
    cache.body("t", generate_latest, gz=False)  # a client polling every 0.5 s ...
    clock.now += 0.5
    cache.body("t", generate_latest, gz=False)
    assert cache.next_render() == clock.now  # ... gets a rendering every min_interval


def test_collector_describes_its_families_and_the_registry_catches_collisions() -> None:
    _, _, collector = make(Clock())
    described = {m.name for m in collector.describe()}
    assert {"gecko_up", "gecko_probe_runs", "gecko_scan_lookup_duration_seconds"} <= described
    assert "gecko_slow_queries_running" not in described  # that probe is not registered
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        build_registry(collector, [collector])


class ConstCollector(Collector):
    """Stands in for the process collector: the same output at every collect."""

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("process_fake_bytes", "Fake.", value=42.0)


TRICKY_FAMILIES = [
    gauge("gecko_g", 'Help with "quotes", back\\slash\nand a newline; ünïcode.',
          labelnames=("a", "b"),
          values={('x"y', "back\\slash"): 1.5, ("new\nline", "ü"): -0.0, ("z", "a"): 1e-9}),
    gauge("gecko_empty", "No samples."),
    gauge("gecko_one", "One.", 3),
    counter("gecko_c_total", "A counter.", labelnames=("probe",), values={("p",): 2e9, ("q",): 0}),
    histogram("gecko_h_seconds", "A histogram.", [Histogram().snapshot()]),
]  # fmt: skip


@pytest.mark.parametrize("openmetrics", [False, True])
def test_metric_text_is_what_prometheus_client_writes(openmetrics: bool) -> None:
    from exporter.metrics import encode, metric_text, self_metrics, to_prometheus  # noqa: PLC0415

    h = Histogram()
    for v in (0.0004, 0.1, 7.0, 11.0):
        h.observe(v)
    labelled = Family("gecko_hl_seconds", "histogram", "By op.", ("op",), (),
                      (h.snapshot(("read",)), h.snapshot(('w"rite',))))  # fmt: skip
    metrics = [to_prometheus(f) for f in [*TRICKY_FAMILIES, labelled]]
    metrics += [m for c in self_metrics() for m in c.collect()]  # process, platform, GC
    encoder = om_generate_latest if openmetrics else generate_latest
    for metric in metrics:
        expected = encode(encoder, [metric]).removesuffix(b"# EOF\n")
        assert metric_text(metric, openmetrics) == expected, metric.name
    assert metric_text(to_prometheus(gauge("gecko:colon", "x", 1)), openmetrics) is None


@pytest.mark.parametrize(
    "accept",
    [
        "",
        "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3",
        "application/openmetrics-text",
        "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
        "text/plain;version=1.0.0;escaping=underscores",
    ],
)
def test_cached_exposition_equals_the_library_for_every_content_type(accept: str) -> None:
    from prometheus_client.exposition import choose_encoder  # noqa: PLC0415

    from exporter.metrics import ExpositionCache  # noqa: PLC0415

    clock = Clock()
    store, health, collector = make(clock)
    health.last_reached = clock.now
    store.record("scan_lookup", success=True, duration_seconds=0.01, monotonic=clock.now,
                 families=TRICKY_FAMILIES[:3], persistent=TRICKY_FAMILIES[3:])  # fmt: skip
    encoder, content_type = choose_encoder(accept)
    others = [ConstCollector()]
    cache = ExpositionCache(store, collector, others)
    cache.refresh()
    cache.body(content_type, encoder, gz=True)
    cache.refresh()  # from converted pieces
    body = gzip.decompress(cache.body(content_type, encoder, gz=True))
    assert body == encoder(build_registry(collector, others))


def test_every_probe_declares_its_families() -> None:
    from exporter.config import PROBE_NAMES  # noqa: PLC0415
    from exporter.probes.catalog import PROBE_FAMILIES  # noqa: PLC0415

    assert set(PROBE_FAMILIES) == set(PROBE_NAMES)
    for families in PROBE_FAMILIES.values():
        assert all(name.startswith("gecko_") for name, _ in families)
