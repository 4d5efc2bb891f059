"""values.schema.json: accepts the shipped values, rejects wrong types and unknown keys.

helm 3 and helm 4 word schema errors differently: only the outcome (refused or not) is checked.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.tools import CHART, HelmError, helm_template

SCHEMA = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft7Validator(SCHEMA)


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def test_schema_is_a_valid_draft7_schema() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    assert SCHEMA["additionalProperties"] is False


@pytest.mark.parametrize("values_file", sorted((CHART / "ci").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_values_are_valid(default_values: dict[str, Any], values_file: Path) -> None:
    VALIDATOR.validate(default_values)
    VALIDATOR.validate(_merged(default_values, _load(values_file)))


def test_every_default_key_is_described_by_the_schema(default_values: dict[str, Any]) -> None:
    """additionalProperties false at the top is only safe if every shipped key is declared."""
    assert set(default_values) == set(SCHEMA["properties"])


# Each case: a good override that renders, and a bad one of the same key that must be refused.
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "port-wrong-type": ({"containerPort": 9187}, {"containerPort": "9187"}),
    "bool-wrong-type": (
        {"serviceMonitor": {"force": True}},
        {"serviceMonitor": {"force": "true"}},
    ),
    "enum": ({"image": {"pullPolicy": "Always"}}, {"image": {"pullPolicy": "Sometimes"}}),
    "log-level": ({"log": {"level": "debug"}}, {"log": {"level": "verbose"}}),
    "label-value-type": ({"labels": {"tier": "db"}}, {"labels": {"tier": 1}}),
    "unknown-top-level-key": ({"podLabels": {"a": "b"}}, {"podLabel": {"a": "b"}}),
    "unknown-nested-key": (
        {"serviceMonitor": {"interval": "1m"}},
        {"serviceMonitor": {"intervall": "1m"}},
    ),
    "duration-format": (
        {"serviceMonitor": {"interval": "1m30s"}},
        {"serviceMonitor": {"interval": "90"}},
    ),
    "unknown-database-key": (
        {"database": {"url": "postgresql://u@h/d"}},
        {"database": {"password": "hunter2"}},
    ),
    "target-unknown-key": (
        {"targets": [{"name": "a", "database": {"existingSecret": "s"}}]},
        {"targets": [{"name": "a", "database": {"existingSecret": "s"}, "nmae": "b"}]},
    ),
    "target-name-not-dns": (
        {"targets": [{"name": "ab-1", "database": {"existingSecret": "s"}}]},
        {"targets": [{"name": "Ab_1", "database": {"existingSecret": "s"}}]},
    ),
    "target-without-database": (
        {"targets": [{"name": "a", "database": {"existingSecret": "s"}}]},
        {"targets": [{"name": "a"}]},
    ),
    "dsn-in-config": (
        {"config": {"app_schema": "public"}},
        {"config": {"database_url": "postgresql://u:p@h/d"}},
    ),
    "config-wrong-type": ({"config": {}}, {"config": ["pools"]}),
    "digest-format": (
        {"image": {"digest": "sha256:" + "a" * 64}},
        {"image": {"digest": "latest"}},
    ),
    "probe-unknown-key": (
        {"readinessProbe": {"periodSeconds": 5}},
        {"readinessProbe": {"httpGet": {"path": "/"}}},
    ),
    "threshold-type": (
        {"prometheusRule": {"thresholds": {"scanLookupSeconds": 0.25}}},
        {"prometheusRule": {"thresholds": {"scanLookupSeconds": "fast"}}},
    ),
    "threshold-duration": (
        {"prometheusRule": {"thresholds": {"scanLookupFor": "15m"}}},
        {"prometheusRule": {"thresholds": {"scanLookupFor": 15}}},
    ),
    "threshold-unknown-key": (
        {"prometheusRule": {"thresholds": {"scanLookupSeconds": 0.25}}},
        {"prometheusRule": {"thresholds": {"scanLookupSecs": 0.25}}},
    ),
}


def _render_with(chart: Path, tmp_path: Path, values: dict[str, Any]) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    helm_template(chart, values=[path])


@pytest.mark.parametrize("case", sorted(CASES))
def test_schema_refuses_bad_values(
    helm: str, chart: Path, tmp_path: Path, default_values: dict[str, Any], case: str
) -> None:
    del helm  # the fixture only makes sure helm is there (or skips/fails)
    good, bad = CASES[case]
    VALIDATOR.validate(_merged(default_values, good))
    _render_with(chart, tmp_path, good)
    assert not VALIDATOR.is_valid(_merged(default_values, bad))
    with pytest.raises(HelmError):
        _render_with(chart, tmp_path, bad)
