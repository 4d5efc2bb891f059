"""``gecko-exporter demo``: a throwaway Gecko Advisor database with the exporter on it.

Starts a local PostgreSQL (the bundled 18 or the machine's packages), creates
the app schema, roles and extensions, loads synthetic data, runs app-like
traffic and serves the exporter until SIGINT, SIGTERM or SIGHUP (the terminal
closed). Everything it started (threads, the exporter, the server and its
files) is gone when it returns.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import signal
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Final, TextIO

import structlog

from exporter.errors import ExporterError
from gecko_demo import admin, schema
from gecko_demo.cluster import LocalCluster, ServerBinaries, running_cluster
from gecko_demo.pgbouncer import PgBouncerServer, PgBouncerTraffic, find_binary
from gecko_demo.provision import provision_database
from gecko_demo.workload import BACKEND_APP, WORKER_APP, Incidents, Workload

log = structlog.get_logger()

DATABASE: Final = "privacy"  # the name used by the app's deployed compose files
APP_ROLE: Final = "gecko_app"
MONITOR_ROLE: Final = "gecko_monitor"
EXIT_OK: Final = 0
#: a signal during setup exits 128 + its number, as a shell reports a signal death
EXIT_INTERRUPTED: Final = 128 + signal.SIGINT
#: every one of them stops the demo cleanly: Ctrl-C, ``kill``, the terminal closing
_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_Handler = Callable[[int, FrameType | None], object] | int | None


class DemoError(ExporterError):
    """The demo could not be set up (missing binaries, port in use, ...)."""


def select_binaries(pg_major: int | None) -> ServerBinaries:
    """The bundled server, or the machine's ``postgresql-<major>`` packages."""
    embedded = ServerBinaries.embedded()
    if pg_major is None or embedded.major == pg_major:
        return embedded
    system = ServerBinaries.system(pg_major)
    if system is None:
        raise DemoError(
            f"PostgreSQL {pg_major} binaries are not installed "
            f"(expected /usr/lib/postgresql/{pg_major}/bin; the bundled server is "
            f"{embedded.major})"
        )
    return system


def check_port_free(host: str, port: int) -> None:
    """Fail before the slow setup when the exporter's port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise DemoError(
                f"cannot listen on {listen_label(host, port)} ({exc.strerror or exc})"
            ) from None


def listen_label(host: str, port: int) -> str:
    """``host:port`` for an error line: an IP address or ``localhost`` is shown, any other
    --host value is not quoted (it may be a pasted DSN or password)."""
    try:
        shown = str(ipaddress.ip_address(host))
    except ValueError:
        shown = host if host == "localhost" else "the --host address"
    return f"[{shown}]:{port}" if ":" in shown else f"{shown}:{port}"


class _Interrupted(KeyboardInterrupt):
    """A stop signal arrived during setup, before the exporter took over."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    del frame
    raise _Interrupted(signum)


def _note_signal(signum: int, frame: FrameType | None) -> None:
    del frame
    log.info("demo.already_stopping", signal=signal.Signals(signum).name)


def _terminal_fds() -> tuple[int, ...]:
    """The standard streams attached to a terminal (checked while it is still there)."""
    found = []
    for fd in (0, 1, 2):
        with suppress(OSError):
            if os.isatty(fd):
                found.append(fd)
    return tuple(found)


def _detach_from_terminal(fds: tuple[int, ...]) -> None:
    """Point the terminal's streams at /dev/null after SIGHUP.

    A hung-up terminal answers every write with EIO: the cleanup's log lines
    would raise in the middle of stopping the server. The output is lost with
    the terminal anyway.
    """
    if not fds:
        return
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in fds:
            with suppress(OSError):
                os.dup2(devnull, fd)
    finally:
        os.close(devnull)


