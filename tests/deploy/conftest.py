"""Fixtures of the chart tests: the chart to render, with the project's alert rules."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.rules import RulesSource, real_rules_source, sample_rules
from tests.deploy.tools import CHART, helm_binary, promtool_binary


@pytest.fixture(scope="session")
def helm() -> str:
    return helm_binary()


@pytest.fixture(scope="session")
def promtool() -> str:
    return promtool_binary()


@pytest.fixture(scope="session")
def rules(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RulesSource]:
    """The chart with the alert rules from alert_rules/ (via files/prometheus-rules.yaml).

    Until the generator's output is committed, a copy of the chart with a small sample rules
    file and matching thresholds stands in, so the templates and checks can be exercised.
    """
    real = real_rules_source()
    if real is not None:
        yield real
        return
    copy = tmp_path_factory.mktemp("chart") / CHART.name
    shutil.copytree(CHART, copy, symlinks=False)
    yield sample_rules(copy)


@pytest.fixture(scope="session")
def chart(rules: RulesSource) -> Path:
    return rules.chart


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


@pytest.fixture(scope="session")
def default_values() -> dict[str, Any]:
    data = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data
