"""Synthetic Gecko Advisor traffic: the backend API and the scan worker.

Threads, each with its own connection, replay the app's statements with bind
parameters and ``prepare=True`` (Prisma reuses prepared statements):

* backend request threads (``application_name`` = the backend's): scan
  submissions (dedupe lookup, then INSERT of a queued scan), report views
  (three statements), recent reports, health checks, user lookups;
* a status poller (backend): every in-flight scan is polled every 2 s and its
  progress written back when the worker's job progress differs;
* worker threads (the worker's ``application_name``): running → progress
  updates → CachedList read → Evidence insert → scoring reads → Issue
  DELETE + INSERT and the final UPDATE in one transaction; a few scans fail.

With :class:`Incidents`, an incident thread also makes every headline signal
of the exporter move, with real statements on short-lived sessions of their own,
once per period (two minutes by default, so each happens twice within five
minutes):

* a **migration** (``application_name`` = :data:`MIGRATE_APP`) takes Prisma's
  migrate advisory lock and an ACCESS EXCLUSIVE lock on ``"Scan"`` (``ALTER
  TABLE … SET DEFAULT``) and holds them a few seconds: the app's lookups and
  reports queue behind it past 100 ms and 2 s (counted as ``slow_lookups`` /
  ``slow_reports``). With ``next_probe_run`` it starts just before the
  exporter's next report run: the exporter's latency probes give up after
  their ``lock_timeout`` (its first law) and are observed at their deadline,
  above both thresholds;
* a **pool surge**: extra backend connections (the backend's
  ``application_name``) stay busy for a few seconds with short statements back
  to back, so the backend pool's utilization passes 80 % (and no statement
  counts as a slow query);
* a **slow request**: one backend session runs a statement for longer than the
  exporter's slow-query threshold (5 s).

Database errors are counted and logged, never raised; a lost connection is
reopened with backoff. :meth:`Workload.stop` joins every thread.
"""

from __future__ import annotations

import functools
import queue
import random
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import structlog

from gecko_demo import admin, datagen, queries

log = structlog.get_logger()

BACKEND_APP: Final = "gecko-advisor-backend"
WORKER_APP: Final = "gecko-advisor-worker"
SETUP_APP: Final = "gecko-demo-workload"
MIGRATE_APP: Final = "gecko-advisor-migrate"

#: the app-side latency budgets (the alert thresholds of the migration-safety analysis)
SLOW_LOOKUP_SECONDS: Final = 0.1
SLOW_REPORT_SECONDS: Final = 2.0
#: the migration takes its lock this long before the exporter's next report run
MIGRATION_LEAD_SECONDS: Final = 1.2
#: the longest the migration waits to line up with that run (the report probe's interval)
MIGRATION_ALIGN_MAX_SECONDS: Final = 15.0
#: the surge's statements, each well under the slow-query threshold
SURGE_STATEMENT_SECONDS: Final = 1.0
#: ``prisma migrate``'s advisory lock key (what the exporter's migrations probe watches)
PRISMA_MIGRATE_LOCK_KEY: Final = 72707369
#: the demo migration: an ACCESS EXCLUSIVE lock on "Scan" without changing anything
MIGRATION_DDL: Final = 'ALTER TABLE "public"."Scan" ALTER COLUMN "progress" SET DEFAULT 0'

POLL_INTERVAL: Final = 2.0  # the frontend polls /api/scan/:id/status every 2000 ms
POLL_GIVE_UP: Final = 120.0  # a client stops polling after this long
MAX_POLLED: Final = 40
LIST_CACHE_SECONDS: Final = 300.0  # the worker caches CachedList for 5 minutes
ERROR_LOG_EVERY: Final = 5.0
CONNECT_TIMEOUT: Final = 3.0  # bounds how long stop() can wait for a connection attempt

# Backend request mix (shares of rate_per_second).
REQUEST_MIX: Final[dict[str, float]] = {
    "submit": 0.12,
    "report": 0.62,
    "health": 0.15,
    "user": 0.08,
    "recent": 0.03,
}

