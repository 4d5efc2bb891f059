"""CLI: bad input is one line and exit 2; secrets never printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DSN = "postgresql://mon:hunter2-secret@127.0.0.1:1/privacy"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GECKO_")}
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True,
                          text=True, env=base, timeout=60, check=False)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["run"], {"GECKO_LISTEN_ADDRESS": "nope"}, "listen_address"),
        (
            ["run"],
            {"GECKO_DATABASE_URL": DSN, "GECKO_PROBES__REPORT__TIMEOUT_SECONDS": "x"},
            "probes.report.timeout_seconds",
        ),
        (["run"], {}, "database_url: not set"),
        (["run", "--slow-query-threshold", "-3"], {}, "--slow-query-threshold"),
        (["run", "--log-format", "xml"], {}, "--log-format"),
        (["frobnicate"], {}, "invalid choice"),
        (["check-config", "--config", "/nonexistent.yaml"], {}, "config file"),
        (["demo", "--scans", "0"], {}, "--scans"),
    ],
)
def test_bad_input_is_one_line_exit_2(args: list[str], env: dict[str, str], needle: str) -> None:
    res = run(*args, env=env)
    assert res.returncode == 2, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert needle in lines[0]
    assert "Traceback" not in res.stderr
    assert "hunter2" not in res.stderr + res.stdout


def test_check_config_masks_secret(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pools: [{name: backend, application_name: api, size: 9}]\n")
    res = run("check-config", "--config", str(cfg), "--listen-address", "127.0.0.1:9999",
              env={"GECKO_DATABASE_URL": DSN})  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "hunter2" not in res.stdout
    assert "user=mon password=****" in res.stdout
    assert '"listen_address": "127.0.0.1:9999"' in res.stdout
    assert '"size": 9' in res.stdout


def test_version() -> None:
    res = run("--version")
    assert res.returncode == 0 and res.stdout.startswith("gecko-exporter ")


SECRET_DSN = "postgresql://mon:Hunter2-Stray-Secret@127.0.0.1:1/privacy"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        # not an abbreviation of --database-url-file: rejected, the DSN not echoed
        (["run", "--database-url", SECRET_DSN], "unrecognized arguments: --database-url"),
        (["check-config", f"--database-url={SECRET_DSN}"], "--database-url"),
        (["run", SECRET_DSN], "1 positional argument (not shown)"),
        ([SECRET_DSN], "invalid choice"),
        (["run", "--log-format", SECRET_DSN], "--log-format: invalid choice"),
        (["run", "--slow-query-threshold", SECRET_DSN], "--slow-query-threshold"),
        (["demo", "--scans", SECRET_DSN], "--scans: invalid int value"),
        (["run", f"-h{SECRET_DSN}"], "ignored explicit argument"),
        (["run", "--config"], "expected one argument"),
    ],
)
def test_argument_errors_never_echo_values(args: list[str], needle: str) -> None:
    res = run(*args)
    assert res.returncode == 2, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert needle in lines[0]
    assert "Hunter2" not in res.stderr + res.stdout
    assert "Stray" not in res.stderr + res.stdout


def test_no_abbreviations(tmp_path: Path) -> None:
    """--database-url-f would have been taken for --database-url-file."""
    secret = tmp_path / "dsn"
    secret.write_text(DSN)
    res = run("check-config", "--database-url-f", str(secret))
    assert res.returncode == 2
    assert "unrecognized arguments: --database-url-f" in res.stderr
    res = run("check-config", "--listen", "127.0.0.1:1", env={"GECKO_DATABASE_URL": DSN})
    assert res.returncode == 2
    assert "unrecognized arguments: --listen" in res.stderr
