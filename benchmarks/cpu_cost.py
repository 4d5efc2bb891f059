"""CPU seconds per minute the exporter spends at default cadence (target: <= 0.15).

An embedded server with Gecko data and the app-like workload; the exporter runs
every probe at its default interval and is scraped like Prometheus does (one
scrape every ``--scrape-interval`` seconds, OpenMetrics and gzip accepted). The figure is the exporter process's
user + system time from /proc over the measured window, after a warm-up.

With ``--profile FILE`` the window is sampled by py-spy (``pip install py-spy``)
and a flat "where does the CPU go" table is written to FILE (speedscope JSON
beside it). Only samples of a thread holding the GIL are kept (``--gil``): a
thread waiting in select() or on a condition is not using the CPU, and without
``--gil`` such idle frames are nearly every sample. py-spy pauses the process to
sample it, which at a useful rate costs more CPU than the exporter itself uses:
for proportions, ``benchmarks.profile_cpu`` (cProfile on thread CPU time) is
the better tool; this figure is only meaningful without ``--profile``.

Usage: python -m benchmarks.cpu_cost [--seconds 120] [--scrape-interval 15] [--profile out.txt]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

from benchmarks._harness import exporter, gecko_database, rss_bytes
from gecko_demo.workload import Workload

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (fields 14 and 15 of /proc/PID/stat)."""
    return cpu_seconds_of(Path(f"/proc/{pid}/stat"))


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of every thread of a process, by native thread id."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = cpu_seconds_of(task / "stat")
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def thread_wakeups(pid: int) -> dict[int, int]:
    """Voluntary context switches of every thread (each one a sleep and a wake-up), by native id.

    A wake-up costs CPU of its own (on a VM about 0.1 ms, more than most of a probe run's
    Python work), so this count is worth watching beside the CPU time.
    """
    out: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    out[int(task.name)] = int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def cpu_seconds_of(stat_file: Path) -> float:
    stat = stat_file.read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def thread_names(pid: int) -> dict[int, str]:
    """Python thread names by native id, from ``py-spy dump`` (empty without py-spy)."""
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        return {}
    out = subprocess.run([py_spy, "dump", "--pid", str(pid)], capture_output=True, text=True,
                         timeout=30, check=False).stdout  # fmt: skip
    names: dict[int, str] = {}
    for line in out.splitlines():
        if line.startswith("Thread "):
            # Thread 0x7F.. (active+gil): "gecko-sampler"  /  Thread 9709 (idle): "MainThread"
            head, _, name = line.partition(": ")
            token = head.split()[1]
            tid = int(token, 16) if token.startswith("0x") else int(token)
            names[tid] = name.strip().strip('"')
    return names


#: what Prometheus sends (OpenMetrics preferred, gzip)
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    "Accept-Encoding": "gzip",
}


def scraper(url: str, interval: float, stop: threading.Event) -> None:
    request = urllib.request.Request(url + "/metrics", headers=PROMETHEUS_HEADERS)
    while not stop.wait(interval):
        with urllib.request.urlopen(request, timeout=5) as resp:
            resp.read()


def flat_profile(speedscope: Path, top: int = 25) -> str:
    """Self and inclusive sample counts per frame from a py-spy speedscope file."""
    data = json.loads(speedscope.read_text())
    frames = data["shared"]["frames"]
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for profile in data["profiles"]:
        for sample, weight in zip(profile["samples"], profile["weights"], strict=True):
            total += weight
            names = [
                f"{frames[i]['name']} ({Path(frames[i].get('file', '?')).name})" for i in sample
            ]
            if names:
                own[names[-1]] += weight
            for name in set(names):
                inclusive[name] += weight
    lines = [f"samples: {total}", "", "self%  incl%  frame"]
    for name, count in own.most_common(top):
        lines.append(f"{100 * count / total:5.1f}  {100 * inclusive[name] / total:5.1f}  {name}")
    lines += ["", "inclusive (top):"]
    for name, count in inclusive.most_common(top):
        lines.append(f"{100 * count / total:5.1f}  {name}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--warmup", type=float, default=20.0)
    ap.add_argument("--scans", type=int, default=20000)
    ap.add_argument("--scrape-interval", type=float, default=15.0)
    ap.add_argument("--profile", type=Path, help="write a py-spy flat profile here")
    ap.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    args = ap.parse_args()

    with gecko_database(args.scans) as db:
        workload = Workload(db.admin_dsn)
        workload.start()
        try:
            with exporter(db.monitor_dsn) as (url, pid):
                stop = threading.Event()
                thread = threading.Thread(
                    target=scraper, args=(url, args.scrape_interval, stop), daemon=True
                )
                thread.start()
                time.sleep(args.warmup)
                spy = None
                speedscope = None
                if args.profile is not None:
                    py_spy = shutil.which("py-spy")
                    if py_spy is None:
                        raise SystemExit("py-spy is not installed (pip install py-spy)")
                    speedscope = args.profile.with_suffix(".speedscope.json")
                    spy = subprocess.Popen(
                        [py_spy, "record", "--pid", str(pid), "--duration", str(int(args.seconds)),
                         "--rate", str(args.rate), "--format", "speedscope", "--threads",
                         "--gil", "--output", str(speedscope)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )  # fmt: skip
                wakes0 = thread_wakeups(pid)
                cpu0, t0, threads0 = cpu_seconds(pid), time.monotonic(), thread_cpu(pid)
                time.sleep(args.seconds)
                cpu1, t1, threads1 = cpu_seconds(pid), time.monotonic(), thread_cpu(pid)
                wakes1 = thread_wakeups(pid)
                names = thread_names(pid) if spy is None else {}
                rss = rss_bytes(pid)
                stop.set()
                if spy is not None and speedscope is not None and args.profile is not None:
                    spy.wait(60)
                    args.profile.write_text(flat_profile(speedscope))
        finally:
            workload.stop()
    per_minute = (cpu1 - cpu0) / (t1 - t0) * 60
    print(f"exporter CPU: {per_minute:.3f} s per minute (target <= 0.15)")
    print(f"window: {t1 - t0:.0f} s, scrape every {args.scrape_interval:g} s, {args.scans} scans")
    print(f"RSS at the end: {rss / 2**20:.1f} MiB")
    print("per thread (CPU s per minute, wake-ups per minute):")
    for tid, end in sorted(threads1.items(), key=lambda kv: -(kv[1] - threads0.get(kv[0], 0.0))):
        used = (end - threads0.get(tid, 0.0)) / (t1 - t0) * 60
        wakes = (wakes1.get(tid, 0) - wakes0.get(tid, 0)) / (t1 - t0) * 60
        if used >= 0.001:
            print(f"  {used:.3f}  {wakes:6.0f}  {names.get(tid, f'tid {tid}')}")
    if args.profile is not None:
        print(f"profile: {args.profile}")


if __name__ == "__main__":
    main()
