"""Where the exporter's CPU goes: cProfile on thread CPU time, inside one process.

The daemon (``ExporterApp``) runs in this process against an embedded server with
Gecko data and the app-like workload, every probe at its default interval, scraped
every ``--scrape-interval`` seconds. Every thread the daemon starts is profiled
with :func:`time.thread_time` as the clock (stats cleared after the warm-up), so a thread waiting in ``select()`` or
on a condition costs nothing and the table shows CPU, not wall time (a sampling
profiler attached from outside mostly sees idle frames and, at a useful rate,
perturbs the process more than it measures it). Profiling slows every Python
call, so read the table for proportions; the absolute figure is
``benchmarks.cpu_cost``'s.

Usage: python -m benchmarks.profile_cpu [--seconds 60] [--top 40] [--out stats.pstats]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from benchmarks._harness import gecko_database
from benchmarks.cpu_cost import PROMETHEUS_HEADERS
from gecko_demo.workload import Workload
from tests.support.wait import free_port


def profile_threads(
    profiles: list[tuple[str, cProfile.Profile]], live: list[cProfile.Profile] | None = None
) -> Callable[[], None]:
    """Run every thread started from now on under its own CPU-time cProfile.

    ``live`` collects each profiler as its thread starts (to clear them after a warm-up).
    """
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        prof = cProfile.Profile(time.thread_time)
        if live is not None:
            live.append(prof)
        prof.enable()
        try:
            original(self)
        finally:
            prof.disable()
            profiles.append((self.name, prof))

    threading.Thread.run = run  # type: ignore[method-assign]

    def undo() -> None:
        threading.Thread.run = original  # type: ignore[method-assign]

    return undo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--scans", type=int, default=20000)
    ap.add_argument("--scrape-interval", type=float, default=15.0)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--out", type=Path, help="also write the merged pstats here")
    ap.add_argument("--thread", help="only this thread in the tables (e.g. gecko-render)")
    args = ap.parse_args()

    from exporter.app import ExporterApp  # noqa: PLC0415 - after the env is set
    from exporter.log import configure_logging  # noqa: PLC0415
    from exporter.settings import load_config  # noqa: PLC0415

    profiles: list[tuple[str, cProfile.Profile]] = []
    with gecko_database(args.scans) as db:
        workload = Workload(db.admin_dsn)
        workload.start()
        try:
            os.environ["GECKO_DATABASE_URL"] = db.monitor_dsn
            port = free_port()
            settings = load_config(overrides={"listen_address": f"127.0.0.1:{port}"})
            configure_logging("json", "warning")
            live: list[cProfile.Profile] = []
            undo = profile_threads(profiles, live)
            app = ExporterApp(settings)
            app.start()
            url = app.url
            time.sleep(args.warmup)
            for prof in live:  # the table covers the measured window only
                prof.clear()
            t0, c0 = time.monotonic(), time.process_time()
            end = t0 + args.seconds
            while time.monotonic() < end:
                request = urllib.request.Request(url + "/metrics", headers=PROMETHEUS_HEADERS)
                with urllib.request.urlopen(request, timeout=5) as resp:
                    resp.read()
                time.sleep(min(args.scrape_interval, max(0.0, end - time.monotonic())))
            t1, c1 = time.monotonic(), time.process_time()
            app.stop()
            undo()
        finally:
            workload.stop(10)
    print(f"process CPU while profiled: {(c1 - c0) / (t1 - t0) * 60:.3f} s per minute "
          f"(workload threads of this process included)")  # fmt: skip
    merged: pstats.Stats | None = None
    for name, prof in profiles:
        stream = io.StringIO()
        stats = pstats.Stats(prof, stream=stream)
        total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
        print(f"thread {name}: {total:.3f} CPU s (own time of its calls)")
        if args.thread is not None and name != args.thread:
            continue
        merged = stats if merged is None else merged.add(prof)
    if merged is None:
        return
    out = io.StringIO()
    merged.stream = out  # type: ignore[attr-defined]
    merged.sort_stats("tottime").print_stats(args.top)
    merged.sort_stats("cumulative").print_stats(args.top)
    print(out.getvalue())
    if args.out is not None:
        merged.dump_stats(args.out)


if __name__ == "__main__":
    main()
