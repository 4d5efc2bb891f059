"""Fixtures for the alerting tests: tool lookup with CI-aware skip/fail."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.promstack import alertmanager_binary, prometheus_binary

REPO_ROOT = Path(__file__).resolve().parents[2]
ALERT_RULES = REPO_ROOT / "alert_rules"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_tool(path: str | None, name: str, install_hint: str) -> str:
    """Return ``path``; a missing tool fails the test under CI=true, else skips it."""
    if path:
        return path
    reason = f"{name} not found ({install_hint})"
    if in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_tool(shutil.which("promtool"), "promtool", "apt-get install prometheus")


@pytest.fixture(scope="session")
def amtool() -> str:
    return require_tool(shutil.which("amtool"), "amtool", "apt-get install prometheus-alertmanager")


@pytest.fixture(scope="session")
def helm() -> str:
    explicit = os.environ.get("HELM")
    candidates = [explicit] if explicit else [str(REPO_ROOT / "tools" / "bin" / "helm")]
    found = next((c for c in candidates if c and Path(c).is_file()), None)
    return require_tool(
        found or (None if explicit else shutil.which("helm")), "helm", "run scripts/install-helm.sh"
    )


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return require_tool(prometheus_binary(), "prometheus", "apt-get install prometheus")


@pytest.fixture(scope="session")
def alertmanager_bin() -> str:
    return require_tool(
        alertmanager_binary(), "prometheus-alertmanager", "apt-get install prometheus-alertmanager"
    )
