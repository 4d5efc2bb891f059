"""Database time of the statements probe's pg_stat_statements reads (target: < 20 ms per minute).

Issue 11: the statements probe reads pg_stat_statements for the stable ``gecko_statement_*``
series and the application's named statements (``gecko_app_query_*``) in one read per
interval (``showtext := false``), plus query texts (``showtext := true``) only to name
queryids it has not seen before, at most once per ``statements.text_refresh_seconds``.

Builds an embedded PostgreSQL 18 with the Gecko schema, ``--entries`` distinct statements in
pg_stat_statements (``pg_stat_statements.max`` raised so none is evicted) and app-like traffic
of the five named statements, then runs the real probe through the exporter's lanes as a
least-privilege role and prints the server execution time of its statements (from
pg_stat_statements, filtered on that role):

* first run: the one read plus the texts of every entry (classification from cold);
* steady run: the one read (every queryid known);
* a run after new statements appeared: the read plus the texts of the new queryids;
* per minute at the default intervals (statements every 60 s, texts at most every 600 s).

Usage: python benchmarks/statement_reads.py [--entries 5000] [--runs 10] [--scans 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import datetime

from benchmarks._harness import exporter_database
from exporter.config import DEFAULT_PROBES, StatementsSettings
from exporter.db.session import Database
from exporter.probes import app_queries
from exporter.probes.statements import StatementsProbe
from gecko_demo import admin
from gecko_demo.cluster import running_cluster
from gecko_demo.provision import provision_database

ROLE = "gecko_bench_monitor"
BATCH = 250

EXEC_MS = """
SELECT COALESCE(sum(s.total_exec_time), 0)::float8, COALESCE(sum(s.calls), 0)::bigint
FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = %s
"""
RESET_ROLE = "SELECT pg_stat_statements_reset((SELECT oid FROM pg_roles WHERE rolname = %s))"


def distinct_statement(i: int, salt: int = 0) -> str:
    """Statement ``i``: a parse tree of its own (13 operators chosen by the bits of ``i``).

    The comment makes the stored text about as long as an ORM statement's (~600 bytes).
    """
    ops = "".join("+" if (i >> k) & 1 else "-" for k in range(13))
    expr = "1" + "".join(f" {op} {k + 2}" for k, op in enumerate(ops))
    cols = ", ".join(f'"public"."Bench{salt}"."column_{k}_{i}"' for k in range(20))
    return f'SELECT {expr} AS "v{salt}", {salt} = {salt} AS "s" /* {cols} */'


def fill(dsn: str, count: int, salt: int = 0) -> None:
    with admin.connect(dsn, application_name="gecko-bench-fill") as conn:
        for start in range(0, count, BATCH):
            stop = min(start + BATCH, count)
            conn.run_script(";\n".join(distinct_statement(i, salt) for i in range(start, stop)))


def app_traffic(dsn: str, times: int) -> None:
    """The five named statements as the app sends them (prepared, bind parameters)."""
    with admin.connect(dsn, application_name="gecko-advisor-backend") as conn:
        scan_id, slug, url = conn.fetchone(
            'SELECT "id", "slug", "normalizedInput" FROM "Scan" WHERE "status" = %s LIMIT 1',
            ("done",),
        ) or ("", "", "")
        statements = [
            (app_queries.dedupe_lookup("public"), (url, "done", datetime(2000, 1, 1), 1, 0)),
            (app_queries.scan_by_slug("public"), (slug, 1, 0)),
            (app_queries.evidence_for_scan("public"), (scan_id, 0)),
            (app_queries.issues_for_scan("public"), (scan_id, 0)),
            (app_queries.recent_reports("public"), ("done", 10, 0)),
        ]
        for _ in range(times):
            for sql, params in statements:
                conn.fetchall(sql, params, prepare=True)


class Clock:
    """The probe's monotonic clock, moved by hand (text refresh without waiting 5 minutes)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def db_ms(
    db: Database, conn: admin.AdminConnection, probe: StatementsProbe, runs: int
) -> tuple[float, float]:
    """Server time per run (ms) of ``runs`` runs, and the median cycle (ms)."""
    conn.execute(RESET_ROLE, (ROLE,))
    cycles = []
    for _ in range(runs):
        started = time.perf_counter()
        async with db.lane(probe.lane).session(8.0) as session:
            await probe.collect(session, time.time())
        cycles.append((time.perf_counter() - started) * 1000)
    exec_ms, _calls = conn.fetchone(EXEC_MS, (ROLE,)) or (0.0, 0)
    return float(exec_ms) / runs, statistics.median(cycles)