COUNTERS: Final[tuple[str, ...]] = (
    "requests",
    "statements",
    "errors",
    "reconnects",
    "dedupe_lookups",
    "dedupe_hits",
    "scans_submitted",
    "stub_scans",
    "slug_retries",
    "scans_started",
    "scans_completed",
    "scans_failed",
    "progress_updates",
    "status_polls",
    "report_reads",
    "recent_reports",
    "health_checks",
    "user_lookups",
    "list_reads",
    "jobs_dropped",
    "slow_lookups",
    "slow_reports",
    "migrations",
    "pool_surges",
    "slow_requests",
)


@dataclass(frozen=True)
class Incidents:
    """When and how hard the incident thread moves each headline signal.

    Every ``period_seconds``, starting ``first_after_seconds`` after start: the
    migration at the period's start, the pool surge a third in, the slow
    request two thirds in. A duration of 0 turns that incident off. Each
    incident must end well inside its third of the period.
    """

    period_seconds: float = 120.0
    first_after_seconds: float = 20.0
    #: how long the migration holds its ACCESS EXCLUSIVE lock on "Scan"
    lock_seconds: float = 2.5
    #: how long the surge connections stay busy (the exporter samples pools every 5 s)
    surge_seconds: float = 12.0
    #: extra backend connections (the demo's backend pool has 10: 9 alone make 90 %)
    surge_connections: int = 9
    #: the slow request's duration (the exporter's threshold is 5 s)
    slow_request_seconds: float = 6.5

    def __post_init__(self) -> None:
        longest = max(self.lock_seconds, self.surge_seconds, self.slow_request_seconds)
        if self.first_after_seconds < 0:
            raise ValueError("first_after_seconds must be >= 0")
        if self.period_seconds <= 0 or longest >= self.period_seconds / 3:
            raise ValueError("each incident must fit in a third of period_seconds")
        if (
            self.surge_connections < 1
            or min(self.lock_seconds, self.surge_seconds, self.slow_request_seconds) < 0
        ):
            raise ValueError("surge_connections must be >= 1 and durations >= 0")

    def plan(self) -> list[tuple[float, str, float]]:
        """``(offset in the period, incident, seconds)`` of the incidents turned on."""
        third = self.period_seconds / 3
        steps = [
            (0.0, "migration", self.lock_seconds),
            (third, "pool_surge", self.surge_seconds),
            (2 * third, "slow_request", self.slow_request_seconds),
        ]
        return [step for step in steps if step[2] > 0]


_SLUG: Final = datagen.SCAN_COLUMNS.index("slug")
_ID: Final = datagen.SCAN_COLUMNS.index("id")


def utcnow() -> datetime:
    """Naive UTC with millisecond precision, as Prisma sends ``new Date()``."""
    return datagen.ms(datetime.now(UTC).replace(tzinfo=None))


@dataclass(frozen=True)
class _Job:
    scan_id: str
    slug: str
    normalized_input: str


@dataclass
class _Polled:
    scan_id: str
    slug: str
    next_poll: float
    give_up: float


