"""The running daemon holds no pydantic (issue 12 §3: RSS <= 45 MB).

pydantic, pydantic-settings and pydantic-core cost 13-17 MiB resident; the
configuration is validated in a short-lived child process instead. A real
``gecko-exporter run`` against a real PostgreSQL: pydantic-core's shared object is
not mapped, the loader child is gone, and the configuration it validated (file and
environment) is the one the daemon uses.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import GeckoDatabase
from tests.support.exporter_proc import ExporterProcess

pytestmark = pytest.mark.integration


def _children(pid: int) -> list[str]:
    """Command lines of the live child processes of ``pid``."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
    return out


def test_daemon_maps_no_pydantic_and_keeps_no_loader(gecko_db: GeckoDatabase) -> None:
    pools = [{"name": "backend", "application_name": "gecko-backend*", "size": 4}]
    env = {"GECKO_PROBES__CONNECTIONS__INTERVAL_SECONDS": "1"}
    with ExporterProcess(gecko_db.monitor_dsn, env=env, config={"pools": pools}) as exp:
        exp.wait_ready(30)
        # the configuration from the file and the environment reached the daemon
        exp.wait_value(
            "gecko_connection_pool_size", lambda v: v == 4, timeout=30, labels={"pool": "backend"}
        )
        started = exp.wait_event("exporter_started", timeout=30)
        assert started["probes"]["connections"] == 1.0
        assert exp.proc is not None
        maps = Path(f"/proc/{exp.proc.pid}/maps").read_text()
        assert "pydantic" not in maps
        # without a web config file: no YAML parser, no bcrypt (loaded only where needed)
        assert "_yaml" not in maps
        assert "_bcrypt" not in maps
        assert "_psycopg" in maps or "psycopg" in maps  # the maps are the daemon's own
        assert _children(exp.proc.pid) == []
