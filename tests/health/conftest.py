"""Databases for the health-signal tests, on the suite's PostgreSQL 18 and 15 servers.

Each server gets one Gecko database of its own (the schema from
``gecko_demo.schema``, a small realistic seed from ``gecko_demo.seed``,
then ~60 000 extra scans made with ``INSERT ... SELECT generate_series`` so the
planner cares about indexes) and one empty database (no schema, no
extensions). The exporter connects as a least-privilege role (pg_monitor +
SELECT on the app tables). Tests that change a database undo it themselves.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from exporter.db.session import Database, SessionOptions
from exporter.probes.base import Probe
from exporter.samples import Family
from gecko_demo import admin, schema
from gecko_demo.cluster import LocalCluster
from gecko_demo.provision import provision_database

MONITOR_ROLE = "gecko_health_monitor"
#: one password for the role on every database of a server (the role is cluster-wide)
MONITOR_PASSWORD = secrets.token_urlsafe(16)
EXPORTER_APP = "gecko-exporter"
BULK_SCANS = 60_000

BULK_SQL = """
INSERT INTO "Scan" ("id", "targetType", "input", "normalizedInput", "status", "score", "label",
                    "progress", "summary", "startedAt", "finishedAt", "slug", "source",
                    "createdAt", "updatedAt")
SELECT 'cbulk' || lpad(i::text, 20, '0'), 'url',
       'https://site' || (i % 20000) || '.example/',
       'https://site' || (i % 20000) || '.example/',
       CASE WHEN i % 53 = 0 THEN 'error' WHEN i % 97 = 0 THEN 'queued' ELSE 'done' END,
       i % 101, 'Caution', 100, 'bulk scan',
       ts - interval '40 seconds',
       CASE WHEN i % 97 = 0 THEN NULL ELSE ts END,
       'b' || lpad(to_hex(i), 7, '0'), 'manual', ts - interval '1 minute', ts
FROM (SELECT i, (now() AT TIME ZONE 'UTC') - make_interval(secs => i * 30) AS ts
      FROM generate_series(1, %(n)s) AS i) g;

INSERT INTO "Evidence" ("id", "scanId", "kind", "severity", "title", "details", "createdAt")
SELECT 'ebulk' || lpad(i::text, 20, '0') || '_' || k, 'cbulk' || lpad(i::text, 20, '0'),
       'header', 2, 'Missing header: x-frame-options', '{"name": "x-frame-options"}',
       (now() AT TIME ZONE 'UTC') - make_interval(secs => i * 30)
FROM generate_series(1, %(n)s / 3) AS i, generate_series(1, 3) AS k;

INSERT INTO "Issue" ("id", "scanId", "key", "severity", "category", "title", "sortWeight",
                     "createdAt", "updatedAt")
SELECT 'ibulk' || lpad(i::text, 20, '0'), 'cbulk' || lpad(i::text, 20, '0'),
       'security.headers', 'medium', 'security', 'Security headers missing', 20,
       (now() AT TIME ZONE 'UTC') - make_interval(secs => i * 30),
       (now() AT TIME ZONE 'UTC') - make_interval(secs => i * 30)
FROM generate_series(1, %(n)s / 3) AS i;
"""


@dataclass(frozen=True)
class HealthDb:
    """A database on a server the suite owns, with an admin and a monitor DSN."""

    admin_dsn: str
    monitor_dsn: str
    dbname: str
    major: int
    cluster: LocalCluster

    def connect(self, application_name: str = "gecko-health-tests") -> admin.AdminConnection:
        return admin.connect(self.admin_dsn, application_name=application_name)

    def execute(self, statement: str, params: admin.Params | None = None) -> None:
        with self.connect() as conn:
            conn.execute(statement, params)

    def fetchval(self, statement: str, params: admin.Params | None = None) -> object:
        with self.connect() as conn:
            return conn.fetchval(statement, params)


def _create_database(cluster: LocalCluster, dbname: str) -> tuple[str, int]:
    with admin.connect(cluster.dsn(), application_name="gecko-health-tests") as conn:
        conn.execute(f"CREATE DATABASE {conn.ident(dbname)}")
        major = conn.server_major
    return admin.dsn_replace(cluster.dsn(), dbname=dbname), major


def build_health_db(
    cluster: LocalCluster, *, scans: int = BULK_SCANS, variant: schema.Variant = "fresh"
) -> HealthDb:
    db = provision_database(
        cluster.dsn(),
        dbname=f"gecko_health_{secrets.token_hex(3)}",
        scans=200,
        variant=variant,
        monitor_role=MONITOR_ROLE,
        monitor_password=MONITOR_PASSWORD,
    )
    with admin.connect(db.superuser_dsn, application_name="gecko-health-tests") as conn:
        conn.run_script(BULK_SQL.replace("%(n)s", str(int(scans))))
        conn.execute("ANALYZE")
    return HealthDb(db.superuser_dsn, db.monitor_dsn, db.dbname, db.major, cluster)


def build_empty_db(cluster: LocalCluster) -> HealthDb:
    """No schema, no extensions; the monitor role (made by build_health_db) may connect."""
    dbname = f"gecko_empty_{secrets.token_hex(3)}"
    dsn, major = _create_database(cluster, dbname)
    monitor = admin.dsn_replace(dsn, user=MONITOR_ROLE, password=MONITOR_PASSWORD)
    return HealthDb(dsn, monitor, dbname, major, cluster)


@pytest.fixture(scope="session", params=["18", "15"])
def health_db(request: pytest.FixtureRequest) -> HealthDb:
    """The Gecko database with ~60k scans on PostgreSQL 18 and 15."""
    cluster: LocalCluster = request.getfixturevalue(
        "pg18_cluster" if request.param == "18" else "pg15_cluster"
    )
    return build_health_db(cluster)


@pytest.fixture(scope="session")
def empty_db(health_db: HealthDb) -> HealthDb:
    """An empty database on the same server as ``health_db``."""
    return build_empty_db(health_db.cluster)


# -- driving probes -------------------------------------------------------------
def options(application_name: str = EXPORTER_APP) -> SessionOptions:
    return SessionOptions(
        application_name=application_name,
        connect_timeout_seconds=5,
        lock_timeout_seconds=0.1,
        backoff_initial_seconds=0.1,
        backoff_max_seconds=0.5,
    )


class ProbeRunner:
    """Runs probes through the exporter's real lanes (read-only, timeouts) of one DSN."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.loop = asyncio.new_event_loop()
        self.db = Database(dsn, options())

    def collect(self, probe: Probe, statement_timeout: float = 2.0) -> list[Family]:
        async def run() -> list[Family]:
            async with self.db.lane(probe.lane).session(statement_timeout) as session:
                return await probe.collect(session, time.time())

        return self.loop.run_until_complete(run()) + probe.persistent()

    def close(self) -> None:
        self.loop.run_until_complete(self.db.close())
        self.loop.close()


@contextmanager
def probe_runner(dsn: str) -> Iterator[ProbeRunner]:
    runner = ProbeRunner(dsn)
    try:
        yield runner
    finally:
        runner.close()


def series(families: Sequence[Family], name: str) -> dict[tuple[str, ...], float]:
    """Samples of the family ``name`` by label values ({} when absent)."""
    for fam in families:
        if fam.name == name:
            return {s.labels: s.value for s in fam.samples}
    return {}


def value(families: Sequence[Family], name: str, *labels: str) -> float | None:
    return series(families, name).get(tuple(labels))
