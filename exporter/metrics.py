"""Rendering: the store's samples as Prometheus exposition bytes, off the request path.

* :class:`StoreCollector` turns the result store into metric families (a
  prometheus_client collector; ``describe()`` declares every family it can yield,
  see :mod:`exporter.probes.catalog`).
* :class:`ExpositionCache` renders the whole exposition in its own thread after the
  store changes (at most once per ``min_interval``, at least every ``max_age`` so
  process metrics and ``gecko_up`` stay current), for each content type and
  encoding that scrapers asked for, so a scrape returns bytes that are ready. A
  probe's families are converted to exposition text once per recorded run, not at
  every rendering.

This module and :mod:`exporter.server` are the only users of prometheus_client.
Nothing here touches the database: values come from the latest probe samples.
"""

from __future__ import annotations

import gzip
import platform
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import cast

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
from exporter.probes.catalog import PROBE_FAMILIES
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


def sampled(family: Family, note: str) -> Family:
    """HELP says that the value is sampled, by which probe and how often."""
    if family.documentation.endswith(note):
        return family
    return replace(family, documentation=f"{family.documentation.rstrip()} {note}")


def _described(name: str, kind: str, documentation: str = "") -> Metric:
    if kind == "counter":
        return CounterMetricFamily(name, documentation)
    if kind == "histogram":
        return HistogramMetricFamily(name, documentation)
    return GaugeMetricFamily(name, documentation)


#: the collector's own families (every probe's run state and the exporter's), in output order
OWN_FAMILIES: tuple[tuple[str, str], ...] = (
    ("gecko_up", "gauge"),
    ("gecko_exporter_build_info", "gauge"),
    ("gecko_probe_success", "gauge"),
    ("gecko_probe_duration_seconds", "gauge"),
    ("gecko_probe_last_success_timestamp_seconds", "gauge"),
    ("gecko_probe_last_run_timestamp_seconds", "gauge"),
    ("gecko_probe_interval_seconds", "gauge"),
    ("gecko_probe_runs_total", "counter"),
    ("gecko_probe_failures_total", "counter"),
    ("gecko_database_connect_failures_total", "counter"),
    (CONFLICTS_METRIC, "counter"),
)


