"""Database execution time used by the exporter's own queries (target: < 100 ms per minute).

Measured with pg_stat_statements filtered on the exporter's role, at default probe
intervals, while an app-like workload runs.

Usage: python benchmarks/db_time.py [--minutes 3] [--scans 20000]
"""

from __future__ import annotations

import argparse
import time

from benchmarks._harness import MONITOR_ROLE, exporter, gecko_database
from gecko_demo import admin
from gecko_demo.workload import Workload

TOTALS = """
SELECT count(*) AS statements, COALESCE(sum(calls), 0) AS calls,
       COALESCE(sum(total_exec_time), 0) AS exec_ms
FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = %s
"""
TOP = """
SELECT calls, round(total_exec_time::numeric, 2) AS exec_ms, left(regexp_replace(query, '\\s+', ' ', 'g'), 90) AS q
FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = %s
ORDER BY total_exec_time DESC LIMIT 8
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=3)
    ap.add_argument("--scans", type=int, default=20000)
    args = ap.parse_args()
    with gecko_database(args.scans) as db:
        workload = Workload(db.admin_dsn)
        workload.start()
        try:
            with (
                exporter(db.monitor_dsn),
                admin.connect(db.admin_dsn, application_name="bench") as c,
            ):
                time.sleep(10)  # warm-up: first connections, sampling, prepared statements
                c.execute("SELECT pg_stat_statements_reset()")
                started = time.monotonic()
                time.sleep(args.minutes * 60)
                minutes = (time.monotonic() - started) / 60
                stmts, calls, exec_ms = c.fetchone(TOTALS, (MONITOR_ROLE,)) or (0, 0, 0)
                top = c.fetchall(TOP, (MONITOR_ROLE,))
        finally:
            workload.stop(10)
    print(f"exporter role: {calls} calls of {stmts} statements in {minutes:.1f} min")
    print(f"database execution time: {float(exec_ms) / minutes:.1f} ms per minute (target < 100)")
    for row in top:
        print(f"  {row[0]:>6} calls {row[1]:>9} ms  {row[2]}")


if __name__ == "__main__":
    main()
