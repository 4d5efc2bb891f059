"""A local PgBouncer in front of a local PostgreSQL (the demo and the test suite).

It pools one database (named :data:`DATABASE` in PgBouncer) on ``127.0.0.1``
and serves its admin console (``pgbouncer``). Clients and the console log in
with SCRAM against plain-text passwords in the ``auth_file`` written here
(PgBouncer then also knows the password to log in to PostgreSQL). The
exporter's console user is in ``stats_users`` only: SHOW is all it needs.
PgBouncer refuses to run as root, so as root it runs as the same unprivileged
account as the demo's server.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import structlog

from exporter.errors import ExporterError
from gecko_demo import admin
from gecko_demo.cluster import _ensure_os_user, free_port, make_basedir

log = structlog.get_logger()

#: the pooled database's name in PgBouncer
DATABASE: Final = "gecko"
#: the exporter's console user (``stats_users``)
STATS_USER: Final = "gecko_pgb_stats"
#: where Debian's package puts it
DEFAULT_BINARY: Final = "/usr/sbin/pgbouncer"


class PgBouncerError(ExporterError):
    """PgBouncer did not start."""


def find_binary() -> str | None:
    """The machine's pgbouncer, or None when it has none."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    return DEFAULT_BINARY if Path(DEFAULT_BINARY).exists() else None


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


class PgBouncerServer:
    """One PgBouncer process in front of ``127.0.0.1:backend_port``; stopped on exit."""

    def __init__(
        self,
        binary: str,
        *,
        backend_port: int,
        dbname: str,
        users: Mapping[str, str],
        pool_size: int = 2,
        pool_mode: str = "transaction",
        basedir: Path | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        self.binary = binary
        self.port = free_port()
        self.stats_password = secrets.token_urlsafe(18)
        self.users = {**users, STATS_USER: self.stats_password}
        self._own_basedir = basedir is None
        self.basedir = basedir or make_basedir("gecko-pgbouncer-")
        self.basedir.mkdir(parents=True, exist_ok=True)
        self.ini = self.basedir / "pgbouncer.ini"
        self.userlist = self.basedir / "userlist.txt"
        self.logfile = self.basedir / "pgbouncer.log"
        self.pool_size = pool_size
        settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "auth_type": "scram-sha-256",
            "auth_file": str(self.userlist),
            "stats_users": STATS_USER,
            "pool_mode": pool_mode,
            "default_pool_size": str(pool_size),
            "reserve_pool_size": "0",
            "max_client_conn": "200",
            "logfile": str(self.logfile),
            "pidfile": str(self.basedir / "pgbouncer.pid"),
            "ignore_startup_parameters": "extra_float_digits",
            **(extra or {}),
        }
        self._config = (
            f"[databases]\n{DATABASE} = host=127.0.0.1 port={backend_port} dbname={dbname}\n\n"
            "[pgbouncer]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items())
        )
        self.proc: subprocess.Popen[bytes] | None = None

    # -- addresses ------------------------------------------------------------
    def admin_url(self, password: str | None = None) -> str:
        """The admin console URL for the exporter (``GECKO_PGBOUNCER_URL``)."""
        secret = self.stats_password if password is None else password
        return admin.make_dsn(
            host="127.0.0.1", port=self.port, user=STATS_USER, password=secret, dbname="pgbouncer"
        )

    def client_dsn(self, user: str, password: str) -> str:
        """A client of the pooled database through PgBouncer."""
        return admin.make_dsn(
            host="127.0.0.1", port=self.port, user=user, password=password, dbname=DATABASE
        )

    # -- lifecycle ------------------------------------------------------------
    def start(self, timeout: float = 15) -> PgBouncerServer:
        self.ini.write_text(self._config)
        self.userlist.write_text(
            "".join(f"{_quote(u)} {_quote(p)}\n" for u, p in self.users.items())
        )
        kwargs: dict[str, Any] = {}
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            user = _ensure_os_user()
            for path in (self.basedir, self.ini, self.userlist):
                os.chown(path, user.pw_uid, user.pw_gid)
            if self.logfile.exists():
                os.chown(self.logfile, user.pw_uid, user.pw_gid)
            kwargs = {"user": user.pw_uid, "group": user.pw_gid}
        self.userlist.chmod(0o600)
        self.proc = subprocess.Popen(
            [self.binary, str(self.ini)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **kwargs,
        )
        deadline = time.monotonic() + timeout
        while (state := self._state()) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if state != "accepting":
            self.stop()
            raise PgBouncerError(self._failure())
        return self

    def _state(self) -> str | None:
        if self.proc is not None and self.proc.poll() is not None:
            return "exited"
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return "accepting"
        except OSError:
            return None

    def _failure(self) -> str:
        text = self.log_text()[-2000:]
        return f"pgbouncer on port {self.port} did not start: {text}"

    def kill(self) -> None:
        """An outage: SIGKILL, no goodbye to clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def pause(self) -> None:
        """A frozen PgBouncer (SIGSTOP): connections stay open, nothing answers."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def log_text(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def close(self) -> None:
        """Stop it and remove its files (its own folder only)."""
        try:
            self.stop()
        finally:
            if self._own_basedir:
                shutil.rmtree(self.basedir, ignore_errors=True)

    def __enter__(self) -> PgBouncerServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PgBouncerTraffic:
    """Light app-like traffic through PgBouncer, so its pools have clients and servers.

    A few clients (``application_name`` :data:`APPLICATION_NAME`) run a short
    statement in turn, one every ``period_seconds``.
    """

    APPLICATION_NAME: Final = "gecko-advisor-via-pgbouncer"

    def __init__(self, dsn: str, *, clients: int = 3, period_seconds: float = 0.5) -> None:
        self._dsn = dsn
        self._clients = clients
        self._period = period_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pgbouncer-traffic", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conns: list[admin.AdminConnection] = []
        try:
            for _ in range(self._clients):  # one by one: each is closed even if a later fails
                conns.append(  # noqa: PERF401
                    admin.connect(
                        self._dsn,
                        application_name=self.APPLICATION_NAME,
                        prepare_threshold=None,  # transaction pooling: no prepared statements
                    )
                )
            turn = 0
            while not self._stop.wait(self._period):
                conns[turn % len(conns)].execute("SELECT pg_sleep(0.2)")
                turn += 1
        except ExporterError as exc:
            if not self._stop.is_set():
                log.warning("demo.pgbouncer_traffic_failed", error_class=type(exc).__name__)
        finally:
            for conn in conns:
                conn.close()

    def stop(self, timeout: float = 5) -> bool:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True
