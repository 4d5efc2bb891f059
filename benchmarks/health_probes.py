"""Series count, cycle time and database time of every probe with 10 000 tables.

Builds an embedded PostgreSQL 18 cluster with the Gecko schema and data plus
``--tables`` extra tables in the app schema, then runs every probe (headline
and health) ``--runs`` times through the exporter's real lanes, as the
least-privilege monitor role, and prints per probe:

* series: samples the probe emits (persistent families included),
* cycle: wall time of one run (median and max),
* db/run: server execution time per run, from pg_stat_statements filtered on
  the monitor role (reset before each probe),
* db/min: db/run x runs per minute at the default interval.

Usage: python benchmarks/health_probes.py [--tables 10000] [--scans 20000] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
from dataclasses import dataclass

from benchmarks._harness import exporter_database
from exporter.config import Config
from exporter.db.session import Database
from exporter.probes.base import Probe
from exporter.probes.registry import build_probes
from exporter.settings import load_config
from gecko_demo import admin, schema, seed
from gecko_demo.cluster import running_cluster

ROLE = "gecko_bench_monitor"
BATCH = 250

CREATE_BATCH = """
DO $$ BEGIN
  FOR i IN {start}..{stop} LOOP
    EXECUTE format('CREATE TABLE public.%I (id bigint PRIMARY KEY, v text, n int)',
                   'bench_t' || lpad(i::text, 5, '0'));
  END LOOP;
END $$
"""

EXEC_MS = """
SELECT COALESCE(sum(s.total_exec_time), 0)::float8, COALESCE(sum(s.calls), 0)::bigint
FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = %s
"""


@dataclass
class Result:
    name: str
    lane: str
    interval: float
    series: int
    cycles: list[float]
    db_ms_per_run: float
    calls_per_run: float

    @property
    def db_ms_per_minute(self) -> float:
        return self.db_ms_per_run * 60 / self.interval


def build(scans: int, tables: int, dsn: str) -> None:
    started = time.monotonic()
    schema.create_schema(dsn, "fresh")
    schema.ensure_extensions(dsn)
    seed.load_data(dsn, scans=scans, progress=False)
    with admin.connect(dsn, application_name="gecko-bench") as conn:
        for start in range(1, tables + 1, BATCH):
            conn.run_script(CREATE_BATCH.format(start=start, stop=min(start + BATCH - 1, tables)))
        n = conn.fetchval(
            "SELECT count(*) FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
        )
    print(f"built: {n} tables in public, {scans} scans, {time.monotonic() - started:.0f} s")


def count_series(families: list) -> int:  # type: ignore[type-arg]
    return sum(len(f.samples) + len(f.histograms) for f in families)


async def measure(
    db: Database, admin_conn: admin.AdminConnection, probe: Probe, interval: float, runs: int
) -> Result:
    lane = db.lane(probe.lane)
    families: list = []  # type: ignore[type-arg]
    async with lane.session(8.0) as session:  # warm-up: connect, samplers, prepared statements
        await probe.collect(session, time.time())
    admin_conn.execute("SELECT pg_stat_statements_reset()")
    cycles: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        async with lane.session(8.0) as session:
            families = await probe.collect(session, time.time())
        cycles.append(time.perf_counter() - started)
    exec_ms, calls = admin_conn.fetchone(EXEC_MS, (ROLE,)) or (0.0, 0)
    return Result(
        probe.name,
        probe.lane,
        interval,
        count_series(families + probe.persistent()),
        cycles,
        float(exec_ms) / runs,
        float(calls) / runs,
    )


async def run_all(monitor_dsn: str, admin_dsn: str, runs: int, settings: Config) -> list[Result]:
    db = exporter_database(monitor_dsn)
    cadence = settings.probe_settings()
    results = []
    try:
        with admin.connect(admin_dsn, application_name="gecko-bench") as conn:
            for probe in build_probes(settings):
                interval = cadence[probe.name].interval_seconds
                results.append(await measure(db, conn, probe, interval, runs))
    finally:
        await db.close()
    return results


def report(results: list[Result], title: str) -> None:
    print(f"\n{title}")
    print(f"{'probe':<13}{'lane':<10}{'every':>7}{'series':>8}{'cycle med':>11}{'cycle max':>11}"
          f"{'stmts/run':>10}{'db/run':>10}{'db/min':>10}")  # fmt: skip
    for r in results:
        print(
            f"{r.name:<13}{r.lane:<10}{r.interval:>6.0f}s{r.series:>8}"
            f"{statistics.median(r.cycles) * 1000:>9.1f}ms{max(r.cycles) * 1000:>9.1f}ms"
            f"{r.calls_per_run:>10.1f}{r.db_ms_per_run:>8.2f}ms{r.db_ms_per_minute:>8.2f}ms"
        )
    health = [r for r in results if r.name not in {"server", "connections", "slow_queries",
                                                    "scan_lookup", "report"}]  # fmt: skip
    for label, group in (("health probes", health), ("all probes", results)):
        series = sum(r.series for r in group)
        cycle = sum(statistics.median(r.cycles) for r in group) * 1000
        per_min = sum(r.db_ms_per_minute for r in group)
        print(
            f"{label}: {series} series, one cycle of every probe {cycle:.0f} ms (sequential), "
            f"database time {per_min:.1f} ms per minute at default intervals"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tables", type=int, default=10_000)
    ap.add_argument("--scans", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with running_cluster() as cluster:
        with admin.connect(cluster.dsn(), application_name="gecko-bench") as conn:
            conn.execute("CREATE DATABASE privacy")
        dsn = cluster.dsn("privacy")
        build(args.scans, args.tables, dsn)
        password = secrets.token_urlsafe(16)
        schema.create_monitor_role(dsn, ROLE, password=password)
        monitor = cluster.dsn("privacy", ROLE, password)
        for title, overrides in (
            ("defaults (tables.max_tables 30, catalog bloat estimate)", {}),
            ("bloat.pgstattuple: true", {"bloat": {"pgstattuple": True}}),
        ):
            settings = load_config(overrides={"database_url": monitor, **overrides})
            results = asyncio.run(run_all(monitor, dsn, args.runs, settings))
            report(results, title)


if __name__ == "__main__":
    main()
