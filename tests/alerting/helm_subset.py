"""Render the generated Helm rules file in Python (the small template subset it uses).

The generator emits exactly two kinds of Helm actions: ``{{ .Values.prometheusRule.
thresholds.<key> }}`` and raw strings ``{{`...`}}`` that protect Prometheus templates.
Anything else is an error, so the generator cannot smuggle in other Helm logic unseen.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from alert_rules.thresholds import format_number

_VALUE_RE = re.compile(r"\{\{ \.Values\.prometheusRule\.thresholds\.([A-Za-z0-9]+) \}\}")


class HelmSubsetError(ValueError):
    pass


def go_format(value: object) -> str:
    """Helm's rendering of a value: strings as is, numbers as Go's ``%v`` of a float64.

    The number formatting is the generator's own; test_helm checks it against real helm.
    """
    return value if isinstance(value, str) else format_number(value)


def render(template: str, thresholds: Mapping[str, object]) -> str:
    out: list[str] = []
    pos = 0
    while True:
        start = template.find("{{", pos)
        if start < 0:
            out.append(template[pos:])
            return "".join(out)
        out.append(template[pos:start])
        if template.startswith("{{`", start):
            end = template.find("`}}", start + 3)
            if end < 0:
                raise HelmSubsetError(f"unterminated raw string at {start}")
            out.append(template[start + 3 : end])
            pos = end + 3
            continue
        match = _VALUE_RE.match(template, start)
        if match is None:
            snippet = template[start : start + 60]
            raise HelmSubsetError(f"unexpected Helm action at {start}: {snippet!r}")
        key = match.group(1)
        if key not in thresholds:
            raise HelmSubsetError(f"no value for prometheusRule.thresholds.{key}")
        out.append(go_format(thresholds[key]))
        pos = match.end()
