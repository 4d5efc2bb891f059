"""The metric families each probe exposes: the metric contract, declared without I/O.

:meth:`exporter.metrics.StoreCollector.describe` declares these for the probes the
daemon runs, so a registry catches a name collision at registration. A test runs
every probe against a real server and checks that what they emit is exactly what
is declared here (``tests/health/test_described.py``): a probe that gains a family
adds it here and to docs/metrics.md.
"""

from __future__ import annotations

from exporter.samples import Kind

#: families that are histograms (every other name ending in ``_total`` is a counter)
_HISTOGRAMS = frozenset(
    {"gecko_scan_lookup_duration_seconds", "gecko_report_generation_duration_seconds"}
)


def _kinds(*names: str) -> tuple[tuple[str, Kind], ...]:
    out: list[tuple[str, Kind]] = []
    for name in names:
        kind: Kind = (
            "histogram"
            if name in _HISTOGRAMS
            else "counter"
            if name.endswith("_total")
            else "gauge"
        )
        out.append((name, kind))
    return tuple(out)


#: probe name -> (family name, type) of every family the probe can emit
PROBE_FAMILIES: dict[str, tuple[tuple[str, Kind], ...]] = {
    "server": _kinds(
        "gecko_postgres_in_recovery",
        "gecko_postgres_server_info",
        "gecko_postgres_start_time_seconds",
    ),
    "connections": _kinds(
        "gecko_connections",
        "gecko_max_connections",
        "gecko_connection_pool_connections",
        "gecko_connection_pool_connections_in_use",
        "gecko_connection_pool_instances",
        "gecko_connection_pool_size",
        "gecko_connection_pool_utilization_ratio",
    ),
    "slow_queries": _kinds(
        "gecko_longest_active_query_seconds",
        "gecko_longest_idle_in_transaction_seconds",
        "gecko_slow_queries_running",
        "gecko_maintenance_running",
        "gecko_maintenance_longest_seconds",
        "gecko_slow_queries_total",
        "gecko_slow_query_threshold_seconds",
    ),
    "scan_lookup": _kinds(
        "gecko_scan_lookup_last_duration_seconds",
        "gecko_scan_lookup_duration_seconds",
        "gecko_scan_lookup_hits_total",
    ),
    "report": _kinds(
        "gecko_report_rows",
        "gecko_report_last_duration_seconds",
        "gecko_report_generation_duration_seconds",
        "gecko_report_rows_fetched_total",
    ),
    "indexes": _kinds(
        "gecko_index_present",
        "gecko_index_valid",
        "gecko_index_size_bytes",
        "gecko_index_scans_total",
    ),
    "plans": _kinds("gecko_query_plan_uses_index", "gecko_query_plan_changes_total"),
    "tables": _kinds(
        "gecko_tables",
        "gecko_tables_exported",
        "gecko_table_size_bytes",
        "gecko_table_live_tuples",
        "gecko_table_dead_tuples",
        "gecko_table_dead_tuple_ratio",
        "gecko_table_seq_scans_total",
        "gecko_table_seq_tuples_read_total",
        "gecko_table_index_scans_total",
        "gecko_table_index_tuples_fetched_total",
        "gecko_table_heap_blocks_hit_total",
        "gecko_table_heap_blocks_read_total",
        "gecko_table_index_blocks_hit_total",
        "gecko_table_index_blocks_read_total",
        "gecko_table_last_autovacuum_timestamp_seconds",
        "gecko_table_last_autoanalyze_timestamp_seconds",
    ),
    "database": _kinds("gecko_database_blocks_hit_total", "gecko_database_blocks_read_total"),
    "bloat": _kinds(
        "gecko_table_bloat_bytes",
        "gecko_table_bloat_ratio",
        "gecko_table_bloat_pgstattuple_tables",
    ),
    "statements": _kinds(
        "gecko_statements_available",
        "gecko_statements_tracked",
        "gecko_statement_calls_total",
        "gecko_statement_exec_time_seconds_total",
        "gecko_statement_mean_exec_time_seconds",
        "gecko_statement_max_exec_time_seconds",
        "gecko_statement_interval_exec_time_seconds",
        "gecko_app_query_identified",
        "gecko_app_query_calls_total",
        "gecko_app_query_exec_time_seconds_total",
        "gecko_app_query_rows_total",
    ),
    "locks": _kinds(
        "gecko_lock_waiting_backends",
        "gecko_lock_longest_wait_seconds",
        "gecko_lock_access_exclusive_waiting",
        "gecko_lock_waiting_behind_access_exclusive",
    ),
    "migrations": _kinds(
        "gecko_migrations_table_present",
        "gecko_migrations_applied",
        "gecko_migrations_failed",
        "gecko_migrations_rolled_back",
        "gecko_migrations_unfinished",
        "gecko_migration_in_progress",
        "gecko_migration_last_finished_timestamp_seconds",
        "gecko_migration_lock_waiters",
        "gecko_invalid_indexes",
        "gecko_invalid_index",
        "gecko_index_builds_in_progress",
        "gecko_index_build_progress_ratio",
    ),
    "pgbouncer": _kinds(
        "gecko_pgbouncer_up",
        "gecko_pgbouncer_pools",
        "gecko_pgbouncer_clients",
        "gecko_pgbouncer_servers",
        "gecko_pgbouncer_waiting_clients",
        "gecko_pgbouncer_max_wait_seconds",
        "gecko_pgbouncer_pool_size",
        "gecko_connection_pool_utilization_ratio",
        "gecko_connection_pool_connections_in_use",
        "gecko_connection_pool_size",
    ),
}