class _Noted:
    """Probe families with their HELP note applied, reused while the probe's tuple is the same."""

    __slots__ = ("families", "noted")

    def __init__(self, families: tuple[Family, ...], note: str) -> None:
        self.families = families
        self.noted = tuple(sampled(f, note) for f in families)


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
        self._noted: dict[tuple[str, bool], _Noted] = {}
        self._noted_lock = threading.Lock()

    def describe(self) -> Iterable[Metric]:
        """Every family this collector can yield: its own and those of the registered probes.

        Static (no database access): the probes' families come from
        :data:`exporter.probes.catalog.PROBE_FAMILIES`, so a registry catches a
        collision with another collector's names at registration.
        """
        seen: set[str] = set()
        for name, kind in OWN_FAMILIES:
            seen.add(name)
            yield _described(name, kind)
        for probe in sorted(self.store.snapshot()):
            for name, kind in PROBE_FAMILIES.get(probe, ()):
                if name not in seen:
                    seen.add(name)
                    yield _described(name, kind)

    def _with_note(
        self, probe: str, persistent: bool, fams: tuple[Family, ...], note: str
    ) -> tuple[Family, ...]:
        """The probe's families with the HELP note, copied once per recorded run."""
        key = (probe, persistent)
        with self._noted_lock:
            hit = self._noted.get(key)
            if hit is None or hit.families is not fams:
                hit = _Noted(fams, note)
                self._noted[key] = hit
            return hit.noted

    def collect(self) -> Iterator[Metric]:
        for part in self.parts():
            yield to_prometheus(part) if isinstance(part, Family) else part

    def parts(self) -> list[Metric | Family]:
        """The exposition in order: own families as metrics, the probes' as neutral families.

        The probes' families are the store's objects (with their HELP note, made once per
        run), so a renderer can reuse what it converted before for the same object.
        """
        now = self.clock()
        states = self.store.snapshot()
        up = GaugeMetricFamily(
            "gecko_up",
            "1 while the database answers the exporter's sampled round trips, 0 when it does not "
            "or the samples went stale.",
            value=1.0 if self.health.up(self.up_stale_seconds, now) else 0.0,
        )
        build = GaugeMetricFamily(
            "gecko_exporter_build_info",
            "gecko-exporter build information (value is always 1).",
            labels=["version", "python_version"],
        )
        build.add_metric([__version__, platform.python_version()], 1.0)

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
            families.extend(self._with_note(name, True, state.persistent, state.note))
            if state.fresh(now):
                families.extend(self._with_note(name, False, state.families, state.note))
        connect_failures = CounterMetricFamily(
            "gecko_database_connect_failures_total",
            "Failed connection attempts of the exporter to the database, by reason.",
            labels=["reason"],
        )
        for reason, count in self.health.connect_failures().items():
            connect_failures.add_metric([reason], float(count))
        own = (up, build, success, duration, last_ok, last_run, interval, runs, failures)
        out: list[Metric | Family] = [*own, connect_failures]
        reserved = [n for m in (*own, connect_failures) for n in exposed_names(m.name, m.type)]
        reserved += exposed_names(CONFLICTS_METRIC, "counter")
        out.extend(merge(families, self.conflicts, reserved))
        out.append(
            CounterMetricFamily(
                CONFLICTS_METRIC,
                "Probe metric families left out of a rendering because another family already "
                "exposes their name with another type or labels (each name logged once as "
                "metric_conflict).",
                value=float(self.conflicts.total),
            )
        )
        return out


def self_metrics() -> list[Collector]:
    """The process, platform and GC self-metrics of prometheus_client."""
    scratch = CollectorRegistry()  # their constructors register somewhere; not used after
    return [
        ProcessCollector(registry=scratch),
        PlatformCollector(registry=scratch),
        GCCollector(registry=scratch),
    ]


def build_registry(
    collector: StoreCollector, others: Iterable[Collector] | None = None
) -> CollectorRegistry:
    """A private registry: our collector plus the self-metrics (``others``).

    The collector describes its families, so a name collision with the
    self-metrics is an error at registration, not a broken scrape.
    """
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    for other in self_metrics() if others is None else others:
        registry.register(other)
    return registry


Encoder = Callable[[CollectorRegistry], bytes]


