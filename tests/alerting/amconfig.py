"""The shipped Alertmanager example, pointed at a local webhook receiver for tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from tests.alerting.conftest import ALERT_RULES

EXAMPLE_CONFIG = ALERT_RULES / "alertmanager" / "alertmanager.yml"
#: group timings short enough for tests (the example waits minutes)
FAST_TIMINGS = {"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"}


def load_example() -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def localized(webhook_base_url: str, timings: dict[str, str] | None = None) -> dict[str, Any]:
    """The example with routes and inhibit rules untouched, but every receiver that has
    webhooks sending to ``<webhook_base_url>/<receiver name>`` and shorter group timings."""
    config = copy.deepcopy(load_example())
    timings = FAST_TIMINGS if timings is None else timings

    def retime(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval", "repeat_interval"):
            if key in route or route is config["route"]:
                route[key] = timings[key]
        for child in route.get("routes", []):
            retime(child)

    retime(config["route"])
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"{webhook_base_url.rstrip('/')}/{receiver['name']}"
    return config


def write_localized(
    path: Path, webhook_base_url: str, timings: dict[str, str] | None = None
) -> Path:
    path.write_text(yaml.safe_dump(localized(webhook_base_url, timings), sort_keys=False))
    return path
