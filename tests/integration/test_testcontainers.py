"""The same end-to-end check against a PostgreSQL container, where a Docker engine answers.

No Docker engine runs on the project's build machines; there this test is
skipped (even under CI), and embedded/system PostgreSQL cover the same ground.
"""

from __future__ import annotations

import pytest

from tests.conftest import build_gecko_database
from tests.support.exporter_proc import ExporterProcess

pytestmark = pytest.mark.integration


def _docker_engine_answers() -> bool:
    try:
        import docker  # noqa: PLC0415

        client = docker.from_env(timeout=3)
        return bool(client.ping())
    except Exception:
        return False


@pytest.mark.skipif(not _docker_engine_answers(), reason="no Docker engine answers here")
@pytest.mark.parametrize("image", ["postgres:16-alpine", "postgres:13-alpine"])
def test_exporter_against_container(image: str) -> None:
    from testcontainers.postgres import PostgresContainer  # noqa: PLC0415

    with PostgresContainer(image, driver=None) as pg:
        db = build_gecko_database(pg.get_connection_url(), cluster=None, scans=300)
        with ExporterProcess(db.monitor_dsn) as exp:
            exp.wait_ready()
            for probe in ("slow_queries", "connections", "scan_lookup"):
                exp.wait_value("gecko_probe_success", lambda v: v == 1, timeout=30,
                               labels={"probe": probe})  # fmt: skip
