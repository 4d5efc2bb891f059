"""A missing tool skips locally but fails under CI=true."""

from __future__ import annotations

import pytest

from tests.grafana.tools import require_executable, require_module

MISSING = "gecko-no-such-tool-7f3a"


def test_missing_executable_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_executable(MISSING, "hint")


def test_missing_executable_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true requires it"):
        require_executable(MISSING, "hint", f"/nonexistent/{MISSING}")


def test_missing_module_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        require_module(MISSING.replace("-", "_"), "hint")


def test_present_tools_are_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert require_module("json", "hint").__name__ == "json"
    assert require_executable("sh", "hint").endswith("sh")
