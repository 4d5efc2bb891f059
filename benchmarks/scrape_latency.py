"""/metrics latency under concurrent scrapes while the probes run (target: p99 < 5 ms).

Each scraper pauses ``--pause`` seconds between scrapes (0 = back to back, a saturation
test of a 2-core machine rather than a Prometheus-like load).

Usage: python -m benchmarks.scrape_latency [--seconds 30] [--scrapers 4] [--pause 0.05]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import urllib.request

from benchmarks._harness import exporter, gecko_database
from exporter.demo.workload import Workload


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--scrapers", type=int, default=4)
    ap.add_argument("--scans", type=int, default=20000)
    ap.add_argument("--pause", type=float, default=0.05)
    args = ap.parse_args()
    with gecko_database(args.scans) as db:
        workload = Workload(db.admin_dsn)
        workload.start()
        try:
            with exporter(db.monitor_dsn) as (url, _pid):
                latencies: list[float] = []
                lock = threading.Lock()
                stop = time.monotonic() + args.seconds

                def scrape() -> None:
                    mine = []
                    while time.monotonic() < stop:
                        t = time.perf_counter()
                        with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
                            body = resp.read()
                        mine.append(time.perf_counter() - t)
                        time.sleep(args.pause)
                    with lock:
                        latencies.extend(mine)
                    del body

                threads = [threading.Thread(target=scrape) for _ in range(args.scrapers)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
        finally:
            workload.stop(10)
    q = statistics.quantiles(latencies, n=100)
    print(f"scrapes: {len(latencies)} in {args.seconds:.0f}s by {args.scrapers} concurrent scrapers, pause {args.pause}s "
          f"({len(latencies) / args.seconds:.0f}/s), probes running, app workload on")  # fmt: skip
    print(f"/metrics latency p50 {q[49] * 1000:.2f} ms  p99 {q[98] * 1000:.2f} ms  "
          f"max {max(latencies) * 1000:.2f} ms  (target p99 < 5 ms)")  # fmt: skip


if __name__ == "__main__":
    main()
