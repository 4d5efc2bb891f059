"""Rendering: the store's samples as Prometheus exposition bytes, off the request path.

* :class:`StoreCollector` turns the result store into metric families (a
  prometheus_client collector; ``describe()`` declares every family it can yield,
  see :mod:`exporter.probes.catalog`).
* :class:`ExpositionCache` renders the whole exposition in its own thread, just
  before each scraper's next request is due and at least every ``max_age``
  seconds, for each content type and encoding that scrapers asked for, so a
  scrape returns bytes that are ready. A probe's families are converted to
  exposition text once per recorded run, not at every rendering.

This module and :mod:`exporter.server` are the only users of prometheus_client.
Nothing here touches the database: values come from the latest probe samples.
"""

from __future__ import annotations

import gzip
import platform
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from typing import cast

import structlog
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import (
    CONTENT_TYPE_LATEST,
    CONTENT_TYPE_PLAIN_0_0_4,
    generate_latest,
)
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OM_CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporter import __version__
from exporter.db.session import Health
from exporter.probes.catalog import PROBE_FAMILIES
from exporter.samples import Family
from exporter.store import FAILURE_REASONS, ProbeState, ResultStore

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


_LEGACY_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
#: content types whose text :func:`family_text` writes itself (legacy names, no name escaping)
TEXT_0_0_4 = CONTENT_TYPE_PLAIN_0_0_4
OPENMETRICS_TYPES = frozenset(
    {OM_CONTENT_TYPE_LATEST, f"{OM_CONTENT_TYPE_LATEST}; escaping=underscores"}
)


def _num(value: float) -> str:
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


def _label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def metric_text(metric: Metric, openmetrics: bool) -> bytes | None:
    """What prometheus_client's encoder writes for ``metric``, written directly.

    prometheus_client checks and escapes names character by character (its
    OpenMetrics encoder on every sample line), which made most of the cost of a
    rendering. For plain gauges and counters with plain names
    (``[a-zA-Z_][a-zA-Z0-9_]*``), no unit, timestamps, exemplars or ``_created``
    samples, and histograms of such, the text is written here (checked byte for byte
    against prometheus_client in the tests); ``None`` for anything else.
    """
    kind = metric.type
    if kind not in ("gauge", "counter", "histogram") or metric.unit:
        return None
    if not _LEGACY_NAME.fullmatch(metric.name):
        return None
    declared = metric.name if openmetrics or kind != "counter" else f"{metric.name}_total"
    doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
    if openmetrics:
        doc = doc.replace('"', r"\"")
    out = [f"# HELP {declared} {doc}\n# TYPE {declared} {kind}\n"]
    allowed = _SAMPLE_SUFFIXES[kind]
    for sample in metric.samples:
        suffix = sample.name[len(metric.name) :]
        if (
            not sample.name.startswith(metric.name)
            or suffix not in allowed
            or sample.timestamp is not None
            or sample.exemplar is not None
            or sample.native_histogram is not None
        ):
            return None
        labels = sorted(sample.labels.items())
        if labels:
            if not all(_LEGACY_NAME.fullmatch(k) for k, _ in labels):
                return None
            text = "{" + ",".join(f'{k}="{_label_value(v)}"' for k, v in labels) + "}"
        else:
            text = ""
        out.append(f"{sample.name}{text} {_num(sample.value)}\n")
    return "".join(out).encode()


#: sample name suffixes :func:`metric_text` writes, by type
_SAMPLE_SUFFIXES: dict[str, frozenset[str]] = {
    "gauge": frozenset({""}),
    "counter": frozenset({"_total"}),
    "histogram": frozenset({"_bucket", "_count", "_sum"}),
}


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
    """Probe families with their HELP note applied, reused while the probe's tuple is the same
    (and, from ``previous``, per family while it is the same object: the store keeps an
    unchanged family as the previous object)."""

    __slots__ = ("families", "noted")

    def __init__(
        self, families: tuple[Family, ...], note: str, previous: _Noted | None = None
    ) -> None:
        self.families = families
        done: dict[int, Family] = (
            {}
            if previous is None
            else {id(f): n for f, n in zip(previous.families, previous.noted, strict=True)}
        )
        self.noted: tuple[Family, ...] = tuple(
            done.get(id(f)) or sampled(f, note) for f in families
        )


