"""Per-table scans, cache hits, sizes, dead tuples and bloat on a real server."""

from __future__ import annotations

import pytest

from exporter.probes.bloat import BloatProbe
from exporter.probes.database import DatabaseProbe
from exporter.probes.tables import TablesProbe
from exporter.samples import Family
from tests.health.conftest import MONITOR_ROLE, HealthDb, probe_runner, series, value
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

APP_TABLES = 10  # nine app tables and _prisma_migrations


def test_scan_counters_sizes_and_cache_hits(health_db: HealthDb) -> None:
    tables = TablesProbe(["public"], max_tables=30, default_schema="public")
    database = DatabaseProbe()
    with probe_runner(health_db.monitor_dsn) as runner:
        fams = runner.collect(tables)
        assert value(fams, "gecko_tables") == APP_TABLES
        assert value(fams, "gecko_tables_exported") == APP_TABLES
        assert (value(fams, "gecko_table_size_bytes", "Scan") or 0) > 5_000_000
        assert (value(fams, "gecko_table_live_tuples", "Scan") or 0) >= 60_000
        seq_before = value(fams, "gecko_table_seq_scans_total", "Scan") or 0
        read_before = value(fams, "gecko_table_seq_tuples_read_total", "Scan") or 0
        idx_before = value(fams, "gecko_table_index_scans_total", "Scan") or 0
        hit_before = value(runner.collect(database), "gecko_database_blocks_hit_total") or 0
        slug = health_db.fetchval('SELECT "slug" FROM "Scan" LIMIT 1')
        with health_db.connect() as conn:
            conn.execute("SET max_parallel_workers_per_gather = 0")
            conn.execute('SELECT count(*) FROM "Scan" WHERE "input" LIKE %s', ("%no-such%",))
            conn.execute('SELECT "id" FROM "Scan" WHERE "slug" = %s', (slug,))

        def counted() -> bool:
            fams = runner.collect(tables)
            return (
                (value(fams, "gecko_table_seq_scans_total", "Scan") or 0) >= seq_before + 1
                and (value(fams, "gecko_table_seq_tuples_read_total", "Scan") or 0)
                >= read_before + 60_000
                and (value(fams, "gecko_table_index_scans_total", "Scan") or 0) >= idx_before + 1
            )

        wait_until(counted, timeout=10, message="scans of Scan counted")
        fams = runner.collect(tables)
        heap_hits = value(fams, "gecko_table_heap_blocks_hit_total", "Scan") or 0
        heap_reads = value(fams, "gecko_table_heap_blocks_read_total", "Scan") or 0
        assert heap_hits + heap_reads > 600  # the sequential scan touched every page
        assert (value(fams, "gecko_table_index_blocks_hit_total", "Scan") or 0) > 0
        wait_until(
            lambda: (
                (value(runner.collect(database), "gecko_database_blocks_hit_total") or 0)
                > hit_before
            ),
            timeout=10,
            message="database buffer hits counted",
        )
        assert (value(runner.collect(database), "gecko_database_blocks_read_total") or 0) >= 0


def runner_families(dsn: str, probe: TablesProbe) -> list[Family]:
    with probe_runner(dsn) as runner:
        return runner.collect(probe)


def test_series_stay_bounded_with_many_tables(health_db: HealthDb) -> None:
    tables = TablesProbe(["public", "health_bulk"], max_tables=12, default_schema="public")
    bloat = BloatProbe(["public", "health_bulk"], max_tables=12, default_schema="public")
    try:
        with health_db.connect() as conn:
            conn.execute("CREATE SCHEMA health_bulk")
            conn.run_script(
                "DO $$ BEGIN FOR i IN 1..40 LOOP "
                "EXECUTE format('CREATE TABLE health_bulk.t%s (id int PRIMARY KEY, v text)', i); "
                "END LOOP; END $$"
            )
            conn.execute(
                "CREATE TABLE health_bulk.big AS SELECT g AS id FROM generate_series(1, 500000) g"
            )
            conn.execute("ANALYZE health_bulk.big")
        with probe_runner(health_db.monitor_dsn) as runner:
            fams = runner.collect(tables) + runner.collect(bloat)
        assert value(fams, "gecko_tables") == APP_TABLES + 41
        assert value(fams, "gecko_tables_exported") == 12
        per_table = [f for f in fams if "table" in f.labelnames]
        assert per_table and all(len(f.samples) <= 12 for f in per_table)
        sizes = series(fams, "gecko_table_size_bytes")
        # the largest tables win (other schemas prefixed), then ties by name: stable sets
        for label in ("health_bulk.big", "Scan", "Evidence", "Issue"):
            assert (label,) in sizes
        again = runner_families(health_db.monitor_dsn, tables)
        assert series(again, "gecko_table_size_bytes").keys() == sizes.keys()
    finally:
        health_db.execute("DROP SCHEMA IF EXISTS health_bulk CASCADE")


@pytest.mark.parametrize("pgstattuple", [False, True], ids=["catalog", "pgstattuple"])
def test_bloat_after_rewriting_every_row(health_db: HealthDb, pgstattuple: bool) -> None:
    table = f"HealthBloat_{'x' if pgstattuple else 'c'}"
    probe = BloatProbe(["public"], max_tables=30, default_schema="public", pgstattuple=pgstattuple)
    tables = TablesProbe(["public"], max_tables=30, default_schema="public")
    assert probe.lane == ("app" if pgstattuple else "catalog")
    try:
        with health_db.connect() as conn:
            conn.execute(
                f'CREATE TABLE "{table}" (id int PRIMARY KEY, payload text) '
                "WITH (autovacuum_enabled = false)"
            )
            conn.execute(f'GRANT SELECT ON "{table}" TO {MONITOR_ROLE}')
            conn.execute(
                f'INSERT INTO "{table}" SELECT g, repeat(md5(g::text), 3) '
                "FROM generate_series(1, 20000) g"
            )
            conn.execute(f'ANALYZE "{table}"')
        with probe_runner(health_db.monitor_dsn) as runner:
            fams = runner.collect(probe)
            assert (value(fams, "gecko_table_bloat_ratio", table) or 0) < 0.2
            heaps = health_db.fetchval(
                "SELECT count(*) FROM pg_class WHERE relkind = 'r' "
                "AND relnamespace = 'public'::regnamespace"
            )
            measured = value(fams, "gecko_table_bloat_pgstattuple_tables")
            assert measured == (heaps if pgstattuple else 0)
            with health_db.connect() as conn:
                for _ in range(2):  # two versions of every row become dead
                    conn.execute(f'UPDATE "{table}" SET payload = upper(payload)')
                conn.execute(f'ANALYZE "{table}"')
            fams = runner.collect(probe)
            ratio = value(fams, "gecko_table_bloat_ratio", table) or 0
            wasted = value(fams, "gecko_table_bloat_bytes", table) or 0
            assert 0.5 < ratio <= 1
            size = health_db.fetchval(f"SELECT pg_relation_size('\"{table}\"')")
            assert 0.4 * size < wasted <= size  # type: ignore[operator]
            # the same churn seen as dead tuples
            wait_until(
                lambda: (
                    (value(runner.collect(tables), "gecko_table_dead_tuple_ratio", table) or 0)
                    > 0.5
                ),
                timeout=10,
                message="dead tuples counted",
            )
    finally:
        health_db.execute(f'DROP TABLE IF EXISTS "{table}"')
