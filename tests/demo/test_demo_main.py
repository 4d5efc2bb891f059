"""``gecko-exporter demo`` end to end: it serves metrics, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from gecko_demo import admin, main
from gecko_demo.cluster import ServerBinaries
from gecko_demo.pgbouncer import find_binary as find_pgbouncer
from tests.conftest import require_tool
from tests.support.wait import free_port, wait_until

#: a DSN that carries a password: URI user info, or a key=value password not masked
DSN_WITH_SECRET = re.compile(r"postgres(?:ql)?://[^\s:/@]+:[^\s@]+@|\bpassword\s*=\s*(?!\*{4})\S")
BANNER_DSN = re.compile(r"^  exporter\s+(.+?)  \(password not shown\)$", re.MULTILINE)


def banner_db_port(banner: str) -> int:
    """The server port of the exporter's DSN in the banner (shown without its password)."""
    match = BANNER_DSN.search(banner)
    assert match, banner
    params = admin.dsn_params(match.group(1))
    assert "password" not in params
    shown = {key: params.get(key) for key in ("user", "host", "dbname")}
    assert shown == {"user": "gecko_monitor", "host": "127.0.0.1", "dbname": "privacy"}, banner
    return int(params["port"])


class DemoRun:
    """``python -m exporter demo`` with its output in files."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.port = free_port()
        self.out = tmp_path / "demo.out"
        self.err = tmp_path / "demo.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(self.command(*args), stdout=out, stderr=err, env=_env())
        self.server_pid: int | None = None
        self.basedir: Path | None = None

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "exporter", "demo", "--port", str(self.port), *args]

    def text(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def find_server(self, db_port: int) -> int:
        """The postmaster: the process listening on the database port."""
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == db_port and conn.status == psutil.CONN_LISTEN:
                self.server_pid = int(conn.pid)
                # postgres -D <basedir>/data: the folder the demo must remove
                self.basedir = Path(psutil.Process(self.server_pid).cmdline()[-1]).parent
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
            server = psutil.Process(self.server_pid)
            server.send_signal(signal.SIGQUIT)
            server.wait(30)
        if self.basedir is not None and self.basedir.name.startswith("gecko-pg-"):
            shutil.rmtree(self.basedir, ignore_errors=True)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GECKO_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class TerminalDemoRun(DemoRun):
    """The demo on a pseudo-terminal it controls, as when started from a terminal window.

    ``setsid --ctty`` makes the demo a session leader with the terminal as its
    controlling terminal; closing the terminal's master side then makes the
    kernel hang it up: SIGHUP to the demo and EIO on every later write.
    """

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.port = free_port()
        self.out = tmp_path / "demo.out"  # what the terminal showed
        self.err = tmp_path / "demo.err"  # nothing: stdout and stderr are the terminal
        self.err.write_bytes(b"")
        self.server_pid = None
        self.basedir = None
        master, slave = pty.openpty()
        self.master: int | None = master
        try:
            self.proc = subprocess.Popen(
                [require_tool("setsid"), "--ctty", *self.command(*args)],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=_env(),
            )
        finally:
            os.close(slave)
        self.reader = threading.Thread(target=self._drain, args=(master,), daemon=True)
        self.reader.start()

    def _drain(self, master: int) -> None:
        """Keep the terminal's buffer empty (a full one would block the demo's writes)."""
        with self.out.open("ab") as out:
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the terminal was closed or hung up
                    return
                if not chunk:
                    return
                out.write(chunk)
                out.flush()

    def close_terminal(self) -> None:
        if self.master is not None:
            os.close(self.master)
            self.master = None

    def cleanup(self) -> None:
        super().cleanup()
        self.close_terminal()
        self.reader.join(10)


def _server_of(run: DemoRun) -> tuple[int, Path]:
    """The running demo's postmaster pid and its temporary folder, read from the banner."""

    def banner() -> str | None:
        if run.proc.poll() is not None:
            raise AssertionError(f"the demo exited ({run.proc.returncode}): {run.text()[-3000:]}")
        text = run.out.read_text(errors="replace")
        return text if "Press Ctrl-C to stop." in text else None

    try:
        text = wait_until(banner, timeout=180, message="the demo banner")
    except TimeoutError:
        raise AssertionError(f"no banner; the demo said: {run.text()[-3000:]}") from None
    server_pid = run.find_server(banner_db_port(text))
    assert run.basedir is not None
    assert run.basedir.is_dir()
    return server_pid, run.basedir


