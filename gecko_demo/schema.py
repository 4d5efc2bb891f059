"""Create the Gecko Advisor schema, the roles and the extensions of a demo database.

Two install variants exist in the wild (see the schema reference, §3):

``fresh``
    a database created from the current squashed migration
    (``20251029154900_init``): plain indexes only.
``incremental``
    the live stage database, built by replaying the older migration chain:
    partial hot indexes, redundant ``scanId`` indexes, other index names.

Both share the four key index names the exporter checks.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Final, Literal

import structlog

from gecko_demo import admin

log = structlog.get_logger()

Variant = Literal["fresh", "incremental"]
VARIANTS: Final[tuple[Variant, ...]] = ("fresh", "incremental")

APP_TABLES: Final[tuple[str, ...]] = (
    "Scan",
    "Evidence",
    "Issue",
    "CachedList",
    "User",
    "RateLimit",
    "WatchedUrl",
    "PasswordResetToken",
    "WalletLink",
)
MIGRATIONS_TABLE: Final = "_prisma_migrations"

# Index names present in every variant (besides primary keys).
KEY_INDEXES: Final[tuple[str, ...]] = (
    "Scan_dedupe_lookup_idx",
    "Scan_recent_reports_idx",
    "Evidence_scan_covering_idx",
    "Issue_scan_covering_idx",
)
VARIANT_INDEXES: Final[dict[Variant, frozenset[str]]] = {
    "fresh": frozenset({*KEY_INDEXES, "Issue_severity_idx"}),
    "incremental": frozenset(
        {
            *KEY_INDEXES,
            "Scan_status_finishedAt_idx",
            "Evidence_scanId_idx",
            "Evidence_scanId_count_idx",
            "Issue_scanId_idx",
            "Issue_severity_sortWeight_idx",
        }
    ),
}

# Migrations recorded in _prisma_migrations, oldest first.
_HEAD_MIGRATIONS: Final = (
    "20251029154900_init",
    "20251029171615_remove_payment_provider_fields",
)
MIGRATIONS: Final[dict[Variant, tuple[str, ...]]] = {
    "fresh": _HEAD_MIGRATIONS,
    "incremental": (
        "20250913190000_init",
        "20250919050000_phase1_schema",
        "20250919063000_backend_indices",
        "20251005000001_critical_performance_optimizations",
        "20251005000002_index_cleanup",
        "20251006213752_add_freemium_models",
        "20251015200718_add_wallet_auth",
        "20251016150000_add_lemonsqueezy_fields",
        "20251022123000_add_password_reset_tokens",
        "20251022133000_add_scan_progress",
        *_HEAD_MIGRATIONS,
    ),
}

OPTIONAL_EXTENSIONS: Final[tuple[str, ...]] = ("pg_stat_statements", "pgstattuple")

_APP_NAME: Final = "gecko-demo-setup"


@dataclass(frozen=True)
class MigrationRow:
    id: str
    checksum: str
    migration_name: str
    started_at: datetime
    finished_at: datetime
    applied_steps_count: int = 1


def _sql_file(name: str) -> str:
    return resources.files("gecko_demo").joinpath(name).read_text(encoding="utf-8")


def schema_script(variant: Variant) -> str:
    """The DDL of one variant: tables, keys, indexes, ``_prisma_migrations``."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown schema variant {variant!r}; expected one of {VARIANTS}")
    return _sql_file("schema.sql") + "\n" + _sql_file(f"indexes_{variant}.sql")


def migration_rows(variant: Variant, *, now: datetime) -> list[MigrationRow]:
    """``_prisma_migrations`` rows of a variant, all applied and finished.

    Chain migrations are dated by their name's timestamp (as ``migrate
    deploy`` runs soon after a release); a fresh install applies everything
    just before ``now``. Checksums are the SHA-256 of a text naming the
    migration and variant (the real files are not shipped).
    """
    names = MIGRATIONS[variant]
    rows: list[MigrationRow] = []
    for position, name in enumerate(names):
        if variant == "fresh":
            started = now - timedelta(seconds=len(names) - position)
        else:
            started = datetime.strptime(name.split("_", 1)[0], "%Y%m%d%H%M%S").replace(
                tzinfo=UTC
            ) + timedelta(minutes=7)
        digest = hashlib.sha256(f"gecko-advisor {variant} {name}\n".encode()).hexdigest()
        rows.append(
            MigrationRow(
                id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"gecko-advisor/{variant}/{name}")),
                checksum=digest,
                migration_name=name,
                started_at=started,
                finished_at=started + timedelta(milliseconds=40 + 13 * position),
            )
        )
    return rows


