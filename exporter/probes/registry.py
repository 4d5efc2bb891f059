"""Which probes exist and how they are built from the settings."""

from __future__ import annotations

from exporter.probes.base import Probe
from exporter.probes.connections import ConnectionsProbe, PoolMatcher
from exporter.probes.latency import ReportProbe, ScanLookupProbe
from exporter.probes.sampling import RecentScanSampler
from exporter.probes.server import ServerProbe
from exporter.probes.slow_queries import SlowQueriesProbe
from exporter.settings import Settings


def build_probes(settings: Settings) -> list[Probe]:
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
        ),
        ScanLookupProbe(settings.app_schema, sampler, window_seconds=lookup.window_seconds),
        ReportProbe(settings.app_schema, sampler),
    ]