class _DropRecorder(MergeConflicts):
    """Counts drops in ``into`` and remembers them (a reused merge counts them again)."""

    def __init__(self, into: MergeConflicts) -> None:
        super().__init__()
        self.into = into
        self.drops: list[tuple[Family, str]] = []

    def dropped(self, family: Family, kept: str) -> None:
        self.drops.append((family, kept))
        self.into.dropped(family, kept)


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
        #: the last merge: its input, output and dropped families (with what they clashed with)
        self._last_merge: tuple[list[Family], list[Family], list[tuple[Family, str]]] | None = None
        #: families merged from several: name -> (the parts, the merged family)
        self._combined: dict[str, tuple[list[Family], Family]] = {}

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
                hit = _Noted(fams, note, hit)
                self._noted[key] = hit
            return hit.noted

    def _merged(self, families: list[Family]) -> list[Family]:
        """:func:`merge`, reused while the families are the same objects (drops still counted)."""
        with self._noted_lock:
            last = self._last_merge
        if (
            last is not None
            and len(last[0]) == len(families)
            and all(a is b for a, b in zip(last[0], families, strict=True))
        ):
            for fam, kept in last[2]:
                self.conflicts.dropped(fam, kept)
            return last[1]
        recorder = _DropRecorder(self.conflicts)
        merged = merge(families, recorder, _RESERVED)
        # a family merged from several is a new object: keep the previous one while its parts
        # are the same objects, so a renderer does not convert it again
        inputs = {id(f) for f in families}
        combined: dict[str, tuple[list[Family], Family]] = {}
        for i, fam in enumerate(merged):
            if id(fam) in inputs:
                continue
            parts = [
                f
                for f in families
                if f.name == fam.name and f.kind == fam.kind and f.labelnames == fam.labelnames
            ]
            before = self._combined.get(fam.name)
            if (
                before is not None
                and len(before[0]) == len(parts)
                and all(a is b for a, b in zip(before[0], parts, strict=True))
            ):
                merged[i] = before[1]
            combined[fam.name] = (parts, merged[i])
        with self._noted_lock:
            self._last_merge = (families, merged, recorder.drops)
            self._combined = combined
        return merged

    def collect(self) -> Iterator[Metric]:
        pieces = self.pieces()
        yield from pieces.head
        yield from state_families(pieces.states)
        yield pieces.connect_failures
        for fam in pieces.families:
            yield to_prometheus(fam)
        yield pieces.conflicts

    def pieces(self) -> Pieces:
        """What an exposition is made of, in output order (see :class:`Pieces`).

        The probes' families are the store's objects (with their HELP note, made once per
        run), so a renderer can reuse what it converted before for the same object.
        """
        now = self.clock()
        states = sorted(self.store.snapshot().items())
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
        families: list[Family] = []
        for name, state in states:
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
        merged = self._merged(families)
        conflicts = CounterMetricFamily(
            CONFLICTS_METRIC,
            "Probe metric families left out of a rendering because another family already "
            "exposes their name with another type or labels (each name logged once as "
            "metric_conflict).",
            value=float(self.conflicts.total),
        )
        return Pieces([up, build], states, connect_failures, merged, conflicts)


@dataclass(frozen=True)
class Pieces:
    """An exposition in output order: ``head`` (gecko_up, build info), the probes' run
    state (:func:`state_families` of ``states``), ``connect_failures``, the probes'
    merged ``families``, then ``conflicts``."""

    head: list[Metric]
    states: list[tuple[str, ProbeState]]
    connect_failures: Metric
    families: list[Family]
    conflicts: Metric