def create_schema(dsn: str, variant: Variant = "fresh") -> None:
    """Create the app schema in ``public`` of the database ``dsn`` points at.

    Runs as one script (one implicit transaction, like ``prisma migrate
    deploy``), then records the variant's migrations.
    """
    script = schema_script(variant)
    rows = migration_rows(variant, now=datetime.now(UTC))
    with admin.connect(dsn, application_name=_APP_NAME) as conn, conn.transaction():
        conn.run_script(script)
        for row in rows:
            conn.execute(
                'INSERT INTO "_prisma_migrations" ("id", "checksum", "finished_at",'
                ' "migration_name", "logs", "rolled_back_at", "started_at", "applied_steps_count")'
                " VALUES (%s, %s, %s, %s, NULL, NULL, %s, %s)",
                (
                    row.id,
                    row.checksum,
                    row.finished_at,
                    row.migration_name,
                    row.started_at,
                    row.applied_steps_count,
                ),
            )
    log.info("demo.schema_created", variant=variant, migrations=len(rows))


def create_app_database(
    admin_dsn: str, *, dbname: str = "privacy", owner: str = "gecko_app", password: str
) -> str:
    """Create a login role owning a new database (as the app's deploy user does).

    Returns the owner's DSN for that database. Idempotent for the role; the
    database must not exist yet.
    """
    with admin.connect(admin_dsn, application_name=_APP_NAME) as conn:
        role = conn.ident(owner)
        exists = conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,))
        verb = "ALTER" if exists else "CREATE"
        conn.execute(f"{verb} ROLE {role} LOGIN PASSWORD {conn.literal(password)}")
        conn.execute(f"CREATE DATABASE {conn.ident(dbname)} OWNER {role}")
    log.info("demo.database_created", database=dbname, owner=owner)
    return admin.dsn_replace(admin_dsn, dbname=dbname, user=owner, password=password)


def create_monitor_role(dsn: str, role: str = "gecko_monitor", *, password: str) -> None:
    """A least-privilege login role for the exporter.

    Membership in ``pg_monitor`` (statistics views of every session,
    pg_stat_statements, pgstattuple), CONNECT on this database, USAGE on
    ``public`` and SELECT on the app tables and ``_prisma_migrations``. No
    write, create or ownership privilege. Safe to run again (the password is
    reset). ``dsn`` must be a superuser's or a role with CREATEROLE and the
    grant option on these objects, connected to the app database.
    """
    with admin.connect(dsn, application_name=_APP_NAME) as conn, conn.transaction():
        name = conn.ident(role)
        exists = conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
        verb = "ALTER" if exists else "CREATE"
        conn.execute(
            f"{verb} ROLE {name} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
            f" NOBYPASSRLS PASSWORD {conn.literal(password)}"
        )
        conn.execute(f"GRANT pg_monitor TO {name}")
        database = str(conn.fetchval("SELECT current_database()"))
        conn.execute(f"GRANT CONNECT ON DATABASE {conn.ident(database)} TO {name}")
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {name}")
        tables = ", ".join(conn.ident("public", t) for t in (*APP_TABLES, MIGRATIONS_TABLE))
        conn.execute(f"GRANT SELECT ON {tables} TO {name}")
    log.info("demo.monitor_role_ready", role=role, database=database)


def ensure_extensions(dsn: str) -> frozenset[str]:
    """Create pg_stat_statements and pgstattuple where the server offers them.

    Needs a superuser (or the database owner for trusted extensions). A
    missing or failing extension is logged and skipped. Returns the names
    installed afterwards.
    """
    installed: set[str] = set()
    with admin.connect(dsn, application_name=_APP_NAME) as conn:
        available = {
            str(r[0])
            for r in conn.fetchall(
                "SELECT name FROM pg_available_extensions WHERE name = ANY(%s)",
                (list(OPTIONAL_EXTENSIONS),),
            )
        }
        for ext in OPTIONAL_EXTENSIONS:
            if ext not in available:
                log.warning("demo.extension_unavailable", extension=ext)
                continue
            try:
                conn.execute(f"CREATE EXTENSION IF NOT EXISTS {conn.ident(ext)}")
            except admin.AdminError as exc:
                log.warning("demo.extension_failed", extension=ext, error=str(exc))
                continue
            installed.add(ext)
    log.info("demo.extensions_ready", extensions=sorted(installed))
    return frozenset(installed)
