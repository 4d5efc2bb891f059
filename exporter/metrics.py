"""Rendering: a custom collector built fresh on every scrape from the store.

This module and :mod:`exporter.server` are the only users of prometheus_client.
Nothing here touches the database: values come from the latest probe samples.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import structlog
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporter import __version__
from exporter.db.session import Health
from exporter.samples import Family
from exporter.store import FAILURE_REASONS, ResultStore

log = structlog.get_logger("exporter.metrics")

CONFLICTS_METRIC = "gecko_exporter_metric_conflicts_total"


def _le(bound: float) -> str:
    """Bucket bound formatted as prometheus_client does (``+Inf``, ``0.1``, ``2.0``)."""
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


def to_prometheus(family: Family) -> Metric:
    """One neutral family as a prometheus_client metric family."""
    labels = list(family.labelnames)
    if family.kind == "histogram":
        hist = HistogramMetricFamily(family.name, family.documentation, labels=labels)
        for h in family.histograms:
            hist.add_metric(
                list(h.labels),
                buckets=[(_le(le), count) for le, count in h.buckets],
                sum_value=h.total,
            )
        return hist
    metric: GaugeMetricFamily | CounterMetricFamily
    if family.kind == "counter":
        metric = CounterMetricFamily(family.name, family.documentation, labels=labels)
    else:
        metric = GaugeMetricFamily(family.name, family.documentation, labels=labels)
    for s in family.samples:
        metric.add_metric(list(s.labels), s.value)
    return metric


def exposed_names(name: str, kind: str) -> tuple[str, ...]:
    """Every sample name a family of this name and type puts in the exposition."""
    if kind == "counter":
        base = name.removesuffix("_total")
        return (base, f"{base}_total", f"{base}_created")
    if kind == "histogram":
        return (name, f"{name}_bucket", f"{name}_count", f"{name}_sum", f"{name}_created")
    return (name,)


class MergeConflicts:
    """Families :func:`merge` dropped because another one already claimed their names.

    Counted on every rendering that drops one; logged once per family name.
    Thread-safe (scrapes render concurrently).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def dropped(self, family: Family, kept: str) -> None:
        with self._lock:
            first = family.name not in self._counts
            self._counts[family.name] = self._counts.get(family.name, 0) + 1
        if first:
            log.error(
                "metric_conflict",
                family=family.name,
                kind=family.kind,
                labelnames=list(family.labelnames),
                conflicts_with=kept,
            )

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())


def merge(
    families: Iterable[Family],
    conflicts: MergeConflicts | None = None,
    reserved: Iterable[str] = (),
) -> list[Family]:
    """Merge families of the same name (a name must be exposed once).

    A family whose type or label names differ from the first one of its name, or
    whose sample names collide with another family's (or with ``reserved``
    names), is dropped and reported to ``conflicts``: one probe's mistake never
    turns the whole scrape into an error.
    """
    merged: dict[str, Family] = {}
    owner: dict[str, str] = dict.fromkeys(reserved, "exporter")
    for fam in families:
        prev = merged.get(fam.name)
        if prev is not None and prev.kind == fam.kind and prev.labelnames == fam.labelnames:
            merged[fam.name] = Family(
                fam.name,
                fam.kind,
                fam.documentation,
                fam.labelnames,
                prev.samples + fam.samples,
                prev.histograms + fam.histograms,
            )
            continue
        names = exposed_names(fam.name, fam.kind)
        clash = next((owner[n] for n in names if n in owner), None)
        if prev is not None or clash is not None:
            if conflicts is not None:
                conflicts.dropped(fam, clash or fam.name)
            continue
        merged[fam.name] = fam
        owner.update(dict.fromkeys(names, fam.name))
    return list(merged.values())