#: names the probes' families may not take (the collector's own)
_RESERVED: tuple[str, ...] = tuple(
    n for name, kind in OWN_FAMILIES for n in exposed_names(name, kind)
)


def state_families(states: Iterable[tuple[str, ProbeState]]) -> list[Metric]:
    """``gecko_probe_*`` families of these probes' run states (in :data:`STATE_FAMILIES` order)."""
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
    runs = CounterMetricFamily("gecko_probe_runs_total", "Probe runs started.", labels=["probe"])
    failures = CounterMetricFamily(
        "gecko_probe_failures_total", "Failed probe runs by reason.", labels=["probe", "reason"]
    )
    last_run = GaugeMetricFamily(
        "gecko_probe_last_run_timestamp_seconds",
        "Unix time the probe last completed a run, whatever its outcome (the exporter's "
        "start until its first run).",
        labels=["probe"],
    )
    for name, state in states:
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
    return [success, duration, last_ok, last_run, interval, runs, failures]


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

_ESCAPINGS = frozenset({om_exposition.ALLOWUTF8, om_exposition.UNDERSCORES,
                        om_exposition.DOTS, om_exposition.VALUES})  # fmt: skip
#: the OpenMetrics version prometheus_client writes (its CONTENT_TYPE_LATEST)
OM_VERSION = "1.0.0"


