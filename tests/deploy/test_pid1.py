"""The exporter as PID 1 of a fresh PID namespace, as in a container without an init.

The kernel gives PID 1 no default signal actions: a SIGTERM from outside (``docker stop``, the
kubelet) is dropped unless the process installed a handler. Run ``python -m exporter run``
against an unreachable database under ``unshare -fp --mount-proc``: it must start, serve
/healthz (and report not-ready on /readyz), and exit 0 on one SIGTERM.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.tools import REPO, run
from tests.support.wait import free_port, wait_until

SIGTERM_BIT = 1 << (signal.SIGTERM - 1)


def _unshare_usable() -> str | None:
    """Why PID namespaces cannot be used here, or None."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = run(["unshare", "-fp", "--mount-proc", "true"], timeout=30)
    if probe.returncode != 0:
        return f"cannot create a PID namespace here: {probe.stderr.strip()}"
    return None


def _status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def _child_of(pid: int) -> int | None:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="utf-8").split()
    return int(children[0]) if children else None


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def pid1_exporter(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int, Path]]:
    """(unshare process, exporter's pid outside the namespace, HTTP port, log file)."""
    reason = _unshare_usable()
    if reason:
        pytest.skip(reason)
    dsn_file = tmp_path / "dsn"
    # nothing listens on a freshly freed port: the database is unreachable
    dsn_file.write_text(
        f"postgresql://gecko:secret@127.0.0.1:{free_port()}/gecko?connect_timeout=1\n",
        encoding="utf-8",
    )
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GECKO_") and key != "PYTHONPATH"
    }
    env |= {
        "GECKO_DATABASE_URL_FILE": str(dsn_file),
        "GECKO_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "GECKO_LOG_FORMAT": "json",
        "PYTHONPATH": str(REPO),
    }
    log_path = tmp_path / "exporter.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            # --kill-child: the exporter dies with unshare if the test has to kill it
            [
                "unshare",
                "-fp",
                "--mount-proc",
                "--kill-child",
                sys.executable,
                "-m",
                "exporter",
                "run",
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    child: int | None = None
    try:
        child = wait_until(
            lambda: _child_of(proc.pid), timeout=10, message="the namespaced exporter process"
        )
        yield proc, child, port, log_path
    finally:
        if child is not None and proc.poll() is None:
            os.kill(child, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_exporter_as_pid1_serves_healthz_and_exits_0_on_sigterm(
    pid1_exporter: tuple[subprocess.Popen[bytes], int, int, Path],
) -> None:
    proc, child, port, log_path = pid1_exporter

    def logs() -> str:
        return log_path.read_text(encoding="utf-8", errors="replace")

    assert _status(child)["NSpid"].split()[-1] == "1", "the exporter is PID 1 in its namespace"

    base = f"http://127.0.0.1:{port}"
    wait_until(
        lambda: _http_status(f"{base}/healthz") == 200,
        timeout=30,
        message=f"/healthz 200 from the PID-1 exporter; log:\n{logs()}",
    )
    assert _http_status(f"{base}/readyz") == 503, "an unreachable database is not ready"

    # Signal exactly once, as docker stop does, but only after a SIGTERM handler is in place: a
    # PID 1 without one drops the signal, which this wait would then report.
    wait_until(
        lambda: int(_status(child)["SigCgt"], 16) & SIGTERM_BIT,
        timeout=15,
        message="a SIGTERM handler in the exporter (as PID 1 it would ignore docker stop)",
    )
    os.kill(child, signal.SIGTERM)
    try:
        code = proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the PID-1 exporter did not exit within 20 s of SIGTERM; log:\n{logs()}")
    assert code == 0, f"exit code {code}; log:\n{logs()}"
    assert "exporter_stopped" in logs()
