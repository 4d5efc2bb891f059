"""Helm templating of rule text: thresholds as chart values, Prometheus templates escaped.

The chart renders the generated file with ``tpl``, so every ``{{ … }}`` meant for
Prometheus must reach it verbatim (``{{`{{ $value }}`}}``) while each threshold becomes
``{{ .Values.prometheusRule.thresholds.<key> }}``.
"""

from __future__ import annotations

import re

from alert_rules.tokens import substitute

#: Helm values path of the thresholds in the chart.
HELM_VALUES_PATH = ".Values.prometheusRule.thresholds"

_ACTION_RE = re.compile(r"\{\{.*?\}\}", re.DOTALL)


def helm_expression(key: str) -> str:
    return f"{{{{ {HELM_VALUES_PATH}.{key} }}}}"


def helm_string(text: str) -> str:
    """Escape Prometheus template actions for Helm, then turn tokens into Helm values.

    A token inside a Prometheus action (``{{ <token> | humanizeDuration }}``) closes the
    raw string, inserts the Helm expression and reopens it.
    """
    out: list[str] = []
    pos = 0
    for match in _ACTION_RE.finditer(text):
        out.append(substitute(text[pos : match.start()], helm_expression))
        action = match.group(0)
        if "`" in action:
            raise ValueError(f"backquote in a Prometheus template action: {action!r}")
        inner = substitute(action, lambda key: f"`}}}}{helm_expression(key)}{{{{`")
        out.append(f"{{{{`{inner}`}}}}")
        pos = match.end()
    out.append(substitute(text[pos:], helm_expression))
    return "".join(out)
