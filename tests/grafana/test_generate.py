"""The committed dashboard JSON is exactly what the generator produces."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dashboard_model

from grafana import generate
from tests.grafana.dashboard_lint import DASHBOARD_DIR, REPO

SDK_LINE = "11.6"


def test_committed_json_equals_generator_output() -> None:
    committed = {p.name for p in DASHBOARD_DIR.glob("*.json")}
    assert committed == set(generate.DASHBOARDS), "stray or missing files in grafana/dashboards"
    assert generate.stale(DASHBOARD_DIR) == [], "run: python -m grafana.generate"


def test_generator_is_deterministic() -> None:
    assert generate.rendered() == generate.rendered()


def test_check_mode_detects_a_hand_edit(tmp_path: Path) -> None:
    generate.write(tmp_path)
    assert generate.main(["--check", "--output", str(tmp_path)]) == 0
    edited = tmp_path / "gecko-overview.json"
    board = json.loads(edited.read_text(encoding="utf-8"))
    board["title"] = "edited by hand"
    edited.write_text(json.dumps(board, indent=2), encoding="utf-8")
    assert generate.main(["--check", "--output", str(tmp_path)]) == 1
    assert generate.stale(tmp_path) == ["gecko-overview.json"]


@pytest.mark.parametrize("invocation", [["-m", "grafana.generate"], ["grafana/generate.py"]])
def test_both_invocations_work(invocation: list[str], tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, *invocation, "--output", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(generate.DASHBOARDS)
    assert generate.stale(tmp_path) == []


def test_sdk_is_the_pinned_grafana_line() -> None:
    from importlib.metadata import version  # noqa: PLC0415

    assert version("grafana-foundation-sdk").split("!")[-1].startswith(SDK_LINE)


@pytest.mark.parametrize("name", sorted(generate.DASHBOARDS))
def test_json_round_trips_through_the_sdk_model(name: str) -> None:
    raw = json.loads((DASHBOARD_DIR / name).read_text(encoding="utf-8"))
    model = dashboard_model.Dashboard.from_json(raw)
    again = json.loads(json.dumps(model, cls=JSONEncoder, sort_keys=True))
    assert again == raw
    assert raw["schemaVersion"] == 41  # Grafana 11.6 schema


def test_uids_and_titles_are_unique() -> None:
    boards = [
        json.loads((DASHBOARD_DIR / n).read_text(encoding="utf-8")) for n in generate.DASHBOARDS
    ]
    assert len({b["uid"] for b in boards}) == len(boards)
    assert len({b["title"] for b in boards}) == len(boards)