def _processes_in(basedir: Path) -> list[int]:
    """Processes whose command line names the demo's folder (its postmaster, pg_ctl)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if any(str(basedir) in part for part in cmdline):
            found.append(int(proc.info["pid"]))
    return found


def _assert_left_nothing(run: DemoRun, server_pid: int, basedir: Path) -> None:
    wait_until(lambda: not psutil.pid_exists(server_pid), timeout=30, message="server gone")
    assert not psutil.pid_exists(server_pid)
    assert not _processes_in(basedir)
    assert not basedir.exists(), f"{basedir} left behind"


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
    db_port = banner_db_port(banner)
    server_pid = run.find_server(db_port)
    basedir = Path(psutil.Process(server_pid).cmdline()[-1]).parent
    # what a newcomer needs: the incidents behind each threshold, the plan-check note...
    for needle in ("query > 5 s", "pool > 80 %", "lookup > 100 ms", "report > 2 s",
                   "within five minutes", "Plan checks:", "partial index"):  # fmt: skip
        assert needle in banner, needle
    # ...and a psql line that really connects, as the app
    psql = next(line for line in banner.splitlines() if line.strip().startswith("psql "))
    command = psql.strip().removeprefix("psql").strip()
    assert f"-p {db_port} -U gecko_app -d privacy" in command
    answer = subprocess.run(
        [require_tool("bash"), "-c", f"{command} -X -A -t -c 'SELECT current_user'"],
        capture_output=True, text=True, timeout=30, check=False,
        env={**_env(), "PATH": f"/usr/lib/postgresql/15/bin:{os.environ['PATH']}"},
    )  # fmt: skip
    assert answer.stdout.strip() == "gecko_app", answer.stderr
    # ...and the migration gate's commands, each runnable as printed against this database
    gate = [line.strip().split("  #")[0].strip() for line in banner.splitlines()
            if "gecko-exporter " in line and line.strip().split()[0] != "Press"]  # fmt: skip
    assert [c for c in gate if " lint " in c] and [c for c in gate if " preflight " in c], banner
    assert [c for c in gate if c.endswith("verify")], banner
    env = {**_env(), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for command in gate:
        done = subprocess.run([require_tool("bash"), "-c", command], capture_output=True,
                              text=True, timeout=120, check=False, env=env)  # fmt: skip
        expected = {1} if "risky" in command and " lint " in command else {0, 1}
        if " lint " in command and "safe" in command:
            expected = {0}
        assert done.returncode in expected, (command, done.returncode, done.stderr[-2000:])
        assert "Traceback" not in done.stderr
    dsn_file = next(c for c in gate if "GECKO_DATABASE_URL_FILE=" in c).split()[0].split("=", 1)[1]
    assert Path(dsn_file).parent == basedir and (Path(dsn_file).stat().st_mode & 0o077) == 0

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
    # a PgBouncer in front of the database when the machine has one (issue 11), said either way
    if find_pgbouncer() is not None:
        assert "pgbouncer  127.0.0.1:" in banner
        wait_until(
            lambda: _metrics_with(
                run,
                "gecko_pgbouncer_up 1.0",
                'gecko_pgbouncer_servers{database="gecko"',
                'gecko_connection_pool_utilization_ratio{pool="pgbouncer/gecko/gecko_app"}',
            ),
            timeout=30,
            message="PgBouncer read by the demo's exporter",
        )
    else:
        assert "pgbouncer  not installed" in banner
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


STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("sig", STOP_SIGNALS, ids=lambda s: s.name)
def test_each_stop_signal_stops_the_running_demo_cleanly(
    tmp_path: Path, demo_run: list[DemoRun], sig: signal.Signals
) -> None:
    """Issue 9 item 7: SIGHUP used to kill the demo and leave its server and folder behind."""
    run = DemoRun(tmp_path, "--scans", "100", "--log-format", "json")
    demo_run.append(run)
    server_pid, basedir = _server_of(run)

    run.proc.send_signal(sig)
    assert run.proc.wait(60) == main.EXIT_OK
    _assert_left_nothing(run, server_pid, basedir)
    events = [json.loads(line) for line in run.err.read_text().splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert "workload.stopped" in names
    assert names[-1] == "demo.stopped"
    assert {"event": "demo.signal_received", "signal": sig.name}.items() <= next(
        e for e in events if e["event"] == "demo.signal_received"
    ).items()


@pytest.mark.integration
@pytest.mark.slow
def test_closing_the_terminal_stops_the_demo_cleanly(
    tmp_path: Path, demo_run: list[DemoRun]
) -> None:
    """The real SIGHUP: the terminal goes away, and with it every write to stdout/stderr."""
    run = TerminalDemoRun(tmp_path, "--scans", "100")
    demo_run.append(run)
    server_pid, basedir = _server_of(run)

    run.close_terminal()
    assert run.proc.wait(60) == main.EXIT_OK
    _assert_left_nothing(run, server_pid, basedir)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM], ids=lambda s: s.name)
def test_signal_while_loading_removes_the_server(
    tmp_path: Path, demo_run: list[DemoRun], sig: signal.Signals
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

    run.proc.send_signal(sig)
    assert run.proc.wait(60) == 128 + sig
    _assert_left_nothing(run, server_pid, basedir)


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


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("127.0.0.1", "127.0.0.1:8187"),
        ("::1", "[::1]:8187"),
        ("localhost", "localhost:8187"),
        ("Pa55-quote", "the --host address:8187"),  # a name or a password: not told apart
        ("postgresql://u:Pa55-quote@db/x", "the --host address:8187"),
        ("Pa55 quote", "the --host address:8187"),
    ],
)
def test_listen_errors_quote_an_address_never_other_text(host: str, shown: str) -> None:
    assert main.listen_label(host, 8187) == shown


def test_an_unusable_host_is_not_echoed() -> None:
    with pytest.raises(main.DemoError) as info:
        main.check_port_free("Pa55-quote::", 8187)
    assert "Pa55-quote" not in str(info.value)
    assert "cannot listen on the --host address:8187" in str(info.value)
