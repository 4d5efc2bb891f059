"""The metric contract of issue #3 against what the probes emit and the daemon serves."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from exporter.config import PROBE_NAMES
from exporter.probes.registry import build_health_probes
from exporter.settings import load_config
from tests.conftest import require_tool
from tests.health.conftest import HealthDb, probe_runner
from tests.support.exporter_proc import ExporterProcess, fast_probe_env

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
HEALTH_PROBES = ("indexes", "plans", "tables", "database", "bloat", "statements", "locks",
                 "migrations")  # fmt: skip


def documented_names() -> set[str]:
    """Metric names of the issue #3 section (``x_hit_total`` / ``_read_total`` expanded)."""
    section = DOCS.read_text().split("## Health and migration signals (issue #3)", 1)[1]
    names: set[str] = set()
    for line in section.splitlines():
        if not line.startswith("| `gecko_"):
            continue
        cell = line.split("|")[1]
        found = re.findall(r"`(gecko_[a-z_]+|_[a-z_]+)`", cell)
        for name in found:
            if name.startswith("gecko_"):
                names.add(name)
            else:  # a suffix variant of the first name in the cell
                names.add(re.sub(r"_[a-z]+_total$", name, found[0]))
    return names


def test_documented_names_parse() -> None:
    names = documented_names()
    assert "gecko_table_heap_blocks_read_total" in names
    assert "gecko_table_dead_tuples" in names and "gecko_table_bloat_bytes" in names
    assert len(names) > 40


def test_every_documented_name_is_emitted_and_nothing_else(health_db: HealthDb) -> None:
    settings = load_config(
        overrides={"database_url": health_db.monitor_dsn, "bloat": {"pgstattuple": True}}
    )
    probes = build_health_probes(settings)
    assert sorted(p.name for p in probes) == sorted(HEALTH_PROBES)
    assert set(HEALTH_PROBES) <= set(PROBE_NAMES)
    emitted: set[str] = set()
    with probe_runner(health_db.monitor_dsn) as runner:
        for probe in probes:
            for _ in range(2):
                emitted |= {f.name for f in runner.collect(probe, statement_timeout=8)}
    assert emitted == documented_names()


def test_daemon_serves_health_signals(health_db: HealthDb) -> None:
    promtool = require_tool("promtool")
    env = fast_probe_env(**dict.fromkeys(HEALTH_PROBES, 1))
    env["GECKO_BLOAT__PGSTATTUPLE"] = "true"
    with ExporterProcess(health_db.monitor_dsn, env=env) as exp:
        exp.wait_ready()
        for probe in HEALTH_PROBES:
            exp.wait_value(
                "gecko_probe_success", lambda v: v == 1, timeout=30, labels={"probe": probe}
            )
        exp.wait_value(
            "gecko_query_plan_uses_index",
            lambda v: v == 1,
            timeout=10,
            labels={"query": "scan_lookup", "plan": "custom", "index": "Scan_dedupe_lookup_idx"},
        )
        text = exp.metrics_text()
        failures = [e for e in exp.events() if e.get("event") == "probe_failed"]
    assert failures == []
    assert 'gecko_index_valid{index="Scan_slug_key"} 1.0' in text
    assert "gecko_statements_available 1.0" in text
    assert "gecko_migrations_applied 2.0" in text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