async def run(monitor_dsn: str, admin_dsn: str, entries: int, runs: int) -> None:
    defaults = StatementsSettings()
    interval = DEFAULT_PROBES["statements"].interval_seconds
    clock = Clock()
    probe = StatementsProbe(
        defaults.top_n,
        retention_seconds=defaults.retention_seconds,
        max_series=defaults.max_series,
        text_refresh_seconds=defaults.text_refresh_seconds,
        clock=clock,
    )
    db = exporter_database(monitor_dsn)
    try:
        with admin.connect(admin_dsn, application_name="gecko-bench") as conn:
            async with db.lane(probe.lane).session(8.0) as session:  # connect first
                await session.fetch_one("SELECT 1")
            n = conn.fetchval("SELECT count(*) FROM pg_stat_statements")
            first_ms, first_cycle = await db_ms(db, conn, probe, 1)
            named = {k[0] for k, v in _identified(probe).items() if v}
            clock.now += interval
            steady_ms, steady_cycle = await db_ms(db, conn, probe, runs)
            # 100 new statements appear; the texts are read once text_refresh_seconds passed
            fill(admin_dsn, 100, salt=1)
            clock.now += defaults.text_refresh_seconds
            reads = probe.app.text_reads
            refresh_ms, refresh_cycle = await db_ms(db, conn, probe, 1)
            assert probe.app.text_reads == reads + 1, "the texts were not read"
    finally:
        await db.close()
    per_minute_steady = steady_ms * 60 / interval
    text_ms = max(0.0, refresh_ms - steady_ms)
    per_minute_worst = per_minute_steady + text_ms * 60 / defaults.text_refresh_seconds
    print(f"pg_stat_statements entries: {n} (target scenario: {entries} distinct statements)")
    print(f"app statements identified: {len(named)} of 5 ({', '.join(sorted(named))})")
    print(
        f"first run (read + texts of every entry): {first_ms:7.2f} ms db, {first_cycle:.0f} ms cycle"
    )
    print(
        f"steady run (one read):                   {steady_ms:7.2f} ms db, {steady_cycle:.0f} ms cycle"
    )
    print(
        f"run after 100 new queryids (+ texts):    {refresh_ms:7.2f} ms db, {refresh_cycle:.0f} ms cycle"
    )
    print(
        f"per minute at default intervals (statements every {interval:g} s, texts at most every "
        f"{defaults.text_refresh_seconds:g} s): {per_minute_steady:.2f} ms steady, "
        f"{per_minute_worst:.2f} ms with new queryids every refresh (target < 20)"
    )


def _identified(probe: StatementsProbe) -> dict[tuple[str, ...], float]:
    fam = probe.app.families()[0]
    return {s.labels: s.value for s in fam.samples}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--scans", type=int, default=2000)
    args = ap.parse_args()
    settings = {"pg_stat_statements.max": str(max(10000, 2 * args.entries))}
    with running_cluster(settings=settings) as cluster:
        db = provision_database(
            cluster.dsn(), dbname="privacy", scans=args.scans, monitor_role=ROLE
        )
        fill(db.superuser_dsn, args.entries)
        app_traffic(db.superuser_dsn, 20)
        asyncio.run(run(db.monitor_dsn, db.superuser_dsn, args.entries, args.runs))


if __name__ == "__main__":
    main()