class StoreCollector(Collector):
    """Yields the exporter's metrics from the result store (no I/O)."""

    def __init__(
        self,
        store: ResultStore,
        health: Health,
        *,
        up_stale_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.health = health
        self.up_stale_seconds = up_stale_seconds
        self.clock = clock
        self.conflicts = MergeConflicts()

    def describe(self) -> Iterable[Metric]:
        return []  # names are dynamic; no database access at registration

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        states = self.store.snapshot()
        up = GaugeMetricFamily(
            "gecko_up",
            "1 while the database answers the exporter's sampled round trips, 0 when it does not "
            "or the samples went stale.",
            value=1.0 if self.health.up(self.up_stale_seconds, now) else 0.0,
        )
        yield up
        build = GaugeMetricFamily(
            "gecko_exporter_build_info",
            "gecko-exporter build information (value is always 1).",
            labels=["version", "python_version"],
        )
        build.add_metric([__version__, platform.python_version()], 1.0)
        yield build

        success = GaugeMetricFamily(
            "gecko_probe_success", "1 if the probe's last run succeeded.", labels=["probe"]
        )
        duration = GaugeMetricFamily(
            "gecko_probe_duration_seconds", "Wall time of the probe's last run.", labels=["probe"]
        )
        last_ok = GaugeMetricFamily(
            "gecko_probe_last_success_timestamp_seconds",
            "Unix time of the probe's last successful run.",
            labels=["probe"],
        )
        interval = GaugeMetricFamily(
            "gecko_probe_interval_seconds", "Configured interval of the probe.", labels=["probe"]
        )
        runs = CounterMetricFamily(
            "gecko_probe_runs_total", "Probe runs started.", labels=["probe"]
        )
        failures = CounterMetricFamily(
            "gecko_probe_failures_total", "Failed probe runs by reason.", labels=["probe", "reason"]
        )
        last_run = GaugeMetricFamily(
            "gecko_probe_last_run_timestamp_seconds",
            "Unix time the probe last completed a run, whatever its outcome (the exporter's "
            "start until its first run).",
            labels=["probe"],
        )
        families: list[Family] = []
        for name, state in sorted(states.items()):
            if state.last_run_wall is not None:
                last_run.add_metric([name], state.last_run_wall)
            interval.add_metric([name], state.interval_seconds)
            runs.add_metric([name], float(state.runs))
            counts = dict(state.failures)
            for reason in FAILURE_REASONS:
                failures.add_metric([name, reason], float(counts.get(reason, 0)))
            if state.last_success is not None:
                success.add_metric([name], 1.0 if state.last_success else 0.0)
            if state.last_duration_seconds is not None:
                duration.add_metric([name], state.last_duration_seconds)
            if state.last_success_wall is not None:
                last_ok.add_metric([name], state.last_success_wall)
            families.extend(state.persistent)
            if state.fresh(now):
                families.extend(state.families)
        yield from (success, duration, last_ok, last_run, interval, runs, failures)
        connect_failures = CounterMetricFamily(
            "gecko_database_connect_failures_total",
            "Failed connection attempts of the exporter to the database, by reason.",
            labels=["reason"],
        )
        for reason, count in self.health.connect_failures().items():
            connect_failures.add_metric([reason], float(count))
        yield connect_failures
        own = (up, build, success, duration, last_ok, last_run, interval, runs, failures)
        reserved = [n for m in (*own, connect_failures) for n in exposed_names(m.name, m.type)]
        reserved += exposed_names(CONFLICTS_METRIC, "counter")
        for fam in merge(families, self.conflicts, reserved):
            yield to_prometheus(fam)
        yield CounterMetricFamily(
            CONFLICTS_METRIC,
            "Probe metric families left out of a rendering because another family already "
            "exposes their name with another type or labels (each name logged once as "
            "metric_conflict).",
            value=float(self.conflicts.total),
        )


def build_registry(collector: StoreCollector) -> CollectorRegistry:
    """A private registry: our collector plus process/platform/GC self-metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class ExpositionCache:
    """Reuses the rendered exposition while nothing it depends on has changed.

    Concurrent or repeated scrapes between two probe runs get the same bytes
    instead of re-rendering every sample; the output is at most ``max_age``
    seconds old (process metrics such as RSS and CPU stay current).
    """

    def __init__(
        self,
        store: ResultStore,
        collector: StoreCollector,
        *,
        max_age: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.collector = collector
        self.max_age = max_age
        self.clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple[int, bool], float, bytes]] = {}

    def render(self, kind: str, produce: Callable[[], bytes]) -> bytes:
        now = self.clock()
        key = (
            self.store.version,
            self.collector.health.up(self.collector.up_stale_seconds, now),
        )
        with self._lock:
            hit = self._cache.get(kind)
            if hit is not None and hit[0] == key and now - hit[1] < self.max_age:
                return hit[2]
            body = produce()
            self._cache[kind] = (key, now, body)
            return body
