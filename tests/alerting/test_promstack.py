"""The Prometheus/Alertmanager/webhook helpers work against the real servers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from tests.support.promstack import AlertmanagerServer, PrometheusServer, WebhookReceiver
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]


def test_prometheus_scrapes_evaluates_and_answers_queries(
    tmp_path: Path, prometheus_bin: str
) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "t", "rules": [{"record": "t:up:sum", "expr": "sum(up)"}]}]}
        )
    )
    # Prometheus scrapes itself: start once to learn the port, then point the job at it.
    with PrometheusServer(tmp_path / "prom", [], [rules]) as prom:
        prom.scrape_targets = [f"127.0.0.1:{prom.port}"]
        prom.reload()
        up = wait_until(
            lambda: prom.query('up{job="gecko-exporter"} == 1'), timeout=20, message="self-scrape"
        )
        assert up[0]["metric"]["instance"] == f"127.0.0.1:{prom.port}"
        recorded = wait_until(lambda: prom.query("t:up:sum"), timeout=20, message="recording")
        assert float(recorded[0]["value"][1]) == 1.0
        assert prom.query("vector(42)")[0]["value"][1] == "42"
        assert prom.rule_groups()[0]["name"] == "t"
        pid = prom.pid
    assert pid is not None
    assert prom.pid is None  # stopped on exit


def test_alert_flows_from_prometheus_through_alertmanager_to_webhook(
    tmp_path: Path, prometheus_bin: str, alertmanager_bin: str
) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "t",
                        "rules": [
                            {
                                "alert": "AlwaysFiring",
                                "expr": "vector(7)",
                                "labels": {"severity": "critical"},
                                "annotations": {"summary": "value {{ $value }}"},
                            }
                        ],
                    }
                ]
            }
        )
    )
    with WebhookReceiver() as hook:
        am_config = tmp_path / "am.yml"
        am_config.write_text(
            yaml.safe_dump(
                {
                    "route": {
                        "receiver": "hook",
                        "group_by": ["alertname"],
                        "group_wait": "100ms",
                        "group_interval": "1s",
                    },
                    "receivers": [
                        {"name": "hook", "webhook_configs": [{"url": hook.url_for("/hook")}]}
                    ],
                }
            )
        )
        with (
            AlertmanagerServer(tmp_path / "am", am_config) as am,
            PrometheusServer(tmp_path / "prom", [], [rules], alertmanager_url=am.url) as prom,
        ):
            assert prom.alertmanager_url == am.url
            start = time.monotonic()
            delivery = hook.wait_for(
                lambda d: d.payload.get("status") == "firing", timeout=30, message="firing"
            )
            assert delivery.path == "/hook"
            assert delivery.received_monotonic >= start
            alert = delivery.payload["alerts"][0]
            assert alert["labels"] == {"alertname": "AlwaysFiring", "severity": "critical"}
            assert alert["annotations"] == {"summary": "value 7"}
            assert am.alerts(alertname="AlwaysFiring")[0]["labels"]["severity"] == "critical"
