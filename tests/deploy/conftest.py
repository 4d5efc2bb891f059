"""Fixtures of the chart tests."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.rules import RULES_TEMPLATE, THRESHOLDS, concrete_groups, load_thresholds
from tests.deploy.tools import CHART, helm_binary, promtool_binary


@pytest.fixture(scope="session")
def helm() -> str:
    return helm_binary()


@pytest.fixture(scope="session")
def promtool() -> str:
    return promtool_binary()


@pytest.fixture(scope="session")
def chart() -> Path:
    """The chart, complete with the generated alert rules it renders."""
    assert RULES_TEMPLATE.is_file(), (
        f"{RULES_TEMPLATE.relative_to(CHART)} is missing: run `python -m alert_rules.generate`"
    )
    return CHART


@pytest.fixture(scope="session")
def thresholds() -> dict[str, Any]:
    return load_thresholds(THRESHOLDS)


@pytest.fixture(scope="session")
def alert_rule_groups() -> list[dict[str, Any]]:
    groups = concrete_groups()
    assert groups, "alert_rules/ has Prometheus rule files"
    return groups


@pytest.fixture(scope="session")
def default_values() -> dict[str, Any]:
    data = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


NOTES_PROBE = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: rendered-notes
data:
  NOTES.txt: {{ include "gecko-exporter.notes" . | toJson }}
"""


@pytest.fixture(scope="session")
def notes_chart(chart: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the chart that also renders NOTES.txt (helm template leaves it out) into a
    ConfigMap named rendered-notes, so tests can read it without a cluster."""
    copy = tmp_path_factory.mktemp("notes") / CHART.name
    shutil.copytree(chart, copy, symlinks=False)
    (copy / "templates" / "zz-rendered-notes.yaml").write_text(NOTES_PROBE, encoding="utf-8")
    return copy
