"""Exporter RSS over a long run of demo load (target: <= 45 MB after an hour, flat).

The exporter runs every probe at its default interval on an embedded server with
the app-like workload and is scraped every 5 s; RSS is printed every 30 s.

Usage: python -m benchmarks.memory_soak [--minutes 60] [--scans 20000]
"""

from __future__ import annotations

import argparse
import time
import urllib.request
from pathlib import Path

from benchmarks._harness import exporter, gecko_database, rss_bytes
from gecko_demo.workload import Workload


def rss_split(pid: int) -> tuple[int, int]:
    """Anonymous and file-backed resident bytes.

    On a shared machine the kernel may drop a process's clean file pages (shared
    libraries) under memory pressure: RSS then falls without the process freeing
    anything, so the split says which part moved.
    """
    fields = dict.fromkeys(("RssAnon:", "RssFile:"), 0)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(maxsplit=1)[0] if line else ""
        if key in fields:
            fields[key] = int(line.split()[1]) * 1024
    return fields["RssAnon:"], fields["RssFile:"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--scans", type=int, default=20000)
    args = ap.parse_args()
    samples: list[tuple[float, int]] = []
    with gecko_database(args.scans) as db:
        workload = Workload(db.admin_dsn)
        workload.start()
        try:
            with exporter(db.monitor_dsn) as (url, pid):
                start = time.monotonic()
                end = start + args.minutes * 60
                while time.monotonic() < end:
                    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
                        resp.read()  # scraped like Prometheus would, every 5 s
                    elapsed = time.monotonic() - start
                    if not samples or elapsed - samples[-1][0] >= 30:
                        samples.append((elapsed, rss_bytes(pid)))
                        anon, file = rss_split(pid)
                        print(
                            f"t={elapsed:6.0f}s rss={samples[-1][1] / 2**20:6.1f} MiB "
                            f"(anon {anon / 2**20:.1f}, file {file / 2**20:.1f})",
                            flush=True,
                        )
                    time.sleep(5)
                samples.append((time.monotonic() - start, rss_bytes(pid)))
        finally:
            workload.stop(10)
    first_min = [r for t, r in samples if t <= 60] or [samples[0][1]]
    last = samples[-1][1]
    half = [r for t, r in samples if t >= samples[-1][0] / 2]
    print(f"RSS after {samples[-1][0] / 60:.1f} min: {last / 2**20:.1f} MiB (target <= 45 MB = 42.9 MiB); "
          f"first minute {max(first_min) / 2**20:.1f} MiB; second half min/max "
          f"{min(half) / 2**20:.1f}/{max(half) / 2**20:.1f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
