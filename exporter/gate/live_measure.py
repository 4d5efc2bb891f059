"""Plans and latency of the app's critical queries, measured once (for the gate).

Runs the exporter's own probes (:class:`~exporter.probes.plans.PlansProbe`,
:class:`~exporter.probes.latency.ScanLookupProbe`,
:class:`~exporter.probes.latency.ReportProbe`) on a one-shot session: the same
statements, bind parameters and realistic inputs as the daemon. ``preflight
--baseline`` stores the result; ``verify`` measures again and compares.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exporter.config import Config
from exporter.config_files import read_bounded_text
from exporter.errors import ExporterError, SettingsError
from exporter.probes.base import Session
from exporter.probes.latency import ReportProbe, ScanLookupProbe
from exporter.probes.plans import PlansProbe, Shape, fingerprint, shape_text, uses_index
from exporter.probes.sampling import RecentScanSampler
from exporter.samples import Family

BASELINE_KIND = "gecko-exporter-baseline"
BASELINE_VERSION = 1
LATENCY_GAUGES = {
    "scan_lookup": "gecko_scan_lookup_last_duration_seconds",
    "report": "gecko_report_last_duration_seconds",
}


class BaselineError(ExporterError):
    """The --baseline file cannot be read or is not a baseline (bad input, exit 2)."""


@dataclass(frozen=True)
class PlanResult:
    query: str
    plan: str  # custom | generic
    index: str
    uses_index: bool
    fingerprint: str
    shape: str
    #: indexes the plan reads, and relations it reads with a sequential scan
    indexes: tuple[str, ...] = ()
    seq_scans: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "plan": self.plan,
            "index": self.index,
            "uses_index": self.uses_index,
            "fingerprint": self.fingerprint,
            "shape": self.shape,
            "indexes": list(self.indexes),
            "seq_scans": list(self.seq_scans),
        }


def plan_access(shape: Shape) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Index names and sequentially scanned relations of a plan shape (pure)."""
    indexes: dict[str, None] = {}
    seq: dict[str, None] = {}

    def walk(node: Shape) -> None:
        if "Index Name" in node:
            indexes.setdefault(str(node["Index Name"]), None)
        if node.get("Node Type") == "Seq Scan" and "Relation Name" in node:
            seq.setdefault(str(node["Relation Name"]), None)
        for child in node.get("Plans", []):
            walk(child)

    walk(shape)
    return tuple(indexes), tuple(seq)


@dataclass(frozen=True)
class LatencyResult:
    probe: str
    runs: int
    p50_seconds: float | None
    p95_seconds: float | None
    max_seconds: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "runs": self.runs,
            "p50_seconds": self.p50_seconds,
            "p95_seconds": self.p95_seconds,
            "max_seconds": self.max_seconds,
        }


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0-100); None for no values (pure)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_result(probe: str, durations: Sequence[float]) -> LatencyResult:
    return LatencyResult(
        probe=probe,
        runs=len(durations),
        p50_seconds=percentile(durations, 50),
        p95_seconds=percentile(durations, 95),
        max_seconds=max(durations) if durations else None,
    )


def _gauge_value(families: Sequence[Family], name: str) -> float | None:
    for fam in families:
        if fam.name == name and fam.samples:
            return fam.samples[0].value
    return None


def _sampler(settings: Config) -> RecentScanSampler:
    return RecentScanSampler(
        settings.app_schema,
        sample_size=settings.scan_lookup.sample_size,
        refresh_seconds=settings.scan_lookup.sample_refresh_seconds,
        configured_inputs=settings.scan_lookup.inputs,
    )


async def measure_plans(session: Session, settings: Config) -> list[PlanResult]:
    """Custom and generic plan of every critical query, reduced to its shape."""
    probe = PlansProbe(
        settings.app_schema, _sampler(settings), window_seconds=settings.scan_lookup.window_seconds
    )
    await probe.collect(session, time.time())
    results: list[PlanResult] = []
    for query in probe.queries:
        for kind in ("custom", "generic"):
            found = probe.tracker.shapes.get((query.name, kind))
            if found is None:  # pragma: no cover - collect() explains every pair or raises
                continue
            digest, shape = found
            indexes, seq_scans = plan_access(shape)
            results.append(
                PlanResult(
                    query.name,
                    kind,
                    query.index,
                    uses_index(shape, query.index),
                    digest or fingerprint(shape),
                    shape_text(shape),
                    indexes,
                    seq_scans,
                )
            )
    return results


