"""Neutral, immutable metric samples produced by probes.

Probes build these plain values; only :mod:`exporter.metrics` turns them into
prometheus_client families at scrape time. Nothing here does I/O.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["gauge", "counter", "histogram"]

#: Buckets of the latency histograms. 0.1, 2 and 5 are exact bounds so the
#: alert thresholds (100 ms lookup, 2 s report, 5 s query) are exact.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of a gauge or counter family."""

    labels: tuple[str, ...]
    value: float


@dataclass(frozen=True, slots=True)
class HistogramSample:
    """A histogram snapshot: cumulative bucket counts (``+Inf`` last) and sum."""

    labels: tuple[str, ...]
    buckets: tuple[tuple[float, float], ...]
    total: float

    @property
    def count(self) -> float:
        return self.buckets[-1][1] if self.buckets else 0.0


@dataclass(frozen=True, slots=True)
class Family:
    """A metric family: name, type, help text, label names and samples."""

    name: str
    kind: Kind
    documentation: str
    labelnames: tuple[str, ...] = ()
    samples: tuple[Sample, ...] = ()
    histograms: tuple[HistogramSample, ...] = ()

    def __post_init__(self) -> None:
        for s in self.samples:
            if len(s.labels) != len(self.labelnames):
                raise ValueError(f"{self.name}: sample labels {s.labels} != {self.labelnames}")


def gauge(
    name: str,
    documentation: str,
    value: float | None = None,
    *,
    labelnames: Sequence[str] = (),
    values: Mapping[tuple[str, ...], float] | None = None,
) -> Family:
    """A gauge family from one unlabelled value or a mapping of label tuples."""
    return _simple("gauge", name, documentation, value, labelnames, values)


def counter(
    name: str,
    documentation: str,
    value: float | None = None,
    *,
    labelnames: Sequence[str] = (),
    values: Mapping[tuple[str, ...], float] | None = None,
) -> Family:
    """A counter family (name ends in ``_total``)."""
    if not name.endswith("_total"):
        raise ValueError(f"counter {name} must end in _total")
    return _simple("counter", name, documentation, value, labelnames, values)


def _simple(
    kind: Kind,
    name: str,
    documentation: str,
    value: float | None,
    labelnames: Sequence[str],
    values: Mapping[tuple[str, ...], float] | None,
) -> Family:
    samples: list[Sample] = []
    if value is not None:
        samples.append(Sample((), float(value)))
    if values:
        samples.extend(Sample(tuple(k), float(v)) for k, v in sorted(values.items()))
    return Family(name, kind, documentation, tuple(labelnames), tuple(samples))


@dataclass
class Histogram:
    """A mutable histogram accumulator owned by one probe (one thread)."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if list(self.bounds) != sorted(self.bounds):
            raise ValueError("bucket bounds must be sorted")
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        if math.isnan(value) or value < 0:
            raise ValueError(f"cannot observe {value}")
        # bucket i counts values <= bounds[i]; the last slot is +Inf
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def snapshot(self, labels: tuple[str, ...] = ()) -> HistogramSample:
        cumulative: list[tuple[float, float]] = []
        running = 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            cumulative.append((bound, float(running)))
        return HistogramSample(labels, tuple(cumulative), self.total)


def histogram(name: str, documentation: str, snapshots: Iterable[HistogramSample]) -> Family:
    snaps = tuple(snapshots)
    labelnames: tuple[str, ...] = ()
    return Family(name, "histogram", documentation, labelnames, (), snaps)


def keep_unchanged(new: Sequence[Family], old: tuple[Family, ...]) -> tuple[Family, ...]:
    """``new`` as a tuple, with each family equal to the one before it (same position, else
    same name) replaced by that previous object; ``old`` itself when nothing changed.

    Renderers convert a family to text once per object, so a value that did not change
    since the last run is not converted again (the store keeps a probe's families this
    way; probes that run every few seconds keep their answers this way too).
    """
    if len(new) == len(old):
        same = True
        out: list[Family] = []
        for fam, before in zip(new, old, strict=True):
            if fam is before or fam == before:
                out.append(before)
            else:
                same = False
                out.append(fam)
        return old if same else tuple(out)
    by_name = {f.name: f for f in old}
    return tuple(_same(fam, by_name.get(fam.name)) for fam in new)


def _same(fam: Family, before: Family | None) -> Family:
    return before if before is not None and before == fam else fam
