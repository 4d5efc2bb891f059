"""Shared set-up for the benchmarks: an embedded server with Gecko data and the exporter."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from exporter.db.session import Database, SessionOptions
from gecko_demo.cluster import LocalCluster, ServerBinaries, make_basedir
from gecko_demo.provision import provision_database
from tests.support.exporter_proc import ExporterProcess

MONITOR_ROLE = "gecko_monitor"


@dataclass
class BenchDatabase:
    cluster: LocalCluster
    admin_dsn: str
    monitor_dsn: str


@contextmanager
def gecko_database(scans: int) -> Iterator[BenchDatabase]:
    cluster = LocalCluster(make_basedir("gecko-bench-"), ServerBinaries.embedded())
    cluster.init()
    cluster.start()
    try:
        db = provision_database(
            cluster.dsn(),
            dbname="privacy",
            scans=scans,
            variant="incremental",
            monitor_role=MONITOR_ROLE,
        )
        yield BenchDatabase(cluster, db.superuser_dsn, db.monitor_dsn)
    finally:
        cluster.destroy()


@contextmanager
def exporter(dsn: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, int]]:
    """``python -m exporter run`` in a child process; yields (url, pid)."""
    proc = ExporterProcess(
        dsn,
        env={"GECKO_LOG_LEVEL": "warning", **(env or {})},
        workdir=make_basedir("gecko-bench-log-"),
    )
    with proc.start(wait_ready=True):
        if proc.proc is None:  # pragma: no cover - start() sets it
            raise RuntimeError("exporter did not start")
        yield proc.url, proc.proc.pid


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def exporter_database(monitor_dsn: str) -> Database:
    """The exporter's lanes with its default session settings (for in-process probe runs)."""
    return Database(
        monitor_dsn,
        SessionOptions(
            application_name="gecko-exporter",
            connect_timeout_seconds=5,
            lock_timeout_seconds=0.1,
            backoff_initial_seconds=0.1,
            backoff_max_seconds=1,
        ),
    )
