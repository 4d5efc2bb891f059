"""Logs: JSON lines whose tracebacks carry no local variables (they may hold a DSN or rows)."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from exporter.log import configure_logging

SECRET = "postgresql://mon:Local-Var-Secret@db/privacy"


def _fail_with_secret_in_locals() -> None:
    dsn = SECRET
    rows = [{"input": "private-row-value"}]
    raise RuntimeError(f"failed with {len(rows)} rows on {len(dsn)}-char dsn")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_tracebacks_have_no_locals(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(fmt, "debug")  # type: ignore[arg-type]
    try:
        try:
            _fail_with_secret_in_locals()
        except RuntimeError:
            structlog.get_logger("test").exception("probe_error", probe="x")
        try:
            _fail_with_secret_in_locals()
        except RuntimeError:
            logging.getLogger("psycopg").exception("driver failure")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    err = capsys.readouterr().err
    assert "_fail_with_secret_in_locals" in err  # the traceback is there...
    assert "Local-Var-Secret" not in err  # ...without its locals
    assert "private-row-value" not in err
    if fmt == "json":
        events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        assert len(events) == 2
        frames = events[0]["exception"][0]["frames"]
        assert all("locals" not in frame for frame in frames)
