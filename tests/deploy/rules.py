"""The project's alert rules as the chart sees them.

``alert_rules/thresholds.yaml`` is the single source of the thresholds; the alert rules generator
writes the concrete rule files in ``alert_rules/`` and a Helm-templated copy,
``helm/gecko-exporter/files/prometheus-rules.yaml``, whose thresholds are
``{{ .Values.prometheusRule.thresholds.<key> }}`` (the keys of thresholds.yaml).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.deploy.tools import CHART, REPO

ALERT_RULES = REPO / "alert_rules"
THRESHOLDS = ALERT_RULES / "thresholds.yaml"
RULES_TEMPLATE = CHART / "files" / "prometheus-rules.yaml"


def load_thresholds(path: Path = THRESHOLDS) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path}: a mapping"
    return {str(key): value for key, value in data.items()}


def concrete_groups(directory: Path = ALERT_RULES) -> list[dict[str, Any]]:
    """Rule groups of every Prometheus rule file in ``directory`` (unit-test files excluded)."""
    groups: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.y*ml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "groups" in data and "rule_files" not in data:
            groups.extend(data["groups"])
    return groups
