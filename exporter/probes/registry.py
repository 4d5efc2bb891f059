"""Which probes exist and how they are built from the settings."""

from __future__ import annotations

from collections.abc import Callable

from exporter.config import Config
from exporter.probes.base import Probe
from exporter.probes.bloat import BloatProbe
from exporter.probes.connections import ConnectionsProbe, PoolMatcher
from exporter.probes.database import DatabaseProbe
from exporter.probes.indexes import IndexesProbe
from exporter.probes.latency import ReportProbe, ScanLookupProbe
from exporter.probes.locks import LocksProbe
from exporter.probes.migrations import MigrationsProbe
from exporter.probes.pgbouncer import PgBouncerProbe
from exporter.probes.plans import PlansProbe
from exporter.probes.sampling import RecentScanSampler
from exporter.probes.server import ServerProbe
from exporter.probes.slow_queries import MaintenanceMatcher, SlowQueriesProbe
from exporter.probes.statements import StatementsProbe
from exporter.probes.tables import TablesProbe


def build_pgbouncer_probe(settings: Config, up: Callable[[], bool]) -> PgBouncerProbe:
    """The PgBouncer admin console probe (scheduled on its own lane, only when configured).

    ``up``: whether the console answered recently (its lane's health).
    """
    return PgBouncerProbe(
        up,
        max_pools=settings.pgbouncer.max_pools,
        max_applications=settings.pgbouncer.max_applications,
    )


def build_probes(settings: Config) -> list[Probe]:
    """Every probe (enabled or not), in a stable order."""
    lookup = settings.scan_lookup
    sampler = RecentScanSampler(
        settings.app_schema,
        sample_size=lookup.sample_size,
        refresh_seconds=lookup.sample_refresh_seconds,
        configured_inputs=lookup.inputs,
    )
    pools = [
        PoolMatcher(p.name, p.size, application_name=p.application_name, usename=p.usename)
        for p in settings.pools
    ]
    return [
        ServerProbe(),
        ConnectionsProbe(pools),
        SlowQueriesProbe(
            settings.slow_query_threshold_seconds,
            own_application_name=settings.application_name,
            log_text=settings.slow_query_log_text,
            text_max_length=settings.slow_query_text_max_length,
            databases=settings.slow_query_databases,
            maintenance=MaintenanceMatcher.of(
                settings.maintenance.roles, settings.maintenance.application_names
            ),
        ),
        ScanLookupProbe(settings.app_schema, sampler, window_seconds=lookup.window_seconds),
        ReportProbe(settings.app_schema, sampler),
        *build_health_probes(settings),
    ]


def build_health_probes(settings: Config) -> list[Probe]:
    """The database health and migration-safety probes (issue #3)."""
    schema = settings.app_schema
    schemas = settings.table_schemas()
    lookup = settings.scan_lookup
    # its own one-scan sample: the plan check explains with the most recent done scan
    plan_sampler = RecentScanSampler(
        schema,
        sample_size=1,
        refresh_seconds=lookup.sample_refresh_seconds,
        configured_inputs=lookup.inputs,
    )
    tables, bloat, migrations = settings.tables, settings.bloat, settings.migrations
    return [
        IndexesProbe(schema, settings.critical_indexes),
        PlansProbe(schema, plan_sampler, window_seconds=lookup.window_seconds),
        TablesProbe(schemas, max_tables=tables.max_tables, default_schema=schema),
        DatabaseProbe(),
        BloatProbe(
            schemas,
            max_tables=tables.max_tables,
            default_schema=schema,
            pgstattuple=bloat.pgstattuple,
            pgstattuple_max_table_bytes=bloat.pgstattuple_max_table_bytes,
        ),
        StatementsProbe(
            settings.statements.top_n,
            exclude_own_role=settings.statements.exclude_own_role,
            retention_seconds=settings.statements.retention_seconds,
            max_series=settings.statements.max_series,
            app_schema=schema,
            text_refresh_seconds=settings.statements.text_refresh_seconds,
        ),
        LocksProbe(settings.application_name),
        MigrationsProbe(
            schema,
            schemas,
            table=migrations.table,
            advisory_lock_key=migrations.advisory_lock_key,
            max_invalid_indexes=migrations.max_invalid_indexes,
            max_index_builds=migrations.max_index_builds,
        ),
    ]
