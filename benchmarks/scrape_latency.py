"""/metrics latency under concurrent scrapes while the probes run.

Target (issue 12): with 4 connections back to back, p50 <= 0.5 ms and p99 <= 5 ms.

The exporter runs on an embedded server with 20 000 scans and the app-like
workload. Two clients measure it:

* ``wrk`` (Debian package ``wrk``; skipped when absent): back-to-back requests on
  1 and ``--scrapers`` connections — a saturation test, far above any real
  Prometheus load;
* a Python client: ``--scrapers`` threads, each pausing ``--pause`` seconds
  between scrapes (the Python client's own overhead is included).

Usage: python -m benchmarks.scrape_latency [--seconds 20] [--scrapers 4] [--pause 0.05]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import threading
import time
import urllib.request

from benchmarks._harness import exporter, gecko_database
from benchmarks.cpu_cost import PROMETHEUS_HEADERS
from gecko_demo.workload import Workload


def python_client(url: str, seconds: float, scrapers: int, pause: float) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def scrape() -> None:
        mine = []
        while time.monotonic() < stop:
            t = time.perf_counter()
            with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
                resp.read()
            mine.append(time.perf_counter() - t)
            time.sleep(pause)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=scrape) for _ in range(scrapers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def wrk_client(url: str, seconds: float, connections: int, *, prometheus: bool = False) -> str:
    headers = [a for k, v in PROMETHEUS_HEADERS.items() for a in ("-H", f"{k}: {v}")]
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--latency",
         *(headers if prometheus else []), url + "/metrics"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout  # fmt: skip
    pick = {k: re.search(rf"^\s+{k}%\s+(\S+)", out, re.M) for k in ("50", "99")}
    rate = re.search(r"Requests/sec:\s+(\S+)", out)
    return (
        f"wrk, {connections} connection(s) back to back"
        f"{' (OpenMetrics, gzip)' if prometheus else ''}: "
        f"{rate.group(1) if rate else '?'} req/s, "
        f"p50 {pick['50'].group(1) if pick['50'] else '?'}, "
        f"p99 {pick['99'].group(1) if pick['99'] else '?'}"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--scrapers", type=int, default=4)
    ap.add_argument("--scans", type=int, default=20000)
    ap.add_argument("--pause", type=float, default=0.05)
    args = ap.parse_args()
    lines: list[str] = []
    with gecko_database(args.scans) as db:
        workload = Workload(db.admin_dsn)
        workload.start()
        try:
            with exporter(db.monitor_dsn) as (url, _pid):
                if shutil.which("wrk"):
                    lines.extend(
                        wrk_client(url, args.seconds, c) for c in sorted({1, args.scrapers})
                    )
                    lines.append(wrk_client(url, args.seconds, args.scrapers, prometheus=True))
                else:
                    lines.append("wrk not installed (apt-get install wrk): skipped")
                latencies = python_client(url, args.seconds, args.scrapers, args.pause)
        finally:
            workload.stop(10)
    q = statistics.quantiles(latencies, n=100)
    lines.append(
        f"python client, {args.scrapers} threads pausing {args.pause}s: "
        f"{len(latencies) / args.seconds:.0f} req/s, p50 {q[49] * 1000:.2f}ms, "
        f"p99 {q[98] * 1000:.2f}ms, max {max(latencies) * 1000:.2f}ms"
    )
    print(
        "/metrics latency while probes and the app workload run"
        " (target, 4 connections: p50 <= 0.5 ms, p99 <= 5 ms):"
    )
    for line in lines:
        print("  " + line)


if __name__ == "__main__":
    main()
