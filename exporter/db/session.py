"""The exporter's own database sessions: few, persistent, read-only, short timeouts.

First law: the exporter must never be what hurts the monitored database.

* A fixed set of *lanes*, each with at most one persistent connection, so the
  exporter holds a bounded number of backends (three by default) and keeps them
  when the application exhausts ``max_connections``.
* Every session sets ``application_name``, ``statement_timeout`` (below the
  probe's own timeout), ``lock_timeout`` (100 ms by default) and
  ``default_transaction_read_only`` in the startup packet, and runs in
  autocommit so it never sits idle in a transaction.
* Probes that touch application tables share one lane, so behind a migration's
  ACCESS EXCLUSIVE lock at most one exporter backend ever waits, and never for
  longer than ``lock_timeout``.
* Every connection has TCP keepalives and ``tcp_user_timeout`` (see
  :func:`tcp_liveness_params`), so a peer that vanished is noticed by the kernel
  in seconds, not hours. A lane whose run is stuck on a silent network (a
  middlebox that acknowledges and drops) is :meth:`Lane.abandon`-ed by the
  scheduler and reconnects on its next run.
* Reconnects back off exponentially up to a cap, per lane. An authentication
  failure makes *every* lane wait on one shared, longer backoff
  (:class:`ConnectGate`): a wrong password costs the server a handful of login
  attempts a minute, not dozens.
* Connection failures are logged once per state change of a lane plus a summary
  at most once a minute, and counted by bounded reason
  (``gecko_database_connect_failures_total{reason}``).

This is the only module (with :mod:`exporter.db.dsn` and :mod:`gecko_demo.admin`)
that imports psycopg.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
import structlog
from psycopg import errors as pgerrors
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import ExecStatus, PipelineStatus, TransactionStatus
from psycopg.rows import dict_row

from exporter.db.dsn import describe_target, redact_secrets
from exporter.errors import (
    DatabaseError,
    DatabaseUnavailable,
    LockTimeout,
    StatementTimeout,
)

log = structlog.get_logger("exporter.db")

Params = Sequence[Any] | Mapping[str, Any] | None

#: bounded values of ``gecko_database_connect_failures_total{reason}``
CONNECT_FAILURE_REASONS: tuple[str, ...] = (
    "auth",
    "refused",
    "timeout",
    "dns",
    "too_many_connections",
    "cannot_connect_now",
    "other",
)
ConnectFailureReason = Literal[
    "auth", "refused", "timeout", "dns", "too_many_connections", "cannot_connect_now", "other"
]

#: at most one summary line of connection failures per this many seconds
SUMMARY_INTERVAL_SECONDS = 60.0


@dataclass(frozen=True)
class SessionOptions:
    """Session settings shared by every lane."""

    application_name: str
    connect_timeout_seconds: float
    lock_timeout_seconds: float
    backoff_initial_seconds: float
    backoff_max_seconds: float
    #: shared wait of every lane after an authentication failure (doubles up to the max)
    auth_backoff_initial_seconds: float = 10.0
    auth_backoff_max_seconds: float = 300.0


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _scrub(message: str, secret: str | None) -> str:
    """Drop a password (or any word of it) that a driver message might echo."""
    return redact_secrets(message, [secret] if secret else [])[:500]


def tcp_liveness_params(connect_timeout_seconds: float) -> dict[str, int]:
    """libpq keepalive and ``tcp_user_timeout`` parameters, derived from the connect timeout.

    With the default 5 s connect timeout: the first keepalive after 5 s of
    silence, then one a second, and the kernel drops the connection after 5
    unanswered probes; ``tcp_user_timeout`` (10 s) bounds how long data we sent
    may stay unacknowledged. A dead peer or a partition is therefore noticed in
    about 10 s on an idle or a busy connection. (Probe deadlines are shorter and
    are enforced by the scheduler; these bound what the kernel keeps alive.)
    """
    idle = max(1, round(connect_timeout_seconds))
    interval = max(1, round(connect_timeout_seconds / 5))
    count = 5
    return {
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": interval,
        "keepalives_count": count,
        "tcp_user_timeout": (idle + interval * count) * 1000,
    }


_AUTH_STATES = frozenset({"28P01", "28000"})
_AUTH_TEXT = (
    "authentication failed",  # password, md5/scram, ident, peer, ldap, radius, cert, gss, pam
    "no pg_hba.conf entry",
    "pg_hba.conf rejects connection",
    "no password supplied",
    "is not permitted to log in",
    "password is expired",
)
_TOO_MANY_TEXT = (
    "too many clients already",
    "too many connections",
    "remaining connection slots are reserved",
    "no more connections allowed",  # PgBouncer max_client_conn
)
_NOT_NOW_TEXT = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
)
_DNS_TEXT = (
    "could not translate host name",
    "failed to resolve host",
    "name or service not known",
    "nodename nor servname",
    "temporary failure in name resolution",
)
_REFUSED_TEXT = ("connection refused", "no such file or directory")
_TIMEOUT_TEXT = ("timeout expired", "timed out")
#: first match wins
_TEXT_RULES: tuple[tuple[ConnectFailureReason, tuple[str, ...]], ...] = (
    ("auth", _AUTH_TEXT),
    ("too_many_connections", _TOO_MANY_TEXT),
    ("cannot_connect_now", _NOT_NOW_TEXT),
    ("dns", _DNS_TEXT),
    ("refused", _REFUSED_TEXT),
    ("timeout", _TIMEOUT_TEXT),
)


def classify_connect_error(exc: BaseException) -> ConnectFailureReason:
    """A bounded reason for a failed connection attempt (never the message itself).

    libpq does not expose the SQLSTATE of an error during the startup phase, so
    its message is read as well (servers with a non-English ``lc_messages``
    may end up as ``other``; an authentication failure then still backs off per
    lane).
    """
    if isinstance(exc, TimeoutError | pgerrors.ConnectionTimeout):
        return "timeout"
    state = getattr(exc, "sqlstate", None)
    if state in _AUTH_STATES:
        return "auth"
    if state == "53300":
        return "too_many_connections"
    if state == "57P03":
        return "cannot_connect_now"
    text = str(exc).lower()
    for reason, needles in _TEXT_RULES:
        if any(needle in text for needle in needles):
            return reason
    return "other"


def _shutdown_socket(conn: psycopg.AsyncConnection[Any]) -> None:
    """Shut the connection's socket down locally, without waiting for the server.

    The descriptor itself stays open (whoever still awaits it wakes up to an
    end of file and closes it after unregistering from the event loop), so a new
    connection can never be handed a descriptor that an old waiter still watches.
    """
    try:
        fd = conn.pgconn.socket
    except psycopg.Error:
        return  # already closed
    try:
        dup = os.dup(fd)
    except OSError:
        return
    try:
        sock = socket.socket(fileno=dup)  # owns the duplicate, never the original
    except OSError:
        os.close(dup)
        return
    with sock, contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


#: sets the session's statement_timeout (a bind parameter: one prepared statement for all values)
SET_STATEMENT_TIMEOUT = "SELECT set_config('statement_timeout', %s, false)"


class LaneSession:
    """What a probe sees of a database session (see :class:`exporter.probes.base.Session`).

    With ``statement_timeout_ms`` (the lane's connection has another one), the first
    statement goes in one pipeline behind the ``set_config`` that sets it: one round
    trip, not two (probes of different timeouts share a lane, so the setting changes
    a few times a minute), and the statement never runs under another probe's timeout.
    """

    def __init__(
        self,
        conn: psycopg.AsyncConnection[dict[str, Any]],
        lane: Lane,
        slot: _Slot | None = None,
        statement_timeout_ms: int | None = None,
    ) -> None:
        self._conn = conn
        self._lane = lane
        self._slot = slot
        self._statement_timeout_ms = statement_timeout_ms if slot is not None else None

    def _cursor(self) -> psycopg.AsyncCursor[dict[str, Any]]:
        """The lane connection's cursor, made once per connection (not once per statement)."""
        slot = self._slot
        if slot is None:
            return self._conn.cursor()
        if slot.cursor is None:
            slot.cursor = self._conn.cursor()
        return slot.cursor

    @property
    def server_version(self) -> int:
        """``server_version_num`` of the connected server, e.g. 180001."""
        return int(self._conn.info.server_version)

    @property
    def backend_pid(self) -> int:
        return int(self._conn.info.backend_pid)

    async def fetch(
        self, sql: str, params: Params = None, *, prepare: bool | None = None
    ) -> list[dict[str, Any]]:
        """Run one statement and return its rows as dicts."""
        try:
            if self._statement_timeout_ms is None:
                cur = await self._cursor().execute(sql, params, prepare=prepare)
            else:
                cur = await self._execute_with_timeout(sql, params, prepare)
            # the result's status, not cur.description (which builds a Column per field)
            result = cur.pgresult
            rows = (
                await cur.fetchall()
                if result is not None and result.status == ExecStatus.TUPLES_OK
                else []
            )
        except pgerrors.LockNotAvailable as exc:
            raise LockTimeout(f"lock_timeout: {exc.diag.message_primary}") from None
        except pgerrors.QueryCanceled as exc:
            raise StatementTimeout(f"statement cancelled: {exc.diag.message_primary}") from None
        except psycopg.OperationalError as exc:
            if self._conn.closed or self._conn.broken:
                # the connection itself is gone: reconnect on the next run
                self._lane.discard(self._conn, lost=True)
                raise DatabaseUnavailable(_scrub(str(exc), self._lane.password)) from None
            # the server answered with an error of class 53/55/57/58 etc.
            # (e.g. 55000 "must be loaded via shared_preload_libraries"): the session is fine
            state = exc.sqlstate or "?"
            primary = exc.diag.message_primary or str(exc)
            raise DatabaseError(
                f"SQLSTATE {state}: {_scrub(primary, self._lane.password)}"
            ) from None
        except psycopg.Error as exc:
            state = exc.sqlstate or "?"
            primary = exc.diag.message_primary or str(exc)
            raise DatabaseError(
                f"SQLSTATE {state}: {_scrub(primary, self._lane.password)}"
            ) from None
        self._lane.note_reached()
        return rows

    async def _execute_with_timeout(
        self, sql: str, params: Params, prepare: bool | None
    ) -> psycopg.AsyncCursor[dict[str, Any]]:
        """``set_config('statement_timeout')`` and the statement, pipelined (one round trip)."""
        ms, self._statement_timeout_ms = self._statement_timeout_ms, None
        slot = self._slot
        if slot is None or ms is None:  # pragma: no cover - only called with both
            raise RuntimeError("no statement_timeout to set")
        slot.statement_timeout_ms = None  # unknown until both succeeded (a failure rolls back)
        async with self._conn.pipeline():
            await self._conn.execute(SET_STATEMENT_TIMEOUT, (f"{ms}ms",))
            cur = await self._cursor().execute(sql, params, prepare=prepare)
        # inside a transaction the statement opened (BEGIN), a ROLLBACK would undo the setting
        # too: unknown then, the next session sets it again
        idle = self._conn.pgconn.transaction_status == TransactionStatus.IDLE
        slot.statement_timeout_ms = ms if idle else None
        return cur

    async def fetch_one(
        self, sql: str, params: Params = None, *, prepare: bool | None = None
    ) -> dict[str, Any] | None:
        rows = await self.fetch(sql, params, prepare=prepare)
        return rows[0] if rows else None

    async def fetch_literals(self, sql: str, params: Params) -> list[dict[str, Any]]:
        """Run one statement with its ``%s`` parameters bound client-side.

        psycopg's client-side binding (``ClientCursor``) merges each value into the
        text as a SQL literal, quoted for this connection; for statements that take
        no bind parameters, such as the arguments of ``EXECUTE name(...)``
        (PostgreSQL cannot infer a type for ``$1`` there).
        """
        try:
            text = psycopg.AsyncClientCursor(self._conn).mogrify(sql, params)
        except psycopg.Error as exc:  # a value psycopg cannot quote (e.g. a NUL byte)
            raise DatabaseError(f"cannot bind literals: {type(exc).__name__}") from None
        return await self.fetch(text, prepare=False)


class ConnectGate:
    """Connection attempts of a set of lanes: the shared auth backoff and the failure summary.

    Owned by :class:`Database` and shared by its lanes (a lone :class:`Lane`
    gets its own). Used from the event loop thread only.
    """

    def __init__(
        self,
        health: Health,
        *,
        auth_backoff_initial_seconds: float,
        auth_backoff_max_seconds: float,
        target: str,
    ) -> None:
        self.health = health
        self.target = target
        self._auth_initial = auth_backoff_initial_seconds
        self._auth_max = max(auth_backoff_max_seconds, auth_backoff_initial_seconds)
        self._auth_backoff: float | None = None  # None: no authentication failure pending
        self._auth_until = 0.0
        self._last_auth_failure = float("-inf")
        self._unreported = 0
        self._unreported_reasons: Counter[str] = Counter()
        self._last_reason: str | None = None
        self._last_error_class: str | None = None
        self._summary_due: float | None = None
        self._failing: set[str] = set()

    def blocked_for(self, now: float) -> float:
        """Seconds every lane still waits after an authentication failure (0: go ahead)."""
        if self._auth_backoff is None:
            return 0.0
        return max(0.0, self._auth_until - now)

    def begin_attempt(self, now: float) -> None:
        """A lane is about to log in: while an auth failure is pending, the others wait on."""
        if self._auth_backoff is not None:
            self._auth_until = now + self._auth_backoff

    def succeeded(self, lane: str) -> None:
        self._auth_backoff = None
        self._auth_until = 0.0
        self._failing.discard(lane)
        if not self._failing:
            # every lane is back (each said so, with its count of failed attempts):
            # the next outage starts a fresh summary period
            self._unreported = 0
            self._unreported_reasons.clear()
            self._summary_due = None

    def failed(
        self,
        lane: str,
        reason: ConnectFailureReason,
        error_class: str,
        *,
        started: float,
        now: float,
        logged: bool,
    ) -> None:
        """Account for one failed attempt that began at ``started``.

        ``logged``: the lane has just logged this failure as its state change;
        otherwise it only counts towards the next summary line.
        """
        self.health.connect_failed(reason)
        self._failing.add(lane)
        self._last_reason = reason
        self._last_error_class = error_class
        if reason == "auth":
            if self._auth_backoff is None:
                self._auth_backoff = self._auth_initial
            elif started >= self._last_auth_failure:
                # a login tried after the previous refusal: wait longer (attempts that
                # raced each other into the same refusal count once)
                self._auth_backoff = min(self._auth_backoff * 2, self._auth_max)
            self._last_auth_failure = now
            self._auth_until = now + self._auth_backoff
        if logged:
            if self._summary_due is None:
                self._summary_due = now + SUMMARY_INTERVAL_SECONDS
            return
        self._unreported += 1
        self._unreported_reasons[reason] += 1
        if self._summary_due is None:
            self._summary_due = now + SUMMARY_INTERVAL_SECONDS
        elif now >= self._summary_due:
            log.warning(
                "db_connect_failures_summary",
                target=self.target,
                failures=self._unreported,
                reasons=dict(sorted(self._unreported_reasons.items())),
                last_reason=self._last_reason,
                last_error_class=self._last_error_class,
                failing_lanes=sorted(self._failing),
                next_login_in_seconds=round(self.blocked_for(now), 1)
                if self._auth_backoff is not None
                else None,
            )
            self._unreported = 0
            self._unreported_reasons.clear()
            self._summary_due = now + SUMMARY_INTERVAL_SECONDS


@dataclass
class _Slot:
    """A lane's connection and what the lane knows of its session state."""

    conn: psycopg.AsyncConnection[dict[str, Any]]
    statement_timeout_ms: int | None = None
    cursor: psycopg.AsyncCursor[dict[str, Any]] | None = None


class Lane:
    """At most one persistent connection, used by one probe at a time."""

    #: a PgBouncer admin console (:mod:`exporter.db.pgbouncer`) has no ``statement_timeout``
    #: to set (it answers SHOW commands from memory; the probe's deadline bounds a run)
    sets_statement_timeout = True

    def __init__(
        self,
        name: str,
        dsn: str,
        options: SessionOptions,
        health: Health,
        gate: ConnectGate | None = None,
    ) -> None:
        self.name = name
        self._dsn = dsn
        self._target = describe_target(dsn)
        self._options = options
        self._health = health
        self._gate = gate or ConnectGate(
            health,
            auth_backoff_initial_seconds=options.auth_backoff_initial_seconds,
            auth_backoff_max_seconds=options.auth_backoff_max_seconds,
            target=self._target,
        )
        self._slot: _Slot | None = None
        self._lock = asyncio.Lock()
        #: bumped by abandon(): an older run must not touch what the lane holds now
        self._generation = 0
        self._backoff = options.backoff_initial_seconds
        self._next_attempt = 0.0
        #: a connection attempt gives up after this long (see Database.bound_connect_attempts)
        self.connect_attempt_bound_seconds: float | None = None
        self._state: Literal["new", "connected", "failing"] = "new"
        self._failures = 0
        self._failing_since = 0.0
        self.password: str | None = None
        try:
            pw = conninfo_to_dict(dsn).get("password")
            self.password = str(pw) if pw else None
        except psycopg.ProgrammingError:
            self.password = None

    @property
    def generation(self) -> int:
        """How many times the lane was abandoned."""
        return self._generation

    def note_reached(self) -> None:
        self._health.reached()

    def discard(
        self, conn: psycopg.AsyncConnection[Any] | None = None, *, lost: bool = False
    ) -> None:
        """Forget the lane's connection (closed locally; the server ends the backend).

        With ``conn``: only if it still is the lane's connection.
        """
        slot = self._slot
        if slot is None or (conn is not None and slot.conn is not conn):
            return
        self._slot = None
        if lost:
            log.info("db_connection_lost", lane=self.name, target=self._target)
        if not slot.conn.closed:
            slot.conn.pgconn.finish()

    def abandon(self) -> None:
        """Give up on the lane's current run; the next :meth:`session` reconnects at once.

        Synchronous and never blocks (call it from the event loop thread): the
        lane forgets its connection after shutting its socket down locally
        (nothing is waited for from the server) and gets a fresh lock. The
        abandoned run unwinds on its own later and never touches what the lane
        holds by then.
        """
        self._generation += 1
        slot, self._slot = self._slot, None
        self._lock = asyncio.Lock()
        backend_pid = None
        if slot is not None:
            if not slot.conn.closed:
                backend_pid = slot.conn.info.backend_pid
            _shutdown_socket(slot.conn)
        log.warning(
            "db_lane_abandoned", lane=self.name, target=self._target, backend_pid=backend_pid
        )

    def _connect_kwargs(self) -> dict[str, Any]:
        opts = self._options
        ours = (
            f"-c lock_timeout={_ms(opts.lock_timeout_seconds)}"
            " -c default_transaction_read_only=on"
            " -c idle_in_transaction_session_timeout=60000"
        )
        given = conninfo_to_dict(self._dsn)
        existing = given.get("options")
        kwargs: dict[str, Any] = {
            "application_name": opts.application_name,
            "connect_timeout": max(1, round(opts.connect_timeout_seconds)),
            "options": f"{existing} {ours}" if existing else ours,
            "autocommit": True,
            "row_factory": dict_row,
        }
        liveness = tcp_liveness_params(opts.connect_timeout_seconds)
        # an explicit DSN parameter wins
        kwargs.update({k: v for k, v in liveness.items() if k not in given})
        return kwargs

    async def _ensure_connected(self, attempt_timeout: float) -> _Slot:
        slot = self._slot
        if slot is not None and not slot.conn.closed and not slot.conn.broken:
            return slot
        self.discard(lost=slot is not None)
        now = time.monotonic()
        wait = self._gate.blocked_for(now)
        if wait > 0:
            raise DatabaseUnavailable(
                f"reconnect backoff after an authentication failure ({wait:.1f}s left;"
                " shared by every lane)"
            )
        if now < self._next_attempt:
            raise DatabaseUnavailable(
                f"reconnect backoff ({self._next_attempt - now:.2f}s left after last failure)"
            )
        generation = self._generation
        self._gate.begin_attempt(now)
        bound = min(self._options.connect_timeout_seconds, attempt_timeout)
        if self.connect_attempt_bound_seconds is not None:
            bound = min(bound, self.connect_attempt_bound_seconds)
        try:
            async with asyncio.timeout(bound):
                conn = await psycopg.AsyncConnection.connect(self._dsn, **self._connect_kwargs())
        except (psycopg.Error, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):
                message = f"connection attempt timed out after {bound:.1f}s"
            else:
                message = _scrub(str(exc), self.password)
            self._connect_failed(classify_connect_error(exc), type(exc).__name__, message, now)
            raise DatabaseUnavailable(message) from None
        if generation != self._generation:  # abandoned while we were connecting
            conn.pgconn.finish()
            raise DatabaseUnavailable("lane abandoned while connecting")
        self._connect_succeeded(conn)
        slot = _Slot(conn)
        self._slot = slot
        return slot

    def _connect_failed(
        self, reason: ConnectFailureReason, error_class: str, message: str, started: float
    ) -> None:
        now = time.monotonic()
        if reason == "timeout":
            # the attempt itself waited its bound: that paces the retries already, and the
            # next run after a partition heals must not wait on top of it
            self._next_attempt = now
        else:
            self._next_attempt = now + self._backoff
            self._backoff = min(self._backoff * 2, self._options.backoff_max_seconds)
        self._health.unreachable()
        self._failures += 1
        first = self._state != "failing"
        self._gate.failed(self.name, reason, error_class, started=started, now=now, logged=first)
        if first:  # one line per state change; the gate summarises the rest
            self._state = "failing"
            self._failing_since = now
            self._failures = 1
            log.warning(
                "db_connect_failed",
                lane=self.name,
                target=self._target,
                reason=reason,
                error_class=error_class,
                error=message,
                retry_in_seconds=round(
                    max(self._next_attempt, now + self._gate.blocked_for(now)) - now, 3
                ),
            )

    def _connect_succeeded(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._backoff = self._options.backoff_initial_seconds
        self._next_attempt = 0.0
        self._gate.succeeded(self.name)
        self._health.reached(server_version=int(conn.info.server_version))
        extra: dict[str, Any] = {}
        if self._state == "failing":
            extra = {
                "failed_attempts": self._failures,
                "failing_seconds": round(time.monotonic() - self._failing_since, 3),
            }
        self._state = "connected"
        self._failures = 0
        log.info(
            "db_connected",
            lane=self.name,
            target=self._target,
            backend_pid=conn.info.backend_pid,
            server_version=conn.info.server_version,
            **extra,
        )

    async def _acquire(self) -> asyncio.Lock:
        """The lane's current lock (a lock replaced by abandon() meanwhile is let go)."""
        while True:
            lock = self._lock
            await lock.acquire()
            if lock is self._lock:
                return lock
            lock.release()

    @asynccontextmanager
    async def session(
        self, statement_timeout_seconds: float, on_acquired: Callable[[], None] | None = None
    ) -> AsyncIterator[LaneSession]:
        """Exclusive use of the lane's connection with the given statement_timeout.

        ``on_acquired`` is called once the lane is ours, before any round trip
        (so a caller can tell "waited for the lane" from "waited for the server").
        A connection attempt takes at most ``statement_timeout_seconds`` (and at
        most the connect timeout).
        """
        lock = await self._acquire()
        try:
            if on_acquired is not None:
                on_acquired()
            slot = await self._ensure_connected(statement_timeout_seconds)
            conn = slot.conn
            clean = False
            try:
                wanted = _ms(statement_timeout_seconds)
                if self.sets_statement_timeout and slot.statement_timeout_ms != wanted:
                    # set with the session's first statement (see LaneSession)
                    yield LaneSession(conn, self, slot, wanted)
                else:
                    yield LaneSession(conn, self, slot)
                clean = True
            finally:
                if self._slot is not slot:
                    # abandoned (or lost) meanwhile: what is left of the connection is ours
                    # alone, and our waits on it are over, so it is safe to close it here
                    if not conn.closed:
                        conn.pgconn.finish()
                elif not clean and (
                    conn.closed
                    or conn.broken
                    or conn.pgconn.transaction_status != TransactionStatus.IDLE
                    or conn.pgconn.pipeline_status != PipelineStatus.OFF
                ):
                    # cancelled or failed mid-statement: never reuse a session in an
                    # unknown state
                    self.discard(conn)
        finally:
            lock.release()

    async def close(self, timeout: float = 2.0) -> None:
        """Close the connection (abandoning a run still holding the lane after ``timeout``)."""
        try:
            async with asyncio.timeout(timeout):
                lock = await self._acquire()
        except TimeoutError:
            self.abandon()
            return
        try:
            slot, self._slot = self._slot, None
            if slot is not None and not slot.conn.closed:
                await slot.conn.close()
        finally:
            lock.release()


class Health:
    """Whether the database answered recently (drives ``gecko_up``) and connect failures.

    Written from the sampler thread, read by scrapes.
    """

    def __init__(self) -> None:
        self.last_reached: float | None = None
        self.last_unreachable: float | None = None
        self.server_version: int | None = None
        self._lock = threading.Lock()
        self._connect_failures = dict.fromkeys(CONNECT_FAILURE_REASONS, 0)

    def reached(self, server_version: int | None = None) -> None:
        self.last_reached = time.monotonic()
        if server_version is not None:
            self.server_version = server_version

    def unreachable(self) -> None:
        self.last_unreachable = time.monotonic()

    def connect_failed(self, reason: ConnectFailureReason) -> None:
        with self._lock:
            self._connect_failures[reason] += 1

    def connect_failures(self) -> dict[str, int]:
        """Failed connection attempts by reason (every reason, zeros included)."""
        with self._lock:
            return dict(self._connect_failures)

    def up(self, stale_after: float, now: float | None = None) -> bool:
        if self.last_reached is None:
            return False
        now = time.monotonic() if now is None else now
        if now - self.last_reached > stale_after:
            return False
        return self.last_unreachable is None or self.last_reached > self.last_unreachable


class Database:
    """The exporter's bounded set of lanes to one PostgreSQL server."""

    LANES = ("activity", "app", "catalog")

    def __init__(self, dsn: str, options: SessionOptions) -> None:
        self.health = Health()
        self.gate = ConnectGate(
            self.health,
            auth_backoff_initial_seconds=options.auth_backoff_initial_seconds,
            auth_backoff_max_seconds=options.auth_backoff_max_seconds,
            target=describe_target(dsn),
        )
        self.lanes = {name: Lane(name, dsn, options, self.health, self.gate) for name in self.LANES}

    def lane(self, name: str) -> Lane:
        return self.lanes[name]

    def bound_connect_attempts(self, seconds: Mapping[str, float]) -> None:
        """Give up a lane's connection attempt after ``seconds[lane]`` (besides the connect
        timeout and the probe's statement timeout).

        An attempt caught by a partition that heals waits out its bound, so a lane is back
        within about two intervals of its fastest probe only if its attempts end within one
        (the composition root passes 80 % of that interval; a network where connecting takes
        longer needs a longer interval).
        """
        for name, bound in seconds.items():
            self.lanes[name].connect_attempt_bound_seconds = bound

    async def close(self) -> None:
        await asyncio.gather(*(lane.close() for lane in self.lanes.values()))
