"""`gecko-exporter demo` without the demo extra: the hint must work from a clone too."""

from __future__ import annotations

import sys

import pytest

from exporter.cli import main


def test_missing_demo_extra_names_the_install_from_a_clone(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # as if the demo's dependencies were not installed (a None entry makes the import fail)
    monkeypatch.setitem(sys.modules, "gecko_demo.main", None)
    assert main(["demo", "--port", "18999"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    # the README's own command: from a clone, 'gecko-exporter[demo]' would be looked up on PyPI
    assert "pip install '.[demo]'" in err
    assert "Traceback" not in err
