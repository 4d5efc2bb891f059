"""The PrometheusRule: promtool-valid, equal to alert_rules/, thresholds from values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.tools import CHART, MONITORING_APIS, helm_template, run


def _spec(chart: Path, values: list[Path] | None = None) -> dict[str, Any]:
    rendered = helm_template(chart, values=values or [], api_versions=MONITORING_APIS)
    (rule,) = rendered.of_kind("PrometheusRule")
    return dict(rule["spec"])


def _promtool_check(promtool: str, spec: dict[str, Any], path: Path) -> None:
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    proc = run([promtool, "check", "rules", str(path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rendered_rule_spec_passes_promtool(promtool: str, chart: Path, tmp_path: Path) -> None:
    _promtool_check(promtool, _spec(chart), tmp_path / "rules.yml")


def test_promtool_check_catches_a_broken_rule(promtool: str, chart: Path, tmp_path: Path) -> None:
    spec = _spec(chart)
    spec["groups"][0]["rules"][0]["expr"] = "sum(rate(gecko_up[5m]) by"
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    assert run([promtool, "check", "rules", str(path)]).returncode != 0


def test_rendered_rules_equal_alert_rules(
    chart: Path, alert_rule_groups: list[dict[str, Any]]
) -> None:
    """With the default thresholds, the chart's rules are the rules of alert_rules/."""
    assert _spec(chart)["groups"] == alert_rule_groups


def test_threshold_defaults_equal_thresholds_yaml(thresholds: dict[str, Any]) -> None:
    """values.yaml repeats alert_rules/thresholds.yaml, and the schema declares exactly its keys."""
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert values["prometheusRule"]["thresholds"] == thresholds
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    declared = schema["properties"]["prometheusRule"]["properties"]["thresholds"]
    assert set(declared["properties"]) == set(thresholds)
    assert declared["additionalProperties"] is False


def _distinct(value: Any, index: int) -> Any:
    """A value of the same kind as ``value`` that the default rules do not contain."""
    if isinstance(value, bool):
        raise TypeError("thresholds are numbers or durations")
    if isinstance(value, int | float):
        return 90000 + index + 0.25
    return f"{170 + index}m"


def test_every_threshold_is_overridable_from_values(
    promtool: str, chart: Path, thresholds: dict[str, Any], tmp_path: Path
) -> None:
    overrides = {key: _distinct(v, i) for i, (key, v) in enumerate(sorted(thresholds.items()))}
    values = tmp_path / "thresholds.yaml"
    values.write_text(
        yaml.safe_dump({"prometheusRule": {"thresholds": overrides}}), encoding="utf-8"
    )
    default_text = yaml.safe_dump(_spec(chart))
    spec = _spec(chart, [values])
    text = yaml.safe_dump(spec)
    for key, value in overrides.items():
        assert str(value) in text, f"threshold {key} does not reach the rules"
        assert str(value) not in default_text
    _promtool_check(promtool, spec, tmp_path / "rules.yml")
