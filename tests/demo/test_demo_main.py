"""``gecko-exporter demo`` end to end: it serves metrics, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from gecko_demo import main
from gecko_demo.cluster import ServerBinaries
from tests.support.wait import free_port, wait_until

DSN_WITH_SECRET = re.compile(r"postgres(?:ql)?://[^\s:/@]+:[^\s@]+@")
BANNER_DSN = re.compile(r"exporter\s+postgresql://gecko_monitor@127\.0\.0\.1:(\d+)/privacy")


class DemoRun:
    """``python -m exporter demo`` with its output in files."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.port = free_port()
        self.out = tmp_path / "demo.out"
        self.err = tmp_path / "demo.err"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GECKO_")}
        env["PYTHONUNBUFFERED"] = "1"
        command = [sys.executable, "-m", "exporter", "demo", "--port", str(self.port), *args]
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        self.server_pid: int | None = None

    def text(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def find_server(self, db_port: int) -> int:
        """The postmaster: the process listening on the database port."""
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == db_port and conn.status == psutil.CONN_LISTEN:
                self.server_pid = int(conn.pid)
                return self.server_pid
        raise AssertionError(f"nothing listens on {db_port}")

    def get(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()

    def cleanup(self) -> None:
        """After a failed test: never leave the demo or its server running."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        if self.server_pid is not None and psutil.pid_exists(self.server_pid):
            psutil.Process(self.server_pid).send_signal(signal.SIGQUIT)


@pytest.fixture
def demo_run(tmp_path: Path) -> Iterator[list[DemoRun]]:
    runs: list[DemoRun] = []
    try:
        yield runs
    finally:
        for run in runs:
            run.cleanup()


def _metrics_with(run: DemoRun, *needles: str) -> str | None:
    text = run.get("/metrics")[1]
    return text if all(n in text for n in needles) else None


@pytest.mark.integration
@pytest.mark.slow
def test_demo_serves_metrics_and_stops_cleanly_on_sigterm(
    tmp_path: Path, demo_run: list[DemoRun]
) -> None:
    run = DemoRun(tmp_path, "--scans", "300", "--log-format", "json")
    demo_run.append(run)
    banner: str = wait_until(
        lambda: t if "Press Ctrl-C to stop." in (t := run.out.read_text()) else None,
        timeout=120,
        message="the demo banner",
    )
    assert f"http://127.0.0.1:{run.port}/metrics" in banner
    assert f"http://127.0.0.1:{run.port}/healthz" in banner
    assert f"http://127.0.0.1:{run.port}/readyz" in banner
    match = BANNER_DSN.search(banner)
    assert match, banner
    db_port = int(match.group(1))
    server_pid = run.find_server(db_port)
    basedir = Path(psutil.Process(server_pid).cmdline()[-1]).parent

    metrics = wait_until(
        lambda: _metrics_with(
            run,
            "gecko_up 1.0",
            'gecko_connection_pool_connections{pool="backend"',
            'gecko_connection_pool_connections{pool="worker"',
            "gecko_scan_lookup_duration_seconds_count",
            "gecko_report_generation_duration_seconds_count",
        ),
        timeout=60,
        message="gecko_up 1, the app pools busy, both latency probes sampled",
    )
    assert 'gecko_connection_pool_size{pool="backend"} 10.0' in metrics
    wait_until(lambda: run.get("/healthz")[0] == 200, timeout=30, message="/healthz 200")
    wait_until(lambda: run.get("/readyz")[0] == 200, timeout=30, message="/readyz 200")

    run.proc.send_signal(signal.SIGTERM)
    assert run.proc.wait(60) == 0
    wait_until(lambda: not psutil.pid_exists(server_pid), timeout=30, message="server gone")
    assert not basedir.exists()
    events = [json.loads(line)["event"] for line in run.err.read_text().splitlines()
              if line.startswith("{")]  # fmt: skip
    for event in ("demo.data_loaded", "workload.started", "workload.stopped", "demo.stopped"):
        assert event in events
    assert events.index("workload.stopped") < events.index("demo.stopped")
    assert not DSN_WITH_SECRET.search(run.text())


@pytest.mark.integration
@pytest.mark.slow
def test_demo_interrupted_while_loading_removes_its_server(
    tmp_path: Path, demo_run: list[DemoRun]
) -> None:
    run = DemoRun(tmp_path, "--scans", "500000", "--log-format", "json")
    demo_run.append(run)
    wait_until(
        lambda: "loading demo data" in run.err.read_text(errors="replace"),
        timeout=120,
        message="the progress bar",
    )
    started = next(
        json.loads(line)
        for line in run.err.read_text(errors="replace").splitlines()
        if line.startswith("{") and '"demo.server_started"' in line
    )
    server_pid = run.find_server(int(started["port"]))
    basedir = Path(psutil.Process(server_pid).cmdline()[-1]).parent

    run.proc.send_signal(signal.SIGINT)
    assert run.proc.wait(60) == main.EXIT_INTERRUPTED
    wait_until(lambda: not psutil.pid_exists(server_pid), timeout=30, message="server gone")
    assert not basedir.exists()
    assert '"demo.interrupted"' in run.err.read_text(errors="replace")


def test_port_in_use_fails_before_starting_a_server() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(main.DemoError, match=f"cannot listen on 127.0.0.1:{port}"):
            main.run_demo(scans=10, port=port)


def test_missing_server_binaries_are_reported() -> None:
    major = next(m for m in range(11, 100) if ServerBinaries.system(m) is None and m != 18)
    with pytest.raises(main.DemoError, match=f"PostgreSQL {major} binaries are not installed"):
        main.select_binaries(major)
    assert main.select_binaries(None) == ServerBinaries.embedded()
