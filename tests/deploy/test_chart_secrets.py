"""A DSN given to the chart appears in a Secret and nowhere else (no ConfigMap, env, annotation,
label, monitoring object or NOTES.txt), in any encoding helm could plausibly emit."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import CHART, MONITORING_APIS, helm_template

PASSWORD = "Sentinel-Pa55word-7f3a9c"
USER = "sentinel_user_b41e"


def _dsn(target: str) -> str:
    return f"postgresql://{USER}:{PASSWORD}@{target}.sentinel.invalid:5432/gecko?sslmode=require"


def _needles(dsn: str) -> list[str]:
    raw = dsn.encode()
    return [
        PASSWORD,
        dsn,
        base64.b64encode(raw).decode(),
        base64.b64encode(PASSWORD.encode()).decode(),
        # the middle of the base64 text, whatever the alignment of the DSN inside a longer string
        *(base64.b64encode(raw[i:])[4:40].decode() for i in range(3)),
    ]


def _documents(text: str) -> list[str]:
    return [chunk for chunk in re.split(r"(?m)^---\s*$", text) if chunk.strip()]


def _is_secret(chunk: str) -> bool:
    return re.search(r"(?m)^kind:\s*Secret\s*$", chunk) is not None


def _sentinel_values(tmp_path: Path) -> tuple[list[Path], list[str]]:
    """A single-target and a multi-target values file whose every DSN is a sentinel."""
    single = {
        "database": {"url": _dsn("single"), "secretKey": "DATABASE_URL"},
        "config": {"app_schema": "public"},
        "podAnnotations": {"team": "x"},
        "serviceMonitor": {"force": True},
        "prometheusRule": {"force": True},
    }
    multi = yaml.safe_load((CHART / "ci" / "multi-target-values.yaml").read_text(encoding="utf-8"))
    dsns = [_dsn("single")]
    for target in multi["targets"]:
        target["database"] = {"url": _dsn(target["name"])}
        dsns.append(_dsn(target["name"]))
    paths = []
    for name, values in (("single", single), ("multi", multi)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(values), encoding="utf-8")
        paths.append(path)
    return paths, dsns


@pytest.mark.parametrize("scenario", [0, 1], ids=["single-target", "multi-target"])
def test_dsn_only_in_secrets(notes_chart: Path, tmp_path: Path, scenario: int) -> None:
    paths, dsns = _sentinel_values(tmp_path)
    rendered = helm_template(notes_chart, values=[paths[scenario]], api_versions=MONITORING_APIS)
    dsns = dsns[:1] if scenario == 0 else dsns[1:]
    needles = [n for dsn in dsns for n in _needles(dsn)]

    chunks = _documents(rendered.text)
    secrets = [c for c in chunks if _is_secret(c)]
    others = [c for c in chunks if not _is_secret(c)]
    assert len(secrets) == len(dsns)
    kinds = {yaml.safe_load(c)["kind"] for c in others}
    assert {"Deployment", "Service", "ServiceMonitor", "PrometheusRule", "ConfigMap"} <= kinds
    assert any("rendered-notes" in c for c in others), "NOTES.txt is checked too"

    # positive control: every sentinel DSN did reach a Secret
    found: set[str] = set()
    for chunk in secrets:
        doc: dict[str, Any] = yaml.safe_load(chunk)
        found.update(base64.b64decode(v).decode() for v in doc["data"].values())
    assert found == set(dsns)

    for chunk in others:
        for needle in needles:
            assert needle not in chunk, f"secret material {needle[:12]}… outside a Secret:\n{chunk}"
