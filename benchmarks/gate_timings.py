"""Wall time of ``gecko-exporter preflight`` and ``verify`` on the demo-sized database.

Builds an embedded PostgreSQL 18 cluster with the demo's data (``--scans``,
20 000 by default, incremental schema as the demo), then runs the commands as
the user does (``python -m exporter …`` as the least-privilege monitor role,
interpreter start included) ``--runs`` times each and prints median and max
wall time with the verdict/exit code. Target: under 5 s each.

preflight runs on the demo's example migrations (gecko_demo/migrations: the
risky and the safe rewrite of ``phase1_schema`` and ``backend_indices``), once
more with ``--baseline``; verify runs with the default 20 latency runs and
once against the baseline.

Usage: python -m benchmarks.gate_timings [--scans 20000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._harness import gecko_database

MIGRATIONS = Path(__file__).resolve().parent.parent / "gecko_demo" / "migrations"


def timed(args: list[str], env: dict[str, str]) -> tuple[float, int]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if proc.returncode == 2:
        raise RuntimeError(f"{' '.join(args[:2])}: {proc.stderr.strip()}")
    return elapsed, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cases = [
        ("preflight risky/phase1_schema", ["preflight", str(MIGRATIONS / "risky" / "20250919050000_phase1_schema")]),
        ("preflight risky (both)", ["preflight", str(MIGRATIONS / "risky")]),
        ("preflight safe (all)", ["preflight", str(MIGRATIONS / "safe")]),
    ]  # fmt: skip
    with gecko_database(args.scans) as db, tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GECKO_")}
        env["GECKO_DATABASE_URL"] = db.monitor_dsn
        baseline = Path(tmp) / "baseline.json"
        cases += [
            ("preflight --baseline", [*cases[2][1], "--baseline", str(baseline)]),
            ("verify", ["verify"]),
            ("verify --baseline", ["verify", "--baseline", str(baseline)]),
        ]
        print(f"demo database: {args.scans} scans, PostgreSQL 18, {args.runs} runs per command")
        print(f"{'command':34} {'median':>8} {'max':>8}  exit codes")
        for name, cmd in cases:
            runs = [timed(cmd, env) for _ in range(args.runs)]
            times = [t for t, _ in runs]
            codes = sorted({c for _, c in runs})
            print(
                f"{name:34} {statistics.median(times):7.2f}s {max(times):7.2f}s  "
                f"{','.join(map(str, codes))}"
            )


if __name__ == "__main__":
    main()
