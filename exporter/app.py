"""Composition root: settings -> database lanes -> probes -> sampler/store -> HTTP."""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType

import structlog

from exporter import __version__
from exporter.config import Config
from exporter.db.dsn import describe_target
from exporter.db.pgbouncer import PgBouncerConsole
from exporter.db.session import Database, SessionOptions
from exporter.memory import release_free_memory
from exporter.metrics import ExpositionCache, StoreCollector, build_registry, self_metrics
from exporter.probes.registry import build_pgbouncer_probe, build_probes
from exporter.scheduler import ScheduledProbe, Scheduler
from exporter.server import HttpServer, make_app
from exporter.store import ResultStore
from exporter.web_config import load_web_config

log = structlog.get_logger("exporter.app")

#: probes whose freshness /readyz requires (the cheapest, most frequent one)
READY_PROBES = ("slow_queries",)


class ExporterApp:
    """The long-running daemon."""

    def __init__(self, settings: Config) -> None:
        self.settings = settings
        self._dsn = settings.dsn()
        pgbouncer_url = settings.pgbouncer_dsn()
        self.store = ResultStore()
        options = SessionOptions(
            application_name=settings.application_name,
            connect_timeout_seconds=settings.connect_timeout_seconds,
            lock_timeout_seconds=settings.lock_timeout_seconds,
            backoff_initial_seconds=settings.reconnect_backoff_initial_seconds,
            backoff_max_seconds=settings.reconnect_backoff_max_seconds,
            auth_backoff_initial_seconds=settings.auth_failure_backoff_initial_seconds,
            auth_backoff_max_seconds=settings.auth_failure_backoff_max_seconds,
        )
        self.db = Database(self._dsn, options)
        cadence = settings.probe_settings()
        self.scheduled = [
            ScheduledProbe(probe, cadence[probe.name])
            for probe in build_probes(settings)
            if cadence[probe.name].enabled
        ]
        # PgBouncer (optional): its own lane, health and scheduler, so a PgBouncer that is down
        # or frozen never touches gecko_up or the database lanes (issue 11 §2)
        self.pgbouncer: Scheduler | None = None
        self.pgbouncer_scheduled: list[ScheduledProbe] = []
        pgbouncer_cadence = cadence["pgbouncer"]
        if pgbouncer_url is not None and pgbouncer_cadence.enabled:
            console = PgBouncerConsole(pgbouncer_url, options)
            console.bound_connect_attempts(0.8 * pgbouncer_cadence.interval_seconds)
            stale = 2 * pgbouncer_cadence.interval_seconds + pgbouncer_cadence.timeout_seconds
            probe = build_pgbouncer_probe(settings, lambda: console.health.up(stale))
            self.pgbouncer_scheduled = [ScheduledProbe(probe, pgbouncer_cadence)]
            self.pgbouncer = Scheduler(console, self.store, self.pgbouncer_scheduled)
        # a lane's connection attempt ends within its fastest probe's interval, so the lane is
        # back within two intervals after a partition heals (issue 9, item 3)
        attempt_bounds: dict[str, float] = {}
        for sp in self.scheduled:
            bound = 0.8 * sp.settings.interval_seconds
            attempt_bounds[sp.probe.lane] = min(attempt_bounds.get(sp.probe.lane, bound), bound)
        self.db.bound_connect_attempts(attempt_bounds)
        self.scheduler = Scheduler(self.db, self.store, self.scheduled)
        self.collector = StoreCollector(
            self.store, self.db.health, up_stale_seconds=settings.up_stale_seconds
        )
        own_metrics = self_metrics()
        self.registry = build_registry(self.collector, own_metrics)
        host, port = settings.listen()
        self.target = describe_target(self._dsn)
        # renders the exposition in its own thread after store writes: scrapes read bytes
        self.exposition = ExpositionCache(self.store, self.collector, own_metrics)
        web_config = load_web_config(settings.web_config_file) if settings.web_config_file else None
        self.http = HttpServer(
            host,
            port,
            make_app(self.registry, self.ready, self.target, self.exposition),
            web_config=web_config,
        )
        self._web = web_config.summary() if web_config is not None else None
        self._host = host
        self._stop = threading.Event()
        self._started = False
        self._handlers = False

    @property
    def port(self) -> int:
        return self.http.port

    @property
    def url(self) -> str:
        host = self._host
        if host in ("0.0.0.0", "", "::"):  # noqa: S104 - display only
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"{self.http.scheme}://{host}:{self.port}"

    def ready(self) -> tuple[bool, str]:
        """Database reachable and the activity samples fresh."""
        if not self.db.health.up(self.settings.up_stale_seconds):
            return False, "database not reachable"
        states = self.store.snapshot()
        now = time.monotonic()
        for name in READY_PROBES:
            state = states.get(name)
            if state is not None and not state.fresh(now):
                return False, f"samples of probe {name} are stale"
        return True, "ready"

    def start(self) -> None:
        self.exposition.start()
        self.http.start()
        self.scheduler.start()
        if self.pgbouncer is not None:
            self.pgbouncer.start()
        self._started = True
        log.info(
            "exporter_started",
            version=__version__,
            listen=f"{self._host}:{self.port}",
            target=self.target,
            tls=self.http.scheme == "https",
            basic_auth=bool(self._web and self._web["basic_auth_users"]),
            probes={
                sp.probe.name: sp.settings.interval_seconds
                for sp in (*self.scheduled, *self.pgbouncer_scheduled)
            },
        )

    def request_stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM request a clean stop (main thread only; PID 1 needs this)."""

        def handler(signum: int, frame: FrameType | None) -> None:
            del frame
            log.info("signal_received", signal=signal.Signals(signum).name)
            self._stop.set()

        if threading.current_thread() is threading.main_thread() and not self._handlers:
            signal.signal(signal.SIGTERM, handler)
            signal.signal(signal.SIGINT, handler)
            self._handlers = True

    def wait_for_signal(self) -> None:
        """Block until SIGINT/SIGTERM (or :meth:`request_stop`)."""
        self.install_signal_handlers()
        # a signal interrupts the wait (its handler sets the event): no need to wake up often;
        # once a minute, heap pages freed since (start-up's first) go back to the OS
        while not self._stop.wait(60):
            release_free_memory()

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        self.http.stop()
        self.scheduler.stop()
        if self.pgbouncer is not None:
            self.pgbouncer.stop()
        self.exposition.stop()
        log.info("exporter_stopped")

    def run(self) -> int:
        self.install_signal_handlers()  # before any thread starts: no window to lose a SIGTERM
        self.start()
        try:
            self.wait_for_signal()
        finally:
            self.stop()
        return 0