async def measure_latency(session: Session, settings: Config, runs: int) -> list[LatencyResult]:
    """Run the two latency probes ``runs`` times each; the report probe needs a done scan."""
    sampler = _sampler(settings)
    probes: dict[str, ScanLookupProbe | ReportProbe] = {
        "scan_lookup": ScanLookupProbe(
            settings.app_schema, sampler, window_seconds=settings.scan_lookup.window_seconds
        ),
        "report": ReportProbe(settings.app_schema, sampler),
    }
    results: list[LatencyResult] = []
    for name, probe in probes.items():
        durations: list[float] = []
        for _ in range(runs):
            value = _gauge_value(await probe.collect(session, time.time()), LATENCY_GAUGES[name])
            if value is None:  # the report probe found no done scan to time
                break
            durations.append(value)
        results.append(latency_result(name, durations))
    return results


def baseline_document(
    server_version: int, plans: Sequence[PlanResult], latency: Sequence[LatencyResult]
) -> dict[str, Any]:
    return {
        "kind": BASELINE_KIND,
        "schema_version": BASELINE_VERSION,
        "captured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "server_version": server_version,
        "plans": [p.as_dict() for p in plans],
        "latency": [lat.as_dict() for lat in latency],
    }


def write_baseline(path: Path, document: Mapping[str, Any]) -> None:
    try:
        path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    except OSError as exc:
        raise BaselineError(f"--baseline {path}: cannot write ({exc.strerror})") from None


@dataclass(frozen=True)
class Baseline:
    captured_at: str
    plans: dict[tuple[str, str], PlanResult]
    latency: dict[str, LatencyResult]


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def parse_baseline(path: Path, data: Any) -> Baseline:
    """A baseline document to :class:`Baseline`; BaselineError names the problem (pure)."""
    if not isinstance(data, dict) or data.get("kind") != BASELINE_KIND:
        raise BaselineError(f"--baseline {path}: not a gecko-exporter baseline (kind)")
    if data.get("schema_version") != BASELINE_VERSION:
        raise BaselineError(
            f"--baseline {path}: schema_version {data.get('schema_version')!r} is not supported"
        )
    try:
        plans = {
            (str(p["query"]), str(p["plan"])): PlanResult(
                str(p["query"]),
                str(p["plan"]),
                str(p["index"]),
                bool(p["uses_index"]),
                str(p["fingerprint"]),
                str(p["shape"]),
                tuple(str(i) for i in p.get("indexes", ())),
                tuple(str(r) for r in p.get("seq_scans", ())),
            )
            for p in data["plans"]
        }
        latency = {
            str(lat["probe"]): LatencyResult(
                str(lat["probe"]),
                int(lat["runs"]),
                _opt_float(lat["p50_seconds"]),
                _opt_float(lat["p95_seconds"]),
                _opt_float(lat["max_seconds"]),
            )
            for lat in data["latency"]
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise BaselineError(f"--baseline {path}: malformed ({type(exc).__name__}: {exc})") from None
    return Baseline(str(data.get("captured_at", "")), plans, latency)


MAX_BASELINE_BYTES = 16 * 1024 * 1024  # a baseline is a few KiB: plans and latency of 5 queries


def read_baseline(path: Path) -> Baseline:
    try:  # bounded: /dev/zero or a FIFO must not grow the process
        text = read_bounded_text(path, MAX_BASELINE_BYTES, f"--baseline {path}")
    except SettingsError as exc:
        raise BaselineError(str(exc)) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BaselineError(f"--baseline {path}: invalid JSON at line {exc.lineno}") from None
    except ValueError:  # an integer beyond Python's digit limit
        raise BaselineError(f"--baseline {path}: invalid JSON (a number too long)") from None
    except RecursionError:
        raise BaselineError(f"--baseline {path}: nested too deeply") from None
    return parse_baseline(path, data)
