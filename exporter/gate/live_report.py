"""Results of the live gate commands and their two renderings (pure).

A command's result is a list of :class:`Check` plus command-specific data.
``status`` is one of:

``pass``
    measured and fine;
``fail``
    measured and not fine: ``preflight`` says ``no-go``, ``verify`` fails;
``warn``
    worth reading, does not change the verdict;
``not_visible``
    could not be measured (feature off, no privilege, nothing to sample):
    reported as such, never counted as a pass.

The JSON document (``--format json``) is described in docs/migration-gate.md;
``schema_version`` changes only when a field changes meaning or disappears.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["pass", "fail", "warn", "not_visible"]
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Check:
    """One named check with a one-line summary and structured details."""

    name: str
    status: Status
    summary: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "summary": self.summary,
            "details": dict(self.details),
        }


def failures(checks: Sequence[Check]) -> list[Check]:
    return [c for c in checks if c.status == "fail"]


def to_json(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, default=str) + "\n"


_MARK = {"pass": "ok  ", "fail": "FAIL", "warn": "warn", "not_visible": "n/a "}


def render_checks(checks: Sequence[Check]) -> list[str]:
    return [f"  [{_MARK[c.status]}] {c.name}: {c.summary}" for c in checks]


def fmt_bytes(n: float) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"  # pragma: no cover - loop always returns


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min"
