"""grafana/provisioning/ makes a Grafana server load the dashboards and a Prometheus source."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.grafana.dashboard_lint import DASHBOARD_DIR, PROVISIONING_DIR, load_dashboards


def _yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _expand(value: str, env: dict[str, str]) -> str:
    """Grafana's $VAR / ${VAR} expansion in provisioning files (unset -> empty)."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)


def test_only_provisioning_kinds_grafana_knows() -> None:
    kinds = {p.name for p in PROVISIONING_DIR.iterdir() if p.is_dir()}
    assert kinds <= {"datasources", "dashboards", "plugins", "alerting", "notifiers"}
    assert {"datasources", "dashboards"} <= kinds


def test_prometheus_datasource_is_the_default() -> None:
    files = sorted((PROVISIONING_DIR / "datasources").glob("*.yaml"))
    assert files
    sources = [s for f in files for s in _yaml(f)["datasources"]]
    assert all(_yaml(f)["apiVersion"] == 1 for f in files)
    prometheus = [s for s in sources if s["type"] == "prometheus"]
    assert len(prometheus) == 1
    source = prometheus[0]
    assert source["isDefault"] is True  # the ${datasource} variable starts on it
    assert source["access"] == "proxy"
    assert source["url"].startswith("http")
    assert source["uid"]


def test_dashboard_provider_points_at_the_committed_json() -> None:
    config = _yaml(PROVISIONING_DIR / "dashboards" / "gecko.yaml")
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["folder"]
    assert provider["allowUiUpdates"] is False
    path = _expand(provider["options"]["path"], {"GF_PATHS_PROVISIONING": str(PROVISIONING_DIR)})
    assert Path(path).resolve() == DASHBOARD_DIR.resolve()
    assert sorted(p.name for p in Path(path).glob("*.json")) == sorted(load_dashboards())


def test_dashboards_use_the_datasource_variable_of_the_provisioned_type() -> None:
    for name, board in load_dashboards().items():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["query"] == "prometheus", name
        text = json.dumps(board)
        assert '"uid": "prometheus"' not in text, f"{name} hard-codes the provisioned uid"