class _Session:
    """A thread's connection, opened on demand and reopened after a loss.

    Only the owning thread opens and closes it; :meth:`abort` may come from
    another thread at any time and never waits for a connection attempt.
    """

    def __init__(self, dsn: str, application_name: str, statement_timeout_ms: int) -> None:
        self._dsn = dsn
        self._app = application_name
        self._timeout_ms = statement_timeout_ms
        self._conn: admin.AdminConnection | None = None
        self._lock = threading.Lock()  # a close never races an abort (fd reuse)
        self._aborted = False
        self.failures = 0  # consecutive failed connection attempts
        self.opens = 0  # connections opened so far (more than one: reconnected)

    def get(self) -> admin.AdminConnection:
        with self._lock:
            if self._conn is not None and not self._conn.closed:
                return self._conn
        self.drop()
        conn = admin.connect(  # outside the lock: abort() must not wait for this
            self._dsn,
            application_name=self._app,
            connect_timeout=CONNECT_TIMEOUT,
            statement_timeout_ms=self._timeout_ms,
        )
        with self._lock:
            if not self._aborted:
                self._conn = conn
                self.opens += 1
                return conn
        conn.close()
        raise admin.AdminError("workload stopping", connection_lost=True)

    def drop(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            if self._conn is not None:
                self._conn.abort()


class Workload:
    """App-like traffic against a Gecko Advisor database, on background threads.

    ``rate_per_second`` is the backend's request rate (Poisson arrivals over
    ``backend_threads`` connections, mixed per :data:`REQUEST_MIX`); each
    request is one to three statements, each submitted scan about twenty
    more on the worker side. ``seed`` drives the traffic, ``data_seed`` must
    be the seed the data was loaded with, so submissions hit the same sites
    (and dedupe lookups find their recent scans). ``scan_seconds`` is the
    simulated crawl time; ``failure_rate`` the share of scans ending in
    ``error``.
    """

    def __init__(
        self,
        dsn: str,
        *,
        application_name: str = BACKEND_APP,
        worker_application_name: str = WORKER_APP,
        rate_per_second: float = 6.0,
        seed: int | None = None,
        data_seed: int = 1,
        backend_threads: int = 3,
        worker_concurrency: int = 2,
        scan_seconds: tuple[float, float] = (2.0, 5.0),
        failure_rate: float = 0.03,
        statement_timeout_ms: int = 15_000,
        incidents: Incidents | None = None,
        next_probe_run: Callable[[], float | None] | None = None,
    ) -> None:
        if rate_per_second <= 0:
            raise ValueError("rate_per_second must be positive")
        if backend_threads < 1 or worker_concurrency < 1:
            raise ValueError("backend_threads and worker_concurrency must be >= 1")
        self._dsn = dsn
        self.application_name = application_name
        self.worker_application_name = worker_application_name
        self.rate_per_second = rate_per_second
        self.seed = secrets.randbits(32) if seed is None else seed
        self._backend_threads = backend_threads
        self._worker_concurrency = worker_concurrency
        self._scan_seconds = scan_seconds
        self._failure_rate = failure_rate
        self._timeout_ms = statement_timeout_ms
        self.incidents = incidents
        self._next_probe_run = next_probe_run

        # The generator (and its random state) is shared: use it under _gen_lock.
        self._gen = datagen.DataGenerator(self.seed, now=utcnow(), site_seed=data_seed)
        self._rng = random.Random(self.seed ^ 0x5EED)  # noqa: S311 - synthetic traffic
        self._gen_lock = threading.Lock()

        self._lock = threading.Lock()  # counters, schedule, shared state below
        self._counts: Counter[str] = Counter()
        self._next_at = 0.0
        self._known: deque[tuple[str, str]] = deque(maxlen=2000)  # done scans (id, slug)
        self._users: list[str] = []
        self._polled: dict[str, _Polled] = {}
        self._job_progress: dict[str, int] = {}
        self._jobs: queue.Queue[_Job] = queue.Queue(maxsize=500)
        self._last_error_log: dict[str, float] = {}

        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sessions: list[_Session] = []
        self._incident_sessions: list[_Session] = []  # short-lived, under _lock
        self._started = False

    # -- public API ---------------------------------------------------------
    def start(self) -> None:
        """Sample existing scans and users, then start every thread."""
        if self._started:
            raise RuntimeError("workload already started")
        self._started = True
        self._load_known()
        self._next_at = time.monotonic()
        targets: list[tuple[str, Callable[[_Session], None], str]] = [
            *((f"workload-backend-{i}", self._backend_loop, self.application_name)
              for i in range(self._backend_threads)),
            ("workload-poller", self._poller_loop, self.application_name),
            *((f"workload-worker-{i}", self._worker_loop, self.worker_application_name)
              for i in range(self._worker_concurrency)),
        ]  # fmt: skip
        if self.incidents is not None:
            targets.append(("workload-incidents", self._incident_loop, MIGRATE_APP))
        for name, loop, app in targets:
            session = _Session(self._dsn, app, self._timeout_ms)
            self._sessions.append(session)
            thread = threading.Thread(
                target=self._run_thread, args=(loop, session), name=name, daemon=True
            )
            self._threads.append(thread)
            thread.start()
        log.info(
            "workload.started",
            threads=len(self._threads),
            rate_per_second=self.rate_per_second,
            seed=self.seed,
            known_reports=len(self._known),
        )

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop and join every thread; True when all of them ended in time.

        Threads blocked on an unresponsive server get their sockets shut
        down halfway through ``timeout``; a connection attempt ends within
        :data:`CONNECT_TIMEOUT`, so any ``timeout`` above twice that holds.
        """
        self._stop.set()
        deadline = time.monotonic() + timeout
        soft = time.monotonic() + timeout / 2
        for thread in self._threads:
            thread.join(max(0.0, soft - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            with self._lock:
                sessions = [*self._sessions, *self._incident_sessions]
            for session in sessions:
                session.abort()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.error("workload.stop_incomplete", threads=alive)
        else:
            log.info("workload.stopped", **self.stats())
        return not alive

    def stats(self) -> dict[str, int]:
        """Counters of operations done so far (every name in :data:`COUNTERS`)."""
        with self._lock:
            return {name: self._counts[name] for name in COUNTERS}

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        return tuple(self._threads)

    # -- plumbing -------------------------------------------------------------
    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _run_thread(self, loop: Callable[[_Session], None], session: _Session) -> None:
        try:
            loop(session)
        except Exception:  # a bug, not a database error: report it, end this thread
            log.exception("workload.thread_crashed", thread=threading.current_thread().name)
        finally:
            session.drop()

    def _attempt(self, session: _Session, operation: str, work: Callable[[_Conn], None]) -> None:
        """Run one operation; count and log a database error instead of raising."""
        opened = session.opens
        try:
            conn = _Conn(session.get(), self._count)
        except admin.AdminError as exc:
            self._failed(operation="connect", exc=exc)
            session.failures += 1
            self._stop.wait(min(5.0, 0.25 * 2**session.failures))
            return
        session.failures = 0
        if session.opens > max(opened, 1):
            self._count("reconnects")
        try:
            work(conn)
        except admin.AdminError as exc:
            self._failed(operation=operation, exc=exc)
            if exc.connection_lost or conn.raw.closed:
                session.drop()

    def _failed(self, *, operation: str, exc: admin.AdminError) -> None:
        self._count("errors")
        now = time.monotonic()
        with self._lock:
            last = self._last_error_log.get(operation, -ERROR_LOG_EVERY)
            loud = now - last >= ERROR_LOG_EVERY
            if loud:
                self._last_error_log[operation] = now
        if self._stop.is_set():
            return
        emit = log.warning if loud else log.debug
        emit(
            "workload.operation_failed",
            operation=operation,
            sqlstate=exc.sqlstate,
            connection_lost=exc.connection_lost,
            error=str(exc),
        )

    def _load_known(self) -> None:
        try:
            with admin.connect(
                self._dsn, application_name=SETUP_APP, connect_timeout=CONNECT_TIMEOUT
            ) as conn:
                rows = conn.fetchall(
                    'SELECT "id", "slug" FROM "public"."Scan"'
                    " WHERE \"status\" = 'done' AND \"targetType\" = 'url'"
                    " ORDER BY random() LIMIT 1000"
                )
                users = conn.fetchall('SELECT "id" FROM "public"."User" LIMIT 500')
        except admin.AdminError as exc:
            log.warning("workload.sample_failed", error=str(exc))
            return
        with self._lock:
            self._known.extend((str(r[0]), str(r[1])) for r in rows)
            self._users = [str(r[0]) for r in users]

    def _take_slot(self) -> float:
        """Arrival time of the next request (a Poisson process, no catch-up bursts)."""
        with self._gen_lock:
            gap = self._rng.expovariate(self.rate_per_second)
        with self._lock:
            self._next_at = max(self._next_at, time.monotonic() - 1.0)
            slot = self._next_at
            self._next_at += gap
            return slot

    def _pick(self, weights: dict[str, float]) -> str:
        with self._gen_lock:
            return self._rng.choices(list(weights), weights=list(weights.values()))[0]

    def _known_report(self) -> tuple[str, str] | None:
        with self._lock:
            known = tuple(self._known)
        if not known:
            return None
        with self._gen_lock:
            return self._rng.choice(known)

    # -- backend --------------------------------------------------------------
    def _backend_loop(self, session: _Session) -> None:
        handlers: dict[str, Callable[[_Conn], None]] = {
            "submit": self._submit,
            "report": self._report,
            "health": self._health,
            "user": self._user,
            "recent": self._recent,
        }
        while not self._stop.is_set():
            delay = self._take_slot() - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            operation = self._pick(REQUEST_MIX)
            self._count("requests")
            self._attempt(session, operation, handlers[operation])

    def _submit(self, conn: _Conn) -> None:
        with self._gen_lock:
            stub = self._rng.random() < 0.02
            sub = self._gen.stub_submission() if stub else self._gen.url_submission()
            force = self._rng.random() < 0.06
            stub_score = self._rng.choice((75, 80))
            ip = self._gen.scanner_ip()
        now = utcnow()
        if sub.normalized_input is not None and not force:
            hit = self._lookup(conn, sub.normalized_input)
            if hit is not None:
                self._count("dedupe_hits")
                self._read_report(conn, slug=str(hit[_SLUG]))
                return
        for attempt in range(5):  # services/slug.ts retries a Scan_slug_key conflict
            with self._gen_lock:
                scan_id = self._gen.new_scan_id(now)
                slug = self._gen.new_slug()
            if stub:
                values: tuple[Any, ...] = (
                    scan_id, sub.target_type, sub.input, None, "done", stub_score,
                    datagen.label_for(stub_score), 100, "Preliminary check only.", now, now, slug,
                    "stub", None, True, False, ip, now, now,
                )  # fmt: skip
            else:
                values = (
                    scan_id, sub.target_type, sub.input, sub.normalized_input, "queued", None,
                    None, 0, None, None, None, slug, "manual-force" if force else "manual", None,
                    True, False, ip, now, now,
                )  # fmt: skip
            try:
                conn.one(queries.SCAN_INSERT, values)
            except admin.AdminError as exc:
                if exc.is_unique_violation and exc.constraint == "Scan_slug_key" and attempt < 4:
                    self._count("slug_retries")
                    continue
                raise
            break
        if stub:
            self._count("stub_scans")
            return
        self._count("scans_submitted")
        try:
            self._jobs.put_nowait(_Job(scan_id, slug, sub.normalized_input or sub.input))
        except queue.Full:  # the scan stays queued, as after a Redis outage
            self._count("jobs_dropped")
        with self._lock:
            if len(self._polled) < MAX_POLLED:
                t = time.monotonic()
                self._polled[scan_id] = _Polled(scan_id, slug, t + POLL_INTERVAL, t + POLL_GIVE_UP)

    def _lookup(self, conn: _Conn, normalized_input: str) -> admin.Row | None:
        """§4.1 the dedupe lookup, timed against its 100 ms budget."""
        started = time.monotonic()
        hit = conn.one(
            queries.DEDUPE_LOOKUP,
            (normalized_input, "done", utcnow() - datagen.DEDUPE_WINDOW, 1, 0),
        )
        if time.monotonic() - started > SLOW_LOOKUP_SECONDS:
            self._count("slow_lookups")
        self._count("dedupe_lookups")
        return hit

    def _report(self, conn: _Conn) -> None:
        known = self._known_report()
        if known is None:
            return
        scan_id, slug = known
        with self._gen_lock:
            by_slug = self._rng.random() < 0.8
        if by_slug:
            self._read_report(conn, slug=slug)
        else:
            self._read_report(conn, scan_id=scan_id)

    def _read_report(
        self, conn: _Conn, *, slug: str | None = None, scan_id: str | None = None
    ) -> None:
        """§4.4: the scan, then its evidence, then its issues (no transaction)."""
        started = time.monotonic()
        if slug is not None:
            row = conn.one(queries.REPORT_SCAN_BY_SLUG, (slug, 1, 0))
        else:
            row = conn.one(queries.REPORT_SCAN_BY_ID, (scan_id, 1, 0))
        if row is None:
            return
        found_id = str(row[_ID])
        conn.all(queries.REPORT_EVIDENCE, (found_id, 0))
        conn.all(queries.REPORT_ISSUES, (found_id, 0))
        self._count("report_reads")
        if time.monotonic() - started > SLOW_REPORT_SECONDS:
            self._count("slow_reports")

    def _recent(self, conn: _Conn) -> None:
        conn.all(queries.RECENT_REPORTS, ("done", 10, 0))
        self._count("recent_reports")

    def _health(self, conn: _Conn) -> None:
        conn.one(queries.HEALTH_CHECK, None)
        self._count("health_checks")

    def _user(self, conn: _Conn) -> None:
        with self._lock:
            users = tuple(self._users)
        if not users:
            return
        with self._gen_lock:
            user = self._rng.choice(users)
        conn.one(queries.USER_BY_ID, (user, 1, 0))
        conn.all(queries.USER_HISTORY, (user, utcnow() - timedelta(days=90), 100, 0))
        self._count("user_lookups")

    # -- status polling ---------------------------------------------------------
    def _poller_loop(self, session: _Session) -> None:
        while not self._stop.wait(0.2):
            now = time.monotonic()
            with self._lock:
                for key in [k for k, p in self._polled.items() if p.give_up <= now]:
                    del self._polled[key]
                due = [p for p in self._polled.values() if p.next_poll <= now]
            for polled in due:
                if self._stop.is_set():
                    return
                polled.next_poll = time.monotonic() + POLL_INTERVAL
                self._attempt(session, "status_poll", functools.partial(self._poll, polled=polled))

    def _poll(self, conn: _Conn, *, polled: _Polled) -> None:
        row = conn.one(queries.STATUS_POLL, (polled.scan_id, 1, 0))
        self._count("status_polls")
        status = None if row is None else str(row[1])
        if status in ("queued", "running") and row is not None:
            with self._lock:
                job_progress = self._job_progress.get(polled.scan_id)
            if job_progress is not None and job_progress != row[6]:
                conn.execute(queries.PROGRESS_UPDATE, (job_progress, utcnow(), polled.scan_id))
                self._count("progress_updates")
            return
        with self._lock:
            self._polled.pop(polled.scan_id, None)
        if status == "done":  # the page now shows the report
            self._read_report(conn, slug=polled.slug)

    # -- incidents ------------------------------------------------------------
    def _incident_loop(self, session: _Session) -> None:
        """Run the incidents of :attr:`incidents` on schedule until stopped."""
        incidents = self.incidents
        if incidents is None:
            return
        plan = incidents.plan()
        handlers: dict[str, Callable[[_Session, float], None]] = {
            "migration": self._migration,
            "pool_surge": self._pool_surge,
            "slow_request": self._slow_request,
        }
        start = time.monotonic() + incidents.first_after_seconds
        period = 0
        while not self._stop.is_set():
            for offset, name, seconds in plan:
                delay = start + period * incidents.period_seconds + offset - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                log.info("workload.incident", incident=name, seconds=seconds)
                handlers[name](session, seconds)
            period += 1

    def _incident_session(self, application_name: str, seconds: float) -> _Session:
        session = _Session(self._dsn, application_name, round((seconds + 5) * 1000))
        with self._lock:
            self._incident_sessions.append(session)
        if self._stop.is_set():  # stop() may have aborted the others already
            session.abort()
        return session

    def _end_incident_session(self, session: _Session) -> None:
        session.drop()
        with self._lock:
            self._incident_sessions.remove(session)

    def _migration(self, session: _Session, seconds: float) -> None:
        """A deploy's migration: advisory lock, ACCESS EXCLUSIVE on "Scan", held ``seconds``.

        A visitor (a backend request of its own) arrives while the lock is held,
        as users do during a deploy: its lookup and report queue behind it.
        """
        locked = threading.Event()
        visitor = threading.Thread(
            target=self._visitor, args=(seconds, locked), name="workload-visitor", daemon=True
        )

        def migrate(conn: _Conn) -> None:
            with conn.raw.transaction():
                # a careful migration never queues behind a long query for long
                conn.raw.execute("SET LOCAL lock_timeout = '2s'")
                conn.raw.execute("SELECT pg_advisory_xact_lock(%s)", (PRISMA_MIGRATE_LOCK_KEY,))
                conn.raw.execute(MIGRATION_DDL)
                locked.set()
                conn.raw.execute("SELECT pg_sleep(%s)", (seconds,))  # the slow step
            done.set()

        done = threading.Event()
        if not self._align_with_probe():
            return
        visitor.start()
        try:
            self._attempt(session, "migration", migrate)
        finally:
            locked.set()  # the visitor never waits for a migration that failed
            visitor.join()
        if done.is_set():  # counted once its visitor is through, too
            self._count("migrations")

    def _align_with_probe(self) -> bool:
        """Wait until the exporter's next report run is :data:`MIGRATION_LEAD_SECONDS` away.

        The exporter's latency probes then meet the lock (and, refused at their
        lock_timeout, are observed at their deadline), as a probe would meet a
        real migration sooner or later. False when stopped meanwhile.
        """
        if self._next_probe_run is None:
            return True
        for _ in range(3):
            due = self._next_probe_run()
            if due is None:  # the exporter cannot tell: no alignment
                return True
            if due >= MIGRATION_LEAD_SECONDS:
                wait = min(due - MIGRATION_LEAD_SECONDS, MIGRATION_ALIGN_MAX_SECONDS)
                return not self._stop.wait(wait)
            if self._stop.wait(due + 0.05):  # too close: line up with the run after it
                return False
        return True

    def _visitor(self, seconds: float, locked: threading.Event) -> None:
        visit = self._incident_session(self.application_name, seconds)
        try:
            with suppress(admin.AdminError):
                visit.get()  # connected before the lock, like a pooled connection
            locked.wait(CONNECT_TIMEOUT + seconds)
            known = self._known_report()
            with self._gen_lock:
                normalized = self._gen.url_submission().normalized_input

            def request(conn: _Conn) -> None:
                if normalized is not None:
                    self._lookup(conn, normalized)
                if known is not None:
                    self._read_report(conn, slug=known[1])

            if not self._stop.is_set():
                self._attempt(visit, "visit", request)
        finally:
            self._end_incident_session(visit)

    def _pool_surge(self, session: _Session, seconds: float) -> None:
        """Extra backend connections, each busy for ``seconds``."""
        del session
        count = self.incidents.surge_connections if self.incidents is not None else 1
        ready = threading.Barrier(count + 1)
        threads = [
            threading.Thread(
                target=self._surge_connection,
                args=(seconds, ready),
                name=f"workload-surge-{i}",
                daemon=True,
            )
            for i in range(count)
        ]
        for thread in threads:
            thread.start()
        try:  # all connected, then all busy at once (a burst, not a ramp)
            ready.wait(timeout=CONNECT_TIMEOUT * 2)
        except threading.BrokenBarrierError:
            log.warning("workload.surge_incomplete")
        for thread in threads:
            thread.join()
        self._count("pool_surges")

    def _surge_connection(self, seconds: float, ready: threading.Barrier) -> None:
        surge = self._incident_session(self.application_name, seconds)
        try:
            with suppress(admin.AdminError):
                surge.get()
            with suppress(threading.BrokenBarrierError):
                ready.wait(timeout=CONNECT_TIMEOUT * 2)

            def busy(conn: _Conn) -> None:
                # short statements back to back: busy all along, yet none a "slow query"
                end = time.monotonic() + seconds
                while not self._stop.is_set() and (left := end - time.monotonic()) > 0:
                    conn.raw.execute("SELECT pg_sleep(%s)", (min(left, SURGE_STATEMENT_SECONDS),))

            self._attempt(surge, "pool_surge", busy)
        finally:
            self._end_incident_session(surge)

    def _slow_request(self, session: _Session, seconds: float) -> None:
        """One backend request whose statement runs ``seconds``."""
        del session
        slow = self._incident_session(self.application_name, seconds)
        try:

            def run(conn: _Conn) -> None:
                conn.raw.execute("SELECT pg_sleep(%s)", (seconds,))
                self._count("slow_requests")

            self._attempt(slow, "slow_request", run)
        finally:
            self._end_incident_session(slow)

    # -- worker ---------------------------------------------------------------
    def _worker_loop(self, session: _Session) -> None:
        lists_read_at = -LIST_CACHE_SECONDS
        while not self._stop.is_set():
            try:
                job = self._jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            state = {"lists_read_at": lists_read_at}
            self._attempt(
                session, "scan_job", functools.partial(self._process, job=job, state=state)
            )
            lists_read_at = state["lists_read_at"]
            with self._lock:
                self._job_progress.pop(job.scan_id, None)

    def _set_progress(self, conn: _Conn, scan_id: str, progress: int) -> None:
        with self._lock:
            self._job_progress[scan_id] = progress
        conn.execute(queries.PROGRESS_UPDATE, (progress, utcnow(), scan_id))
        self._count("progress_updates")

    def _process(self, conn: _Conn, *, job: _Job, state: dict[str, float]) -> None:
        """§4.6, in order; returns early (scan left running) when stopping."""
        started = utcnow()
        conn.execute(queries.WORKER_START, ("running", started, 0, started, job.scan_id))
        self._count("scans_started")
        with self._gen_lock:
            findings = self._gen.crawl(job.normalized_input)
            fail_at = (
                self._rng.choice((20, 50, 75)) if self._rng.random() < self._failure_rate else None
            )
            duration = self._rng.uniform(*self._scan_seconds)
        page_steps = [
            30 + round(40 * (i + 1) / (findings.pages + 1)) for i in range(findings.pages)
        ]
        steps = [10, 20, *page_steps, 70, 75, 90]
        pause = duration / len(steps)
        for step in steps:
            if self._stop.wait(pause):
                return
            self._set_progress(conn, job.scan_id, step)
            if fail_at is not None and step >= fail_at:
                self._fail(conn, job, timeout=fail_at == 75)
                return
            if step == 10 and time.monotonic() - state["lists_read_at"] >= LIST_CACHE_SECONDS:
                conn.all(queries.CACHED_LISTS, (0,))
                state["lists_read_at"] = time.monotonic()
                self._count("list_reads")
            if step == 70:
                self._insert_evidence(conn, job, findings)
            if step == 75:  # scoring reads the evidence and the scan's input columns
                conn.all(queries.SCORING_EVIDENCE, (job.scan_id, 0))
                conn.one(queries.SCORING_SCAN, (job.scan_id, 1, 0))
        self._finish(conn, job, findings)

    def _insert_evidence(self, conn: _Conn, job: _Job, findings: datagen.Findings) -> None:
        if not findings.evidence:
            return
        now = utcnow()
        params: list[Any] = []
        with self._gen_lock:
            for ev in findings.evidence:
                params.extend(
                    (
                        self._gen.new_child_id(now), job.scan_id, ev.kind, ev.severity,
                        ev.title, datagen.to_json(ev.details), now,
                    )
                )  # fmt: skip
        conn.execute(queries.evidence_insert(len(findings.evidence)), params)

    def _finish(self, conn: _Conn, job: _Job, findings: datagen.Findings) -> None:
        now = utcnow()
        params: list[Any] = []
        with self._gen_lock:
            for iss in findings.issues:
                params.extend(
                    (
                        self._gen.new_child_id(now), job.scan_id, iss.key, iss.severity,
                        iss.category, iss.title, iss.summary, iss.how_to_fix, iss.why_it_matters,
                        datagen.to_json(iss.references), iss.sort_weight, now, now,
                    )
                )  # fmt: skip
        with conn.raw.transaction():  # Prisma interactive transaction
            conn.execute(queries.ISSUE_DELETE, (job.scan_id,))
            if findings.issues:
                conn.execute(queries.issue_insert(len(findings.issues)), params)
            meta = datagen.to_json(findings.meta)
            conn.execute(
                queries.SCAN_DONE,
                (
                    findings.score, findings.label, findings.summary, meta,
                    "done", now, 100, now, job.scan_id,
                ),
            )  # fmt: skip
        with self._lock:
            self._job_progress[job.scan_id] = 100
            self._known.append((job.scan_id, job.slug))
        self._count("scans_completed")

    def _fail(self, conn: _Conn, job: _Job, *, timeout: bool) -> None:
        now = utcnow()
        summary = datagen.ERROR_SUMMARIES[0] if timeout else datagen.ERROR_SUMMARIES[1]
        conn.execute(queries.SCAN_ERROR, ("error", now, summary, now, job.scan_id))
        self._count("scans_failed")


class _Conn:
    """An app connection that prepares every statement and counts it."""

    def __init__(self, raw: admin.AdminConnection, count: Callable[[str], None]) -> None:
        self.raw = raw
        self._count = count

    def execute(self, statement: str, params: admin.Params | None) -> int:
        self._count("statements")
        return self.raw.execute(statement, params, prepare=True)

    def one(self, statement: str, params: admin.Params | None) -> admin.Row | None:
        self._count("statements")
        return self.raw.fetchone(statement, params, prepare=True)

    def all(self, statement: str, params: admin.Params | None) -> list[admin.Row]:
        self._count("statements")
        return self.raw.fetchall(statement, params, prepare=True)
