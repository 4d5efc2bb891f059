"""Every dashboard expression is valid PromQL for Prometheus itself (promtool check rules).

Variables are replaced by what Grafana sends for "All" with a 1m rate interval; each
expression becomes a dummy recording rule. Without promtool the test skips, except under
CI=true where it fails.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.grafana.dashboard_lint import QUERY_VALUES, Target, all_targets, substitute
from tests.grafana.tools import require_executable

TARGETS = all_targets()


def _promtool() -> str:
    return require_executable(
        "promtool",
        "apt-get install -y prometheus (Debian ships promtool 2.42)",
        "/usr/bin/promtool",
    )


def _rule_file(targets: list[Target], path: Path) -> Path:
    rules = [
        {
            "record": f"gecko:dashboard_expression_{i}:check",
            "expr": substitute(t.expr, QUERY_VALUES),
        }
        for i, t in enumerate(targets)
    ]
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    return path


def _check(promtool: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_every_expression_passes_promtool(tmp_path: Path) -> None:
    promtool = _promtool()
    assert len(TARGETS) > 50
    result = _check(promtool, _rule_file(TARGETS, tmp_path / "dashboards.rules.yml"))
    if result.returncode != 0:
        # name the offending expressions one by one
        bad = [
            f"{t.where}: {t.expr}"
            for i, t in enumerate(TARGETS)
            if _check(promtool, _rule_file([t], tmp_path / f"one-{i}.yml")).returncode != 0
        ]
        pytest.fail(f"promtool rejected:\n{result.stdout}{result.stderr}\n" + "\n".join(bad))
    assert f"SUCCESS: {len(TARGETS)} rules found" in result.stdout


def test_promtool_rejects_a_broken_expression(tmp_path: Path) -> None:
    """The check is real: a syntax error in one expression fails the file."""
    promtool = _promtool()
    broken = [
        *TARGETS,
        Target("d", "p", "Z", 'sum(rate(gecko_probe_runs_total{job=~"$job"}[$__rate_interval])'),
    ]
    assert _check(promtool, _rule_file(broken, tmp_path / "broken.yml")).returncode == 1
