"""The example Alertmanager configuration: valid, routes by severity, inhibits correctly."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.alerting.amconfig import EXAMPLE_CONFIG, load_example, write_localized
from tests.alerting.conftest import ALERT_RULES
from tests.support.promstack import AlertmanagerServer, WebhookReceiver
from tests.support.wait import wait_until


def amtool_run(amtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([amtool, *args], capture_output=True, text=True, timeout=60, check=False)


def routes_to(amtool: str, config: Path, labels: dict[str, str], receiver: str) -> bool:
    proc = amtool_run(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={config}",
        f"--verify.receivers={receiver}",
        *(f"{k}={v}" for k, v in labels.items()),
    )
    return proc.returncode == 0


def test_amtool_check_config(amtool: str) -> None:
    proc = amtool_run(amtool, "check-config", str(EXAMPLE_CONFIG))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_amtool_check_config_rejects_a_broken_copy(amtool: str, tmp_path: Path) -> None:
    broken = load_example()
    broken["route"]["routes"][0]["receiver"] = "no-such-receiver"
    path = tmp_path / "am.yml"
    path.write_text(yaml.safe_dump(broken))
    assert amtool_run(amtool, "check-config", str(path)).returncode != 0


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        ({"alertname": "GeckoDatabaseDown", "severity": "critical"}, "pager"),
        ({"alertname": "GeckoSlowQuery", "severity": "critical", "instance": "db1:8187"}, "pager"),
        ({"alertname": "GeckoSlowQuery", "severity": "warning", "instance": "db1:8187"}, "tickets"),
        ({"alertname": "GeckoProbeFailing", "severity": "warning"}, "tickets"),
        ({"alertname": "SomethingInformational", "severity": "info"}, "null"),
        ({"alertname": "NoSeverityLabel"}, "tickets"),
    ],
)
def test_amtool_routes(amtool: str, labels: dict[str, str], receiver: str) -> None:
    assert routes_to(amtool, EXAMPLE_CONFIG, labels, receiver)
    others = {"pager", "tickets", "null"} - {receiver}
    assert not any(routes_to(amtool, EXAMPLE_CONFIG, labels, other) for other in others)


def test_every_rule_tier_routes_by_its_severity(amtool: str) -> None:
    rules = yaml.safe_load((ALERT_RULES / "gecko-exporter.rules.yml").read_text())
    expected = {"critical": "pager", "warning": "tickets"}
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            labels = {"alertname": rule["alert"], **rule["labels"]}
            assert routes_to(amtool, EXAMPLE_CONFIG, labels, expected[labels["severity"]]), labels


def _alert(name: str, severity: str, instance: str, **extra: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "labels": {
            "alertname": name,
            "severity": severity,
            "job": "gecko-exporter",
            "instance": instance,
            **extra,
        },
        "annotations": {"summary": f"{name} {severity}"},
        "startsAt": (now - timedelta(seconds=5)).isoformat(),
        "endsAt": (now + timedelta(minutes=5)).isoformat(),
        "generatorURL": "http://prometheus.example.invalid/graph",
    }


@pytest.mark.e2e
def test_example_config_pages_criticals_tickets_warnings_and_inhibits(
    tmp_path: Path, alertmanager_bin: str
) -> None:
    with WebhookReceiver() as hook:
        config = write_localized(tmp_path / "am.yml", hook.url)
        with AlertmanagerServer(tmp_path / "am", config) as am:
            # Criticals first, as Prometheus sends them while a warning's `for` is still
            # running: Alertmanager's inhibitor picks alerts up asynchronously, so a warning
            # posted in the same batch could be flushed (group_wait 1s) before its critical
            # is known to the inhibitor.
            am.post_alerts(
                [
                    _alert("GeckoConnectionPoolSaturated", "critical", "db1:8187", pool="backend"),
                    _alert("GeckoDatabaseDown", "critical", "db3:8187"),
                ]
            )
            wait_until(lambda: len(am.alerts()) >= 2, timeout=15, message="criticals received")
            am.post_alerts(
                [
                    # critical + warning of one alert on one instance: the warning is inhibited
                    _alert("GeckoConnectionPoolSaturated", "warning", "db1:8187", pool="backend"),
                    # the same warning elsewhere is not
                    _alert("GeckoConnectionPoolSaturated", "warning", "db2:8187", pool="backend"),
                    # database down silences the probe noise on that instance only
                    _alert("GeckoProbeFailing", "warning", "db3:8187", probe="report"),
                    _alert("GeckoProbeFailing", "warning", "db2:8187", probe="report"),
                ]
            )

            def inhibited() -> dict[tuple[str, str, str], bool] | None:
                alerts = am.alerts()
                if len(alerts) < 6:
                    return None
                return {
                    (
                        a["labels"]["alertname"],
                        a["labels"]["severity"],
                        a["labels"]["instance"],
                    ): bool(a["status"]["inhibitedBy"])
                    for a in alerts
                }

            expected = {
                ("GeckoConnectionPoolSaturated", "critical", "db1:8187"): False,
                ("GeckoConnectionPoolSaturated", "warning", "db1:8187"): True,
                ("GeckoConnectionPoolSaturated", "warning", "db2:8187"): False,
                ("GeckoDatabaseDown", "critical", "db3:8187"): False,
                ("GeckoProbeFailing", "warning", "db3:8187"): True,
                ("GeckoProbeFailing", "warning", "db2:8187"): False,
            }
            seen: list[dict[tuple[str, str, str], bool] | None] = [None]

            def settled() -> bool:
                # Alertmanager marks inhibitions asynchronously after the alerts arrive:
                # poll until the state is the expected one (or report the last one seen)
                seen[0] = inhibited()
                return seen[0] == expected

            try:
                wait_until(settled, timeout=15, message="inhibition state in alertmanager")
            except TimeoutError:
                pass
            assert seen[0] == expected

            def delivered() -> set[tuple[str, str, str, str]] | None:
                got = {
                    (
                        d.path,
                        a["labels"]["alertname"],
                        a["labels"]["severity"],
                        a["labels"]["instance"],
                    )
                    for d in hook.deliveries
                    for a in d.payload["alerts"]
                }
                return got if len(got) >= 4 else None

            got = wait_until(delivered, timeout=20, message="webhook deliveries")
            assert got == {
                ("/pager", "GeckoConnectionPoolSaturated", "critical", "db1:8187"),
                ("/tickets", "GeckoConnectionPoolSaturated", "warning", "db2:8187"),
                ("/pager", "GeckoDatabaseDown", "critical", "db3:8187"),
                ("/tickets", "GeckoProbeFailing", "warning", "db2:8187"),
            }
            for delivery in hook.deliveries:
                assert delivery.headers.get("User-Agent", "").startswith("Alertmanager/")
                assert delivery.payload["status"] == "firing"
                assert delivery.payload["receiver"] == delivery.path.strip("/")
