"""The project's alert rules as the chart sees them.

``alert_rules/thresholds.yaml`` is the single source of the thresholds; the alert rules generator
writes the concrete rule files in ``alert_rules/`` and a Helm-templated copy,
``helm/gecko-exporter/files/prometheus-rules.yaml``, whose thresholds are
``{{ .Values.prometheusRule.thresholds.<camelCaseKey> }}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.tools import CHART, REPO

ALERT_RULES = REPO / "alert_rules"
THRESHOLDS = ALERT_RULES / "thresholds.yaml"
RULES_TEMPLATE = Path("files") / "prometheus-rules.yaml"


@dataclass(frozen=True)
class RulesSource:
    chart: Path
    #: thresholds.yaml, keyed as in values.yaml (camelCase)
    thresholds: dict[str, Any]
    #: the concrete rule groups of alert_rules/ (default thresholds)
    groups: list[dict[str, Any]]
    #: True while the generator's files are not there and a sample stands in
    sample: bool


def camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def load_thresholds(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path}: a mapping"
    return {camel(str(key)): value for key, value in data.items()}


def concrete_groups(directory: Path) -> list[dict[str, Any]]:
    """Rule groups of every Prometheus rule file in ``directory`` (not the unit tests)."""
    groups: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.y*ml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "groups" in data and "rule_files" not in data:
            groups.extend(data["groups"])
    return groups


def real_rules_source() -> RulesSource | None:
    if not ((CHART / RULES_TEMPLATE).is_file() and THRESHOLDS.is_file()):
        return None
    return RulesSource(
        chart=CHART,
        thresholds=load_thresholds(THRESHOLDS),
        groups=concrete_groups(ALERT_RULES),
        sample=False,
    )


SAMPLE_TEMPLATE = """\
groups:
  - name: gecko-sample
    rules:
      - alert: GeckoExporterDown
        expr: up{job="gecko-exporter"} == 0
        for: {{ .Values.prometheusRule.thresholds.exporterDownFor }}
        labels:
          severity: critical
        annotations:
          summary: "gecko_up is {{ `{{ $value }}` }} on {{ `{{ $labels.instance }}` }}"
      - alert: GeckoScanLookupSlow
        expr: >-
          histogram_quantile(0.99,
          sum by (le) (rate(gecko_scan_lookup_duration_seconds_bucket[5m])))
          > {{ .Values.prometheusRule.thresholds.scanLookupSeconds }}
        for: {{ .Values.prometheusRule.thresholds.scanLookupFor }}
        labels:
          severity: warning
        annotations:
          summary: "p99 scan lookup {{ `{{ $value | humanizeDuration }}` }}"
"""
_VALUE_REF = re.compile(r"\{\{ \.Values\.prometheusRule\.thresholds\.(\w+) \}\}")


def sample_rules(chart_copy: Path) -> RulesSource:
    """Put a sample rules template into a copy of the chart; the concrete rules expected from
    it are derived with the chart's default thresholds."""
    (chart_copy / RULES_TEMPLATE).parent.mkdir(exist_ok=True)
    (chart_copy / RULES_TEMPLATE).write_text(SAMPLE_TEMPLATE, encoding="utf-8")
    values = yaml.safe_load((chart_copy / "values.yaml").read_text(encoding="utf-8"))
    defaults = values["prometheusRule"]["thresholds"]
    used = set(_VALUE_REF.findall(SAMPLE_TEMPLATE))
    concrete = re.sub(r"\{\{ `(.*?)` \}\}", r"\1", SAMPLE_TEMPLATE)
    concrete = _VALUE_REF.sub(lambda m: str(defaults[m.group(1)]), concrete)
    return RulesSource(
        chart=chart_copy,
        thresholds={key: defaults[key] for key in sorted(used)},
        groups=yaml.safe_load(concrete)["groups"],
        sample=True,
    )
