"""Critical indexes and plan checks, provoked on PostgreSQL 18 and 15."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from exporter.probes.indexes import DEFAULT_CRITICAL_INDEXES, IndexesProbe
from exporter.probes.migrations import MigrationsProbe
from exporter.probes.plans import PlansProbe
from exporter.probes.sampling import RecentScanSampler
from gecko_demo import admin
from tests.health.conftest import HealthDb, build_health_db, probe_runner, series, value
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

DEDUPE_DDL = 'CREATE INDEX "Scan_dedupe_lookup_idx" ON "Scan"("normalizedInput", "status", "finishedAt" DESC)'
EVIDENCE_DDL = 'CREATE INDEX "Evidence_scan_covering_idx" ON "Evidence"("scanId", "createdAt")'


def plans_probe() -> PlansProbe:
    return PlansProbe("public", RecentScanSampler("public", sample_size=1, refresh_seconds=300))


def test_critical_indexes_present_valid_sized_and_scanned(health_db: HealthDb) -> None:
    probe = IndexesProbe("public", DEFAULT_CRITICAL_INDEXES)
    with probe_runner(health_db.monitor_dsn) as runner:
        fams = runner.collect(probe)
        assert series(fams, "gecko_index_present") == {(n,): 1.0 for n in DEFAULT_CRITICAL_INDEXES}
        assert series(fams, "gecko_index_valid") == {(n,): 1.0 for n in DEFAULT_CRITICAL_INDEXES}
        sizes = series(fams, "gecko_index_size_bytes")
        assert all(size >= 8192 for size in sizes.values()) and len(sizes) == 5
        # 60k scans: the dedupe index is far larger than one page
        assert sizes[("Scan_dedupe_lookup_idx",)] > 1_000_000
        before = value(fams, "gecko_index_scans_total", "Scan_slug_key")
        assert before is not None
        slug = health_db.fetchval('SELECT "slug" FROM "Scan" ORDER BY "createdAt" DESC LIMIT 1')
        with health_db.connect() as conn:
            for _ in range(3):
                conn.execute('SELECT "id" FROM "Scan" WHERE "slug" = %s', (slug,))
        wait_until(
            lambda: (
                (value(runner.collect(probe), "gecko_index_scans_total", "Scan_slug_key") or 0)
                >= before + 3
            ),
            timeout=10,
            message="index scans of Scan_slug_key counted",
        )


def test_failed_concurrent_index_build_leaves_an_invalid_index(health_db: HealthDb) -> None:
    """A unique CIC over duplicate scanIds fails and leaves an INVALID index behind."""
    indexes = IndexesProbe("public", DEFAULT_CRITICAL_INDEXES)
    migrations = MigrationsProbe("public", ["public"])
    with probe_runner(health_db.monitor_dsn) as runner:
        assert value(runner.collect(migrations), "gecko_invalid_indexes") == 0
        try:
            health_db.execute('DROP INDEX "Evidence_scan_covering_idx"')
            with pytest.raises(admin.AdminError) as failed:
                health_db.execute(
                    'CREATE UNIQUE INDEX CONCURRENTLY "Evidence_scan_covering_idx" '
                    'ON "Evidence"("scanId")'
                )
            assert failed.value.is_unique_violation
            fams = runner.collect(indexes)
            assert value(fams, "gecko_index_present", "Evidence_scan_covering_idx") == 1
            assert value(fams, "gecko_index_valid", "Evidence_scan_covering_idx") == 0
            assert value(fams, "gecko_index_valid", "Issue_scan_covering_idx") == 1
            with capture_logs() as logs:
                fams = runner.collect(migrations)
                runner.collect(migrations)
            assert value(fams, "gecko_invalid_indexes") == 1
            assert series(fams, "gecko_invalid_index") == {
                ("Evidence_scan_covering_idx", "Evidence"): 1.0
            }
            detected = [e for e in logs if e["event"] == "invalid_index_detected"]
            assert [e["index"] for e in detected] == ["Evidence_scan_covering_idx"]
        finally:
            health_db.execute('DROP INDEX IF EXISTS "Evidence_scan_covering_idx"')
            health_db.execute(EVIDENCE_DDL)
        fams = runner.collect(migrations)
        assert value(fams, "gecko_invalid_indexes") == 0
        assert (
            value(runner.collect(indexes), "gecko_index_valid", "Evidence_scan_covering_idx") == 1
        )


def test_dropping_the_dedupe_index_flips_the_plan_check(health_db: HealthDb) -> None:
    assert health_db.fetchval('SELECT count(*) FROM "Scan"') >= 50_000  # type: ignore[operator]
    probe = plans_probe()
    key = ("scan_lookup", "custom", "Scan_dedupe_lookup_idx")
    generic = ("scan_lookup", "generic", "Scan_dedupe_lookup_idx")
    with probe_runner(health_db.monitor_dsn) as runner:
        fams = runner.collect(probe)
        uses = series(fams, "gecko_query_plan_uses_index")
        assert uses[key] == 1 and uses[generic] == 1
        assert uses[("report_scan", "custom", "Scan_slug_key")] == 1
        assert uses[("report_issues", "generic", "Issue_scan_covering_idx")] == 1
        assert set(series(fams, "gecko_query_plan_changes_total").values()) == {0.0}
        try:
            health_db.execute('DROP INDEX "Scan_dedupe_lookup_idx"')
            with capture_logs() as logs:
                fams = runner.collect(probe)
                again = runner.collect(probe)
            uses = series(fams, "gecko_query_plan_uses_index")
            assert uses[key] == 0 and uses[generic] == 0
            changes = series(again, "gecko_query_plan_changes_total")
            assert changes[("scan_lookup", "custom")] == 1
            assert changes[("scan_lookup", "generic")] == 1
            assert changes[("report_scan", "custom")] == 0
            events = [e for e in logs if e["event"] == "query_plan_changed"]
            lookup = sorted(
                (e["plan"], e["old_shape"], e["new_shape"])
                for e in events
                if e["query"] == "scan_lookup"
            )
            assert [plan for plan, _, _ in lookup] == ["custom", "generic"]  # once per change
            for _, old, new in lookup:
                assert "Scan_dedupe_lookup_idx" in old and "Scan_dedupe_lookup_idx" not in new
        finally:
            health_db.execute('DROP INDEX IF EXISTS "Scan_dedupe_lookup_idx"')
            health_db.execute(DEDUPE_DDL)
        fams = runner.collect(probe)
        assert series(fams, "gecko_query_plan_uses_index")[key] == 1
        assert series(fams, "gecko_query_plan_changes_total")[("scan_lookup", "custom")] == 2


def test_generic_plan_cannot_use_the_partial_index(health_db: HealthDb) -> None:
    """Incrementally migrated database: the dedupe index is partial on status = 'done'.

    Prisma binds 'done' as $2, so the generic plan (what a prepared statement
    switches to) cannot prove the predicate, while the custom plan can.
    """
    incremental = build_health_db(health_db.cluster, variant="incremental")
    try:
        with probe_runner(incremental.monitor_dsn) as runner:
            uses = series(runner.collect(plans_probe()), "gecko_query_plan_uses_index")
        assert uses[("scan_lookup", "custom", "Scan_dedupe_lookup_idx")] == 1
        assert uses[("scan_lookup", "generic", "Scan_dedupe_lookup_idx")] == 0
        assert uses[("report_scan", "generic", "Scan_slug_key")] == 1
    finally:
        with admin.connect(health_db.cluster.dsn(), application_name="gecko-health-tests") as c:
            c.execute(f"DROP DATABASE {c.ident(incremental.dbname)} WITH (FORCE)")
