"""A real PgBouncer (``/usr/sbin/pgbouncer``) on a random loopback port, for tests.

It pools one database of a test PostgreSQL (``gecko``) and serves its admin
console (``pgbouncer``). Clients and the console log in with SCRAM against
plain-text passwords in the ``auth_file`` this helper writes (PgBouncer then
also knows the password to log in to PostgreSQL). The console user is in
``stats_users`` only: SHOW is all the exporter needs. Every process started is
stopped on exit; :meth:`PgBouncer.kill` simulates an outage.

Usage::

    tool = require_tool("pgbouncer", "/usr/sbin/pgbouncer")
    with PgBouncer(tool, backend_port=cluster.port, dbname=db.dbname,
                   users={"postgres": cluster.password}, pool_size=2) as bouncer:
        bouncer.admin_url()           # GECKO_PGBOUNCER_URL
        bouncer.client_dsn("postgres", cluster.password)
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
from collections.abc import Mapping
from types import TracebackType
from typing import Any
from urllib.parse import quote

from gecko_demo.cluster import _ensure_os_user, free_port, make_basedir
from tests.support.wait import wait_until

#: the pooled database's name in PgBouncer
DATABASE = "gecko"
#: the exporter's console user (``stats_users``)
STATS_USER = "gecko_pgb_stats"


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


class PgBouncer:
    """One PgBouncer process in front of ``127.0.0.1:backend_port``."""

    def __init__(
        self,
        binary: str,
        *,
        backend_port: int,
        dbname: str,
        users: Mapping[str, str],
        pool_size: int = 2,
        pool_mode: str = "transaction",
        extra: Mapping[str, str] | None = None,
    ) -> None:
        self.binary = binary
        self.port = free_port()
        self.stats_password = secrets.token_urlsafe(18)
        self.users = {**users, STATS_USER: self.stats_password}
        self.basedir = make_basedir("gecko-pgbouncer-")
        self.ini = self.basedir / "pgbouncer.ini"
        self.logfile = self.basedir / "pgbouncer.log"
        self.pool_size = pool_size
        settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "auth_type": "scram-sha-256",
            "auth_file": str(self.basedir / "userlist.txt"),
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
        secret = quote(self.stats_password if password is None else password, safe="")
        return f"postgresql://{STATS_USER}:{secret}@127.0.0.1:{self.port}/pgbouncer"

    def client_dsn(self, user: str, password: str) -> str:
        """A client of the pooled database through PgBouncer."""
        auth = f"{quote(user, safe='')}:{quote(password, safe='')}"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{DATABASE}"

    # -- lifecycle ------------------------------------------------------------
    def start(self, timeout: float = 15) -> PgBouncer:
        self.ini.write_text(self._config)
        userlist = self.basedir / "userlist.txt"
        userlist.write_text("".join(f"{_quote(u)} {_quote(p)}\n" for u, p in self.users.items()))
        kwargs: dict[str, Any] = {}
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            user = _ensure_os_user()
            for path in (self.basedir, self.ini, userlist):
                os.chown(path, user.pw_uid, user.pw_gid)
            kwargs = {"user": user.pw_uid, "group": user.pw_gid}
        userlist.chmod(0o600)
        self.proc = subprocess.Popen(
            [self.binary, str(self.ini)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **kwargs,
        )
        try:
            state = wait_until(self._state, timeout=timeout, message=f"pgbouncer :{self.port}")
        except TimeoutError:
            state = "timeout"
        if state != "accepting":
            self.stop()
            raise RuntimeError(self._failure())
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
        log = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
        return f"pgbouncer on port {self.port} did not start: {log}"

    def kill(self) -> None:
        """An outage: SIGKILL, no goodbye to clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def pause(self) -> None:
        """A frozen PgBouncer (SIGSTOP): connections stay open, nothing answers."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
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

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.basedir, ignore_errors=True)