@contextmanager
def _signal_handlers() -> Iterator[Callable[[Callable[[int, FrameType | None], None]], None]]:
    """Install handlers for SIGINT/SIGTERM/SIGHUP; restore the previous ones on exit.

    Yields a function that switches every one of them to another handler.
    SIGHUP first detaches the process from its (closed) terminal. Does nothing
    off the main thread (Python only delivers signals there).
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda handler: None
        return
    previous: dict[int, _Handler] = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    terminal = _terminal_fds()

    def install(handler: Callable[[int, FrameType | None], None]) -> None:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            if signum == signal.SIGHUP:
                _detach_from_terminal(terminal)
            handler(signum, frame)

        for sig in _SIGNALS:
            signal.signal(sig, on_signal)

    install(_raise_interrupt)
    try:
        yield install
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _incident_lines(incidents: Incidents) -> list[str]:
    """What the incident thread does and where each headline threshold shows it."""
    minutes = incidents.period_seconds / 60
    return [
        f"Headline signals: each incident below comes every {minutes:g} min (all of them"
        f" within {incidents.first_after_seconds + incidents.period_seconds * 2 / 3:g} s of"
        " the start), so all four thresholds move within five minutes:",
        f"  query > 5 s       a backend request runs {incidents.slow_request_seconds:g} s"
        " -> gecko_longest_active_query_seconds, gecko_slow_queries_total",
        f"  pool > 80 %       {incidents.surge_connections} extra backend connections busy for"
        f" {incidents.surge_seconds:g} s -> gecko_connection_pool_utilization_ratio"
        '{pool="backend"}',
        f'  lookup > 100 ms,  a migration holds ACCESS EXCLUSIVE on "Scan" for'
        f" {incidents.lock_seconds:g} s as the exporter's report probe is due: the app's lookups"
        " and reports queue",
        "  report > 2 s      behind it; the exporter's probes give up at their 100 ms lock_timeout"
        " (first law) and count at their deadline",
        "                    -> gecko_scan_lookup_duration_seconds,"
        " gecko_report_generation_duration_seconds, gecko_lock_longest_wait_seconds,"
        " gecko_migration_in_progress",
    ]


def _plan_note(variant: str) -> list[str]:
    if variant != "incremental":
        return []
    return [
        "Plan checks: gecko_query_plan_uses_index reads 0 for the lookup and the report's evidence"
        " and issues on this (incremental)",
        "  schema, and that is a finding: the planner serves them with indexes the migration chain"
        ' left behind ("Scan_status_finishedAt_idx",',
        '  the duplicate "Evidence_scanId_*", "Issue_scanId_idx") instead of the designed ones, and'
        ' no generic plan (plan="generic") can',
        "  use a partial index (WHERE status = 'done') since Prisma binds 'done' as a parameter."
        " --schema-variant fresh reads 1 for them.",
    ]


MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _gate_lines(dsn_file: Path) -> list[str]:
    """How to try the migration gate on this database, in another terminal."""
    env = f"GECKO_DATABASE_URL_FILE={shlex.quote(str(dsn_file))}"
    risky = shlex.quote(str(MIGRATIONS / "risky"))
    safe = shlex.quote(str(MIGRATIONS / "safe"))
    return [
        "Migration gate (examples from the analysis: risky, and a safe rewrite of each):",
        f"  gecko-exporter lint {risky}                 # exit 1: findings",
        f"  gecko-exporter lint {safe}                  # exit 0",
        f"  {env} gecko-exporter preflight {risky}      # go / no-go right now",
        f"  {env} gecko-exporter verify                  # did it go well?",
    ]


def _banner(
    out: TextIO,
    *,
    url: str,
    dsn_file: Path | None = None,
    monitor_dsn: str,
    app_dsn: str,
    major: int,
    scans: int,
    variant: str,
    traffic: Workload | None,
    pgbouncer: PgBouncerServer | None = None,
) -> None:
    lines = [
        "",
        f"Gecko Advisor demo: PostgreSQL {major}, {scans} scans, {variant} schema",
        f"  metrics    {url}/metrics",
        f"  liveness   {url}/healthz",
        f"  readiness  {url}/readyz",
        f"  exporter   {admin.dsn_without_password(monitor_dsn)}  (password not shown)",
        f"  app        {admin.dsn_without_password(app_dsn)}",
        f"  psql       {admin.psql_command(app_dsn)}",
        "             (as the app: throwaway credentials, gone when the demo stops;"
        " lock a table, run something slow, open connections)",
        *_pgbouncer_lines(pgbouncer),
    ]
    if traffic is not None:
        lines.append(
            f"  workload   ~{traffic.rate_per_second:g} requests/s as {traffic.application_name}"
            f" and {traffic.worker_application_name}"
        )
        if traffic.incidents is not None:
            lines += _incident_lines(traffic.incidents)
    lines += _plan_note(variant)
    if dsn_file is not None:
        lines += _gate_lines(dsn_file)
    lines += ["Press Ctrl-C to stop.", ""]
    out.write("\n".join(lines) + "\n")
    out.flush()


def _start_pgbouncer(
    stack: ExitStack, cluster: LocalCluster, dbname: str, app_dsn: str
) -> PgBouncerServer | None:
    """A PgBouncer in front of the database with light traffic, when the machine has one."""
    binary = find_binary()
    if binary is None:
        log.info("demo.pgbouncer_not_installed")
        return None
    params = admin.dsn_params(app_dsn)
    user, password = params.get("user", ""), params.get("password", "")
    bouncer = PgBouncerServer(
        binary,
        backend_port=cluster.port,
        dbname=dbname,
        users={user: password},
        pool_size=5,
        basedir=cluster.basedir / "pgbouncer",  # removed with the server's folder
    )
    stack.callback(bouncer.close)
    bouncer.start()
    traffic = PgBouncerTraffic(bouncer.client_dsn(user, password))
    stack.callback(traffic.stop)
    traffic.start()
    log.info("demo.pgbouncer_started", port=bouncer.port)
    return bouncer


def _pgbouncer_lines(bouncer: PgBouncerServer | None) -> list[str]:
    if bouncer is None:
        return [
            "  pgbouncer  not installed on this machine: no gecko_pgbouncer_* metrics"
            " (install the pgbouncer package to see them)"
        ]
    return [
        f"  pgbouncer  127.0.0.1:{bouncer.port} (pool_size {bouncer.pool_size}, transaction"
        " pooling) with light traffic -> gecko_pgbouncer_*,"
        ' gecko_connection_pool_utilization_ratio{pool="pgbouncer/gecko/…"}'
    ]


def _next_run_in(url: str, probe: str) -> Callable[[], float | None]:
    """Seconds until ``probe``'s next run, read from the exporter's own /metrics."""

    def value(text: str, name: str) -> float | None:
        match = re.search(rf'^{name}\{{probe="{probe}"\}} (\S+)$', text, re.MULTILINE)
        return float(match.group(1)) if match else None

    def seconds() -> float | None:
        try:
            with urllib.request.urlopen(f"{url}/metrics", timeout=2) as response:  # noqa: S310
                text = response.read().decode()
        except (OSError, ValueError):
            return None
        last = value(text, "gecko_probe_last_run_timestamp_seconds")
        interval = value(text, "gecko_probe_interval_seconds")
        if last is None or not interval:
            return None
        return (last + interval - time.time()) % interval

    return seconds


def _stop_workload(traffic: Workload) -> None:
    if not traffic.stop(timeout=15):
        log.error("demo.workload_threads_left")


def run_demo(
    *,
    scans: int,
    port: int,
    listen_host: str = "127.0.0.1",
    pg_major: int | None = None,
    workload: bool = True,
    log_format: str = "console",
    variant: schema.Variant = "incremental",
    seed_value: int = 1,
    out: TextIO | None = None,
) -> int:
    """Run the demo until SIGINT, SIGTERM or SIGHUP; return the process exit code.

    ``variant`` picks the schema install (``incremental``: the live stage
    database, the default; ``fresh``: a new install). Setup failures raise
    :class:`DemoError` (or another :class:`ExporterError`) after cleanup.
    """
    from exporter.app import ExporterApp  # noqa: PLC0415 - the heavy part, loaded on use
    from exporter.settings import load_config  # noqa: PLC0415

    if scans < 1:
        raise DemoError("scans must be at least 1")
    stream = out if out is not None else sys.stdout
    binaries = select_binaries(pg_major)
    check_port_free(listen_host, port)
    with _signal_handlers() as switch_signals, ExitStack() as stack:
        try:
            cluster = stack.enter_context(running_cluster(binaries))
            # stop politely ("fast") before running_cluster deletes its files
            stack.callback(cluster.stop, mode="fast")
            # unwinds first: a second Ctrl-C must not interrupt the cleanup below it
            stack.callback(switch_signals, _note_signal)
            log.info("demo.server_started", port=cluster.port, major=binaries.major)
            db = provision_database(
                cluster.dsn(),
                dbname=DATABASE,
                scans=scans,
                variant=variant,
                owner=APP_ROLE,
                monitor_role=MONITOR_ROLE,
                seed_value=seed_value,
                progress=True,
            )
            app_dsn, monitor_dsn = db.app_dsn, db.monitor_dsn
            bouncer = _start_pgbouncer(stack, cluster, DATABASE, app_dsn)

            settings = load_config(
                overrides={
                    "database_url": monitor_dsn,
                    **({"pgbouncer_url": bouncer.admin_url()} if bouncer is not None else {}),
                    "listen_address": f"{listen_host}:{port}",
                    "log_format": log_format,
                    "pools": [
                        {"name": "backend", "application_name": BACKEND_APP, "size": 10},
                        {"name": "worker", "application_name": WORKER_APP, "size": 5},
                    ],
                }
            )
            try:
                app = ExporterApp(settings)
            except OSError as exc:
                raise DemoError(
                    f"cannot listen on {listen_label(listen_host, port)} ({exc.strerror or exc})"
                ) from None
            stack.callback(app.stop)
            app.install_signal_handlers()  # from now on a signal asks for a clean stop

            def request_stop(signum: int, frame: FrameType | None) -> None:
                del frame
                log.info("demo.signal_received", signal=signal.Signals(signum).name)
                app.request_stop()

            switch_signals(request_stop)  # SIGHUP too, not only the exporter's two
            traffic = (
                Workload(
                    app_dsn,
                    seed=seed_value + 1,
                    data_seed=seed_value,
                    incidents=Incidents(),
                    next_probe_run=_next_run_in(app.url, "report"),
                )
                if workload
                else None
            )
            if traffic is not None:
                stack.callback(_stop_workload, traffic)  # stopped before the exporter
                traffic.start()
            app.start()
            # the exporter role's DSN for the gate commands: a private file in the demo's
            # folder (removed with it), never a password on a command line
            dsn_file = cluster.basedir / "monitor.dsn"
            dsn_file.touch(mode=0o600)
            dsn_file.write_text(monitor_dsn + "\n", encoding="utf-8")
            _banner(
                stream,
                url=app.url,
                dsn_file=dsn_file,
                monitor_dsn=monitor_dsn,
                app_dsn=app_dsn,
                major=binaries.major,
                scans=scans,
                variant=variant,
                traffic=traffic,
                pgbouncer=bouncer,
            )
            app.wait_for_signal()
            switch_signals(_note_signal)
            log.info("demo.stopping")
        except _Interrupted as exc:
            # a signal during setup, before the exporter took over
            switch_signals(_note_signal)
            log.info("demo.interrupted", signal=signal.Signals(exc.signum).name)
            return 128 + exc.signum
    log.info("demo.stopped")
    return EXIT_OK
