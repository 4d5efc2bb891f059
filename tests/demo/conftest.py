"""Fixtures of the demo tests: servers started with ``running_cluster`` and demo databases.

Two servers (the embedded PostgreSQL 18 and the machine's PostgreSQL 15; 15 is
skipped when absent, a failure under ``CI=true``), each with one database per
schema variant, loaded with a small synthetic dataset.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from gecko_demo import schema, seed
from gecko_demo.cluster import LocalCluster, ServerBinaries, running_cluster
from gecko_demo.provision import provision_database
from tests.conftest import IN_CI

DEMO_SCANS = 600


def server_binaries(major: str) -> ServerBinaries:
    if major == "18":
        return ServerBinaries.embedded()
    binaries = ServerBinaries.system(int(major))
    if binaries is None:
        message = f"PostgreSQL {major} binaries are not installed"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: a missing server is a failure)")
        pytest.skip(message)
    return binaries


@contextmanager
def demo_cluster(major: str) -> Iterator[LocalCluster]:
    """``running_cluster`` on the given major, stopped politely before it is removed."""
    with running_cluster(server_binaries(major)) as cluster:
        try:
            yield cluster
        finally:
            cluster.stop(mode="fast")


@dataclass(frozen=True)
class DemoDatabase:
    variant: schema.Variant
    major: int
    cluster: LocalCluster
    superuser_dsn: str  # the app database, as the superuser
    app_dsn: str  # the app database, as its owner (the app's role)
    app_role: str
    monitor_dsn: str
    monitor_role: str
    stats: seed.LoadStats


def build_demo_database(
    cluster: LocalCluster, variant: schema.Variant, *, scans: int = DEMO_SCANS
) -> DemoDatabase:
    """Database, app owner, extensions, schema, data and monitor role, as ``run_demo`` does."""
    suffix = secrets.token_hex(3)
    app_role = f"gecko_app_{suffix}"
    db = provision_database(
        cluster.dsn(),
        dbname=f"privacy_{variant}_{suffix}",
        scans=scans,
        variant=variant,
        owner=app_role,
        monitor_role=f"gecko_monitor_{suffix}",
        seed_value=7,
    )
    return DemoDatabase(
        variant=variant,
        major=db.major,
        cluster=cluster,
        superuser_dsn=db.superuser_dsn,
        app_dsn=db.app_dsn,
        app_role=app_role,
        monitor_dsn=db.monitor_dsn,
        monitor_role=db.monitor_role,
        stats=db.stats,
    )


@pytest.fixture(scope="session", params=["18", "15"], ids=["pg18", "pg15"])
def demo_server(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    with demo_cluster(request.param) as cluster:
        yield cluster


@pytest.fixture(scope="session", params=schema.VARIANTS)
def demo_db(demo_server: LocalCluster, request: pytest.FixtureRequest) -> DemoDatabase:
    """A loaded database per (server, variant); tests must not change its data."""
    return build_demo_database(demo_server, request.param)
