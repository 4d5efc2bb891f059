"""``thresholds.yaml``: reading it and checking each value's kind, sign and range.

Keys are camelCase; the suffix says the kind: ``Seconds``, ``Ratio``, ``Backends`` are
numbers, ``For`` and ``Window`` are Prometheus durations. Whether the set of keys matches
the rules is checked by :mod:`alert_rules.config`, which knows the catalogue.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

THRESHOLDS_PATH = Path(__file__).resolve().parent / "thresholds.yaml"

#: Bucket bounds of both exporter histograms (exporter/samples.py LATENCY_BUCKETS).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip

#: Thresholds compared with a histogram quantile: they must be bucket bounds so that
#: "p99 > threshold" means exactly "more than 1 % of observations above it".
HISTOGRAM_THRESHOLDS = (
    "scanLookupSeconds",
    "reportGenerationSeconds",
    "reportGenerationCriticalSeconds",
)

_DURATION_RE = re.compile(r"^(?:\d+(?:ms|[smhdwy]))+$")
_NUMBER_SUFFIXES = ("Seconds", "Ratio", "Backends")
_DURATION_SUFFIXES = ("For", "Window")


class ConfigError(ValueError):
    """thresholds.yaml (or an override) is invalid."""


def format_number(value: object) -> str:
    """A number as Go's ``%v`` prints a float64, i.e. as Helm prints a value.

    Shortest round-trip digits; exponent form when the decimal exponent is below -4
    or at least 6 (``1e+06``, ``1.5e-05``), positional otherwise (``0.1``, ``300``).
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"not a finite number: {value!r}")
    number = float(value)
    if number == 0:
        return "0"
    _sign, digits, exponent = Decimal(repr(abs(number))).normalize().as_tuple()
    if not isinstance(exponent, int):  # pragma: no cover - finite numbers have int exponents
        raise ConfigError(f"not a finite number: {value!r}")
    mantissa = "".join(map(str, digits))
    exp10 = len(mantissa) + exponent - 1
    prefix = "-" if number < 0 else ""
    if exp10 < -4 or exp10 >= 6:
        head, tail = mantissa[0], mantissa[1:]
        body = f"{head}.{tail}" if tail else head
        return f"{prefix}{body}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if exp10 >= len(mantissa) - 1:
        return prefix + mantissa + "0" * (exp10 - len(mantissa) + 1)
    if exp10 >= 0:
        return f"{prefix}{mantissa[: exp10 + 1]}.{mantissa[exp10 + 1 :]}"
    return f"{prefix}0.{'0' * (-exp10 - 1)}{mantissa}"


def check_thresholds(values: Mapping[str, Any]) -> dict[str, float | str]:
    """Each value checked against the kind its key names; numbers as int or float."""
    checked: dict[str, float | str] = {}
    for key, value in values.items():
        if not re.fullmatch(r"[a-z][A-Za-z0-9]*", key):
            raise ConfigError(f"{key}: keys are camelCase")
        if key.endswith(_DURATION_SUFFIXES):
            if not isinstance(value, str) or not _DURATION_RE.fullmatch(value):
                raise ConfigError(f"{key}: expected a Prometheus duration like 5m, got {value!r}")
            checked[key] = value
        elif key.endswith(_NUMBER_SUFFIXES):
            format_number(value)
            if value < 0:
                raise ConfigError(f"{key}: must not be negative")
            if key.endswith("Ratio") and not 0 < value <= 1:
                raise ConfigError(f"{key}: a ratio in (0, 1], got {value}")
            checked[key] = float(value) if isinstance(value, float) else int(value)
        else:
            raise ConfigError(
                f"{key}: unknown kind; end the key in one of "
                f"{', '.join(_NUMBER_SUFFIXES + _DURATION_SUFFIXES)}"
            )
    for key in HISTOGRAM_THRESHOLDS:
        if key in checked and float(checked[key]) not in LATENCY_BUCKETS:
            bounds = ", ".join(format_number(b) for b in LATENCY_BUCKETS)
            raise ConfigError(f"{key}={checked[key]} is not a histogram bucket bound ({bounds})")
    return checked


def read_thresholds(path: Path = THRESHOLDS_PATH) -> dict[str, Any]:
    """The raw mapping of ``path`` (checked by :func:`check_thresholds` later)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of thresholds")
    return {str(k): v for k, v in data.items()}