def _params(media_range: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for token in media_range[1:]:
        key, sep, value = token.partition("=")
        if sep:
            out.setdefault(key.strip(), value.strip())
    return out


def _version(text: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        return None


def negotiate(accept: str) -> tuple[Callable[[Collector], bytes], str]:
    """The encoder and Content-Type for an ``Accept`` header.

    prometheus_client's ``choose_encoder``, except that an OpenMetrics response names
    the version that is written (OpenMetrics 1.0.0, prometheus_client's
    ``CONTENT_TYPE_LATEST``): ``choose_encoder`` echoes the version asked for (a
    scraper asking for 2.0.0 was told 2.0.0 and got 1.0.0 text, and every version
    string made another variant to render), and a version that is not a number
    (``version=x``) raised a TypeError, a 500; such a media range is skipped here.
    """
    for media_range in accept.split(","):
        tokens = media_range.split(";")
        mime = tokens[0].strip()
        if mime not in ("application/openmetrics-text", "text/plain"):
            continue
        params = _params(tokens)
        escaping = params.get("escaping", om_exposition.UNDERSCORES)
        if escaping not in _ESCAPINGS:
            escaping = om_exposition.UNDERSCORES
        version = params.get("version", "")
        parsed = _version(version) if version else None
        current = parsed is not None and parsed >= (1, 0, 0)
        if mime == "application/openmetrics-text":
            if not version:
                return (
                    partial(om_exposition.generate_latest, escaping=om_exposition.UNDERSCORES,
                            version=OM_VERSION),
                    OM_CONTENT_TYPE_LATEST,
                )  # fmt: skip
            if current:
                return (
                    partial(om_exposition.generate_latest, escaping=escaping, version=OM_VERSION),
                    f"{OM_CONTENT_TYPE_LATEST}; escaping={escaping}",
                )
        elif current:
            return (
                partial(generate_latest, escaping=escaping),
                f"{CONTENT_TYPE_LATEST}; escaping={escaping}",
            )
    return generate_latest, CONTENT_TYPE_PLAIN_0_0_4


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
    requested_at: float = float("-inf")
    #: seconds between its last two requests (a scraper's interval)
    gap: float | None = None


class ExpositionCache:
    """The exposition, rendered in a background thread so that scrapes only read bytes.

    Scrapers are regular, so the render thread renders each requested variant
    (content type, gzip) ``lead`` seconds before its next request is expected
    (the last request plus the interval between the last two), and at least every
    ``max_age`` seconds (a scraper that is not regular), never more often than every
    ``min_interval`` seconds (process metrics are at most that old); every
    ``min_interval`` seconds for a client that polls more often than every
    ``lead + min_interval`` seconds. A scrape
    therefore sees the store as it was at most about ``lead`` seconds before (at
    most ``max_age``), and the exposition is rendered a few times per scrape
    interval rather than after every probe run (with a 1 s probe that cost more
    CPU than all the sampling). Variants not requested for ``forget_after`` seconds
    are no longer rendered; the first request of a variant renders it in the
    request thread. Each probe family is converted to text once per recorded run
    (see :meth:`_document`), not at every rendering.
    """

    def __init__(
        self,
        store: ResultStore,
        collector: StoreCollector,
        others: Iterable[Collector] = (),
        *,
        lead: float = 1.0,
        min_interval: float = 1.0,
        max_age: float = 5.0,
        forget_after: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        gzip_level: int = 1,
    ) -> None:
        self.store = store
        self.collector = collector
        self.lead = lead
        self.min_interval = min_interval
        self.max_age = max_age
        self.forget_after = forget_after
        self.clock = clock
        self.gzip_level = gzip_level
        #: the self-metrics (process, platform, GC), collected at every rendering
        self._others = list(others)
        self._lock = threading.Lock()  # one rendering at a time
        self._variants: dict[tuple[str, bool], _Variant] = {}
        #: per content type: what was converted to text before (see _Converted)
        self._converted: dict[str, _Converted] = {}
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_render = float("-inf")
        self.renders = 0

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="gecko-render", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            delay = self.next_render() - self.clock()
            if delay > 0 and self._wake.wait(delay):
                self._wake.clear()
                continue  # stopping, or a scraper to plan for
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - the next one renders again
                log.error("render_failed", error=type(exc).__name__)  # noqa: TRY400
                self._last_render = self.clock()

    def next_render(self) -> float:
        """When the render thread renders next (clock time)."""
        last = self._last_render
        due = last + self.max_age
        with self._lock:
            variants = list(self._variants.values())
        for variant in variants:
            if variant.gap is None:
                continue
            if variant.gap <= self.lead + self.min_interval:  # polled often: as often as allowed
                due = last + self.min_interval
                break
            expected = variant.requested_at + variant.gap
            while expected - self.lead <= last:  # ready for that one: the one after
                expected += variant.gap
            due = min(due, expected - self.lead)
        return max(due, last + self.min_interval)

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
        self._requested(variant, now)
        return variant.body

    def ready(self, content_type: str, gz: bool) -> bytes | None:
        """The latest rendering of this variant, or ``None`` if it has never been rendered.

        Never renders, so the HTTP event loop can answer from it without blocking.
        """
        variant = self._variants.get((content_type, gz))
        if variant is None or variant.rendered_at == float("-inf"):
            return None
        self._requested(variant, self.clock())
        return variant.body

    def _requested(self, variant: _Variant, now: float) -> None:
        """Note a request: the render thread times its renderings to the scrapers' intervals."""
        if now > variant.requested_at:
            first_gap = variant.gap is None
            variant.gap = (
                now - variant.requested_at if variant.requested_at > float("-inf") else None
            )
            if first_gap and variant.gap is not None:
                self._wake.set()  # a new scraper's interval: the render thread plans anew
        variant.requested_at = now

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
            self._last_render = now

    def _render(self, variants: dict[tuple[str, bool], _Variant], now: float) -> None:
        pieces = self.collector.pieces()
        others = [m for c in self._others for m in c.collect()]
        plain: dict[str, bytes] = {}
        for (content_type, gz), variant in variants.items():
            body = plain.get(content_type)
            if body is None:
                body = self._document(content_type, variant.encoder, pieces, others)
                plain[content_type] = body
            variant.body = gzip.compress(body, compresslevel=self.gzip_level) if gz else body
            variant.rendered_at = now
        self.renders += 1

    def _document(
        self, content_type: str, encoder: Encoder, pieces: Pieces, others: list[Metric]
    ) -> bytes:
        """The exposition from converted pieces; only what changed since the last one is encoded.

        Probe families are converted once per object (a new object per recorded run);
        each probe's ``gecko_probe_*`` sample lines once per run state.
        """
        cached = self._converted.get(content_type)
        if cached is None:
            trailer = encode(encoder, [])  # b"" or OpenMetrics' "# EOF\n"
            headers = [_strip(encode(encoder, [m]), trailer) for m in state_families([])]
            # (metric_text writes the same headers: checked in the tests)
            cached = _Converted(
                trailer,
                headers,
                fast=content_type == TEXT_0_0_4 or content_type in OPENMETRICS_TYPES,
                openmetrics=content_type in OPENMETRICS_TYPES,
            )
            self._converted[content_type] = cached
        trailer = cached.trailer
        metrics: dict[tuple[object, ...], bytes] = {}

        def convert(metric: Metric) -> bytes:
            fast = metric_text(metric, cached.openmetrics) if cached.fast else None
            return fast if fast is not None else _strip(encode(encoder, [metric]), trailer)

        def text(metric: Metric) -> bytes:
            """A metric's text, reused while its samples are the same."""
            key = _metric_key(metric)
            done = cached.metrics.get(key)
            if done is None:
                done = convert(metric)
            metrics[key] = done
            return done

        out = [text(m) for m in pieces.head]
        lines: list[list[bytes]] = [[] for _ in cached.headers]
        states: dict[str, tuple[ProbeState, list[bytes]]] = {}
        for name, state in pieces.states:
            hit = cached.states.get(name)
            if hit is None or hit[0] is not state:
                hit = (
                    state,
                    _split(
                        b"".join(convert(m) for m in state_families([(name, state)])),
                        cached.headers,
                    ),
                )
            states[name] = hit
            for i, chunk in enumerate(hit[1]):
                lines[i].append(chunk)
        cached.states = states
        for header, family_lines in zip(cached.headers, lines, strict=True):
            out.append(header)
            out.extend(family_lines)
        out.append(text(pieces.connect_failures))
        families: dict[int, tuple[Family, bytes]] = {}
        for fam in pieces.families:
            done = cached.families.get(id(fam))
            if done is None or done[0] is not fam:
                done = (fam, convert(to_prometheus(fam)))
            families[id(fam)] = done
            out.append(done[1])
        cached.families = families
        out.append(text(pieces.conflicts))
        out.extend(text(m) for m in others)
        out.append(trailer)
        cached.metrics = metrics
        return b"".join(out)


@dataclass
class _Converted:
    """What a content type's renderings reuse: text converted once per object."""

    trailer: bytes
    #: HELP and TYPE lines of each :func:`state_families` family
    headers: list[bytes]
    #: probe families written by :func:`family_text` (OpenMetrics or text 0.0.4)
    fast: bool = False
    openmetrics: bool = False
    #: probe -> (its run state, the sample lines of each state family)
    states: dict[str, tuple[ProbeState, list[bytes]]] = field(default_factory=dict)
    #: id(family) -> (family, its text)
    families: dict[int, tuple[Family, bytes]] = field(default_factory=dict)
    #: the text of the other metrics (own, self-metrics) by name, type, help and samples
    metrics: dict[tuple[object, ...], bytes] = field(default_factory=dict)


def _metric_key(metric: Metric) -> tuple[object, ...]:
    samples = tuple((s.name, tuple(s.labels.items()), s.value, s.timestamp) for s in metric.samples)
    return (metric.name, metric.type, metric.documentation, metric.unit, samples)


def _split(text: bytes, headers: list[bytes]) -> list[bytes]:
    """The sample lines of each family in ``text`` (encoded families with these headers)."""
    starts = []
    pos = 0
    for header in headers:
        pos = text.index(header, pos)
        starts.append(pos)
        pos += len(header)
    ends = [*starts[1:], len(text)]
    return [
        text[start + len(header) : end]
        for start, end, header in zip(starts, ends, headers, strict=True)
    ]


def _strip(text: bytes, trailer: bytes) -> bytes:
    return text[: -len(trailer)] if trailer and text.endswith(trailer) else text
