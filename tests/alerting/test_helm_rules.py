"""The Helm-templated rules equal the plain rules once the thresholds are substituted."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from alert_rules.config import RulesConfig, load_config
from alert_rules.render import HELM_RULES_PATH, render_plain
from alert_rules.thresholds import format_number
from tests.alerting import helm_subset
from tests.alerting.conftest import ALERT_RULES

HELM_FILE = HELM_RULES_PATH
THRESHOLDS = yaml.safe_load((ALERT_RULES / "thresholds.yaml").read_text())


def plain(config: RulesConfig | None = None) -> dict[str, Any]:
    return dict(yaml.safe_load(render_plain(config or load_config())))


def test_helm_variant_with_default_thresholds_equals_plain_rules() -> None:
    rendered = helm_subset.render(HELM_FILE.read_text(), THRESHOLDS)
    assert yaml.safe_load(rendered) == yaml.safe_load(
        (ALERT_RULES / "gecko-exporter.rules.yml").read_text()
    )


def test_helm_variant_follows_overridden_values() -> None:
    overrides: dict[str, float | str] = {
        "scanLookupSeconds": 0.25,
        "poolUtilizationRatio": 0.7,
        "slowQueryFor": "1m",
        "probeFailureWindow": "30m",
        "lockQueueBackends": 2,
    }
    rendered = helm_subset.render(HELM_FILE.read_text(), {**THRESHOLDS, **overrides})
    expected = plain(load_config().with_overrides(**overrides))
    assert yaml.safe_load(rendered) == expected
    assert yaml.safe_load(rendered) != plain()


def test_every_threshold_is_a_helm_value_and_prometheus_templates_are_escaped() -> None:
    text = HELM_FILE.read_text()
    used = set(re.findall(r"\{\{ \.Values\.prometheusRule\.thresholds\.(\w+) \}\}", text))
    assert used == set(THRESHOLDS)
    data = yaml.safe_load(text)
    for group in data["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert re.fullmatch(
                    r"\{\{ \.Values\.prometheusRule\.thresholds\.\w+For \}\}", rule["for"]
                )
                for value in rule["annotations"].values():
                    # outside raw strings only Helm value lookups remain
                    bare = re.sub(r"\{\{`.*?`\}\}", "", value)
                    assert "$value" not in bare and "$labels" not in bare, value


def test_helm_subset_renderer_rejects_other_helm_logic() -> None:
    with pytest.raises(helm_subset.HelmSubsetError):
        helm_subset.render("{{ .Release.Name }}", THRESHOLDS)
    with pytest.raises(helm_subset.HelmSubsetError):
        helm_subset.render("{{ .Values.prometheusRule.thresholds.nope }}", THRESHOLDS)


# -- with the real helm binary ----------------------------------------------------------


def _mini_chart(root: Path, values: dict[str, Any]) -> Path:
    chart = root / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "files").mkdir()
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: rules-probe\nversion: 0.1.0\n")
    (chart / "files" / "prometheus-rules.yaml").write_text(HELM_FILE.read_text())
    (chart / "templates" / "rules.yaml").write_text(
        '{{ tpl (.Files.Get "files/prometheus-rules.yaml") . }}\n'
    )
    (chart / "templates" / "numbers.yaml").write_text(
        "{{- if .Values.numbers }}\n---\nnumbers:\n"
        "{{- range .Values.numbers }}\n  - {{ . | quote }}\n{{- end }}\n{{- end }}\n"
    )
    (chart / "values.yaml").write_text(yaml.safe_dump(values))
    return chart


def _helm_template(helm: str, chart: Path, *args: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [helm, "template", "probe", str(chart), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def test_helm_tpl_renders_the_plain_rules(helm: str, tmp_path: Path) -> None:
    chart = _mini_chart(tmp_path, {"prometheusRule": {"thresholds": THRESHOLDS}})
    docs = _helm_template(helm, chart)
    assert docs == [plain()]


def test_helm_set_overrides_a_threshold(helm: str, tmp_path: Path) -> None:
    chart = _mini_chart(tmp_path, {"prometheusRule": {"thresholds": THRESHOLDS}})
    docs = _helm_template(
        helm,
        chart,
        "--set",
        "prometheusRule.thresholds.reportGenerationSeconds=1",
        "--set-string",
        "prometheusRule.thresholds.databaseDownFor=3m",
    )
    expected = load_config().with_overrides(reportGenerationSeconds=1, databaseDownFor="3m")
    assert docs == [plain(expected)]


def test_number_formatting_matches_helm(helm: str, tmp_path: Path) -> None:
    numbers = [0.1, 2, 2.0, 5, 0.95, 0.8, 300, 0.0025, 1e-05, 0.0001, 123456, 1000000, 2.5e6, 0]
    chart = _mini_chart(
        tmp_path, {"prometheusRule": {"thresholds": THRESHOLDS}, "numbers": numbers}
    )
    docs = _helm_template(helm, chart)
    printed = next(d for d in docs if "numbers" in d)["numbers"]
    assert printed == [format_number(n) for n in numbers]
