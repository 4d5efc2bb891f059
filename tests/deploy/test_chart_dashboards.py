"""Grafana dashboards: one ConfigMap per grafana/dashboards/*.json, through the chart's symlink."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.tools import CHART, REPO, helm_template, run

DASHBOARDS = REPO / "grafana" / "dashboards"
CONFIGMAP_LIMIT = 1024 * 1024  # bytes of data in one ConfigMap


def _dashboard_maps(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"].get("labels", {}).get("grafana_dashboard")
    ]


@pytest.fixture(scope="module")
def dashboard_files() -> list[Path]:
    files = sorted(DASHBOARDS.glob("*.json"))
    assert files, "grafana/dashboards has dashboards"
    return files


def test_chart_dashboards_is_a_symlink_to_grafana_dashboards() -> None:
    link = CHART / "dashboards"
    assert link.is_symlink()
    assert os.readlink(link) == "../../grafana/dashboards", "relative, so it works in any clone"
    assert link.resolve() == DASHBOARDS.resolve()


def test_one_configmap_per_dashboard_with_its_json(
    chart: Path, dashboard_files: list[Path]
) -> None:
    maps = _dashboard_maps(list(helm_template(chart).docs))
    assert len(maps) == len(dashboard_files)
    by_key: dict[str, str] = {}
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert len(cm["data"]) == 1
        by_key.update(cm["data"])
        assert sum(len(v.encode()) for v in cm["data"].values()) < CONFIGMAP_LIMIT
    assert set(by_key) == {f.name for f in dashboard_files}
    for path in dashboard_files:
        assert json.loads(by_key[path.name]) == json.loads(path.read_text(encoding="utf-8"))
    assert len({cm["metadata"]["name"] for cm in maps}) == len(maps)


def test_dashboards_toggle_labels_and_annotations(chart: Path) -> None:
    assert _dashboard_maps(list(helm_template(chart, sets=["dashboards.enabled=false"]).docs)) == []
    maps = _dashboard_maps(
        list(
            helm_template(
                chart,
                values=[CHART / "ci" / "existing-secret-values.yaml"],
                sets=["dashboards.labels.team=dba", "dashboards.namespace=grafana"],
            ).docs
        )
    )
    assert maps
    for cm in maps:
        assert cm["metadata"]["annotations"] == {"grafana_folder": "Databases"}
        assert cm["metadata"]["labels"]["team"] == "dba"
        assert cm["metadata"]["namespace"] == "grafana"


def test_packaged_chart_holds_the_dashboard_files(
    helm: str, tmp_path: Path, dashboard_files: list[Path]
) -> None:
    """helm follows the symlink when packaging: the .tgz is self-contained."""
    proc = run([helm, "package", str(CHART), "--destination", str(tmp_path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (archive,) = tmp_path.glob("gecko-exporter-*.tgz")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        for path in dashboard_files:
            member = tar.extractfile(f"gecko-exporter/dashboards/{path.name}")
            assert member is not None
            assert member.read() == path.read_bytes()
    assert not any(name.startswith("gecko-exporter/ci/") for name in names), ".helmignore"