class _Metrics:
    """Just enough of a registry for prometheus_client's encoders: a fixed list of families."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics


def encode(encoder: Encoder, metrics: Iterable[Metric]) -> bytes:
    return encoder(cast(CollectorRegistry, _Metrics(metrics)))


@dataclass
class _Variant:
    """One content type (and encoding) some scraper asked for, and its latest bytes."""

    encoder: Encoder
    gzip: bool
    body: bytes = b""
    rendered_at: float = float("-inf")
    requested_at: float = 0.0


class ExpositionCache:
    """The exposition, rendered in a background thread so that scrapes only read bytes.

    Rendering starts after a store write (at most once per ``min_interval``
    seconds) and happens at least every ``max_age`` seconds (process metrics,
    ``gecko_up`` going stale). Only the variants (content type, gzip) requested in
    the last ``forget_after`` seconds are rendered; the first request of a variant
    renders it in the request thread once. Each probe family is converted to text
    once per content type and recorded run (``_chunks``), not at every rendering.
    """

    def __init__(
        self,
        store: ResultStore,
        collector: StoreCollector,
        others: Iterable[Collector] = (),
        *,
        min_interval: float = 1.0,
        max_age: float = 5.0,
        forget_after: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        gzip_level: int = 6,
    ) -> None:
        self.store = store
        self.collector = collector
        self.min_interval = min_interval
        self.max_age = max_age
        self.forget_after = forget_after
        self.clock = clock
        self.gzip_level = gzip_level
        #: the self-metrics (process, platform, GC), collected at every rendering
        self._others = list(others)
        self._lock = threading.Lock()  # one rendering at a time
        self._variants: dict[tuple[str, bool], _Variant] = {}
        #: per content type: id(family) -> (family, its text); rebuilt at every rendering
        self._chunks: dict[str, dict[int, tuple[Family, bytes]]] = {}
        self._trailer: dict[str, bytes] = {}
        self._changed = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.renders = 0
        store.on_change(self._changed.set)

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="gecko-render", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._changed.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        last = float("-inf")
        while not self._stopping.is_set():
            self._changed.wait(self.max_age)
            wait = last + self.min_interval - self.clock()
            if wait > 0 and self._stopping.wait(wait):
                return
            if self._stopping.is_set():
                return
            self._changed.clear()
            last = self.clock()
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - the next change renders again
                log.error("render_failed", error=type(exc).__name__)  # noqa: TRY400

    # -- scrapes ------------------------------------------------------------------------
    def body(self, content_type: str, encoder: Encoder, gz: bool) -> bytes:
        """The latest rendered exposition of this variant (rendered now if never asked for)."""
        now = self.clock()
        key = (content_type, gz)
        variant = self._variants.get(key)
        if variant is None or variant.rendered_at == float("-inf"):
            with self._lock:
                variant = self._variants.get(key)
                if variant is None:
                    variant = _Variant(encoder, gz)
                    self._variants[key] = variant
                if variant.rendered_at == float("-inf"):
                    self._render({key: variant}, now)
        variant.requested_at = now
        return variant.body

    # -- rendering ----------------------------------------------------------------------
    def refresh(self) -> None:
        """Render every variant requested lately (called by the render thread)."""
        now = self.clock()
        with self._lock:
            for key, variant in list(self._variants.items()):
                if now - variant.requested_at > self.forget_after:
                    del self._variants[key]
            if self._variants:
                self._render(dict(self._variants), now)

    def _render(self, variants: dict[tuple[str, bool], _Variant], now: float) -> None:
        parts = self.collector.parts()
        others = [m for c in self._others for m in c.collect()]
        plain: dict[str, bytes] = {}
        for (content_type, gz), variant in variants.items():
            body = plain.get(content_type)
            if body is None:
                body = self._document(content_type, variant.encoder, parts, others)
                plain[content_type] = body
            variant.body = gzip.compress(body, compresslevel=self.gzip_level) if gz else body
            variant.rendered_at = now
        self.renders += 1

    def _document(
        self,
        content_type: str,
        encoder: Encoder,
        parts: list[Metric | Family],
        others: list[Metric],
    ) -> bytes:
        trailer = self._trailer.get(content_type)
        if trailer is None:
            trailer = encode(encoder, [])  # b"" or OpenMetrics' "# EOF\n"
            self._trailer[content_type] = trailer
        old = self._chunks.get(content_type, {})
        chunks: dict[int, tuple[Family, bytes]] = {}
        out: list[bytes] = []
        pending: list[Metric] = []
        for part in parts:
            if not isinstance(part, Family):
                pending.append(part)
                continue
            if pending:
                out.append(_strip(encode(encoder, pending), trailer))
                pending = []
            hit = old.get(id(part))
            if hit is None or hit[0] is not part:
                hit = (part, _strip(encode(encoder, [to_prometheus(part)]), trailer))
            chunks[id(part)] = hit
            out.append(hit[1])
        out.append(encode(encoder, [*pending, *others]))  # ends with the trailer
        self._chunks[content_type] = chunks
        return b"".join(out)


def _strip(text: bytes, trailer: bytes) -> bytes:
    return text[: -len(trailer)] if trailer and text.endswith(trailer) else text
