"""One Gecko Advisor database, ready to be monitored: the steps the demo, the
test fixtures and the benchmarks all need, in one place.

Database (optionally owned by an app role, as the app deploys it) → extensions →
schema → synthetic data → least-privilege monitor role.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from gecko_demo import admin, schema, seed

_APP_NAME = "gecko-demo-provision"


@dataclass(frozen=True)
class ProvisionedDatabase:
    """DSNs of a provisioned database (passwords included: never log them)."""

    dbname: str
    major: int
    superuser_dsn: str  # the database, as the server's superuser
    app_dsn: str  # the database, as its owner (the superuser when no owner was asked for)
    monitor_dsn: str
    monitor_role: str
    monitor_password: str
    stats: seed.LoadStats


def provision_database(
    server_dsn: str,
    *,
    dbname: str,
    scans: int,
    variant: schema.Variant = "fresh",
    owner: str | None = None,
    monitor_role: str = "gecko_monitor",
    monitor_password: str | None = None,
    seed_value: int = 1,
    progress: bool = False,
) -> ProvisionedDatabase:
    """Create and fill ``dbname`` on the server ``server_dsn`` (a superuser) points at."""
    superuser_dsn = admin.dsn_replace(server_dsn, dbname=dbname)
    if owner is None:
        with admin.connect(server_dsn, application_name=_APP_NAME) as conn:
            conn.execute(f"CREATE DATABASE {conn.ident(dbname)}")
        app_dsn = superuser_dsn
    else:
        app_dsn = schema.create_app_database(
            server_dsn, dbname=dbname, owner=owner, password=secrets.token_urlsafe(18)
        )
    schema.ensure_extensions(superuser_dsn)
    schema.create_schema(app_dsn, variant)
    stats = seed.load_data(app_dsn, scans=scans, seed=seed_value, progress=progress)
    password = monitor_password or secrets.token_urlsafe(18)
    schema.create_monitor_role(superuser_dsn, monitor_role, password=password)
    with admin.connect(superuser_dsn, application_name=_APP_NAME) as conn:
        major = conn.server_major
    return ProvisionedDatabase(
        dbname=dbname,
        major=major,
        superuser_dsn=superuser_dsn,
        app_dsn=app_dsn,
        monitor_dsn=admin.dsn_replace(superuser_dsn, user=monitor_role, password=password),
        monitor_role=monitor_role,
        monitor_password=password,
        stats=stats,
    )
