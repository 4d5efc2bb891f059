"""Shared set-up for the benchmarks: an embedded server with Gecko data and the exporter."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from exporter.db import admin
from exporter.demo import schema, seed
from exporter.demo.cluster import LocalCluster, ServerBinaries, make_basedir

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
        with admin.connect(cluster.dsn(), application_name="gecko-bench") as conn:
            conn.execute("CREATE DATABASE privacy")
        dsn = cluster.dsn("privacy")
        schema.create_schema(dsn, "incremental")
        schema.ensure_extensions(dsn)
        seed.load_data(dsn, scans=scans, progress=False)
        password = secrets.token_urlsafe(16)
        schema.create_monitor_role(dsn, MONITOR_ROLE, password=password)
        yield BenchDatabase(cluster, dsn, cluster.dsn("privacy", MONITOR_ROLE, password))
    finally:
        cluster.destroy()


def free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def exporter(dsn: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, int]]:
    """``python -m exporter run`` in a child process; yields (url, pid)."""
    port = free_port()
    full = {k: v for k, v in os.environ.items() if not k.startswith("GECKO_")}
    full.update({"GECKO_DATABASE_URL": dsn, "GECKO_LISTEN_ADDRESS": f"127.0.0.1:{port}",
                 "GECKO_LOG_LEVEL": "warning"})  # fmt: skip
    full.update(env or {})
    log = Path(make_basedir("gecko-bench-log-")) / "exporter.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "exporter", "run"], env=full,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("exporter did not become ready: " + log.read_text()[-2000:])
            time.sleep(0.1)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(20)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")
