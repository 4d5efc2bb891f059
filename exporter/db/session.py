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
* Reconnects back off exponentially up to a cap.

This is the only module (with :mod:`exporter.db.dsn` and :mod:`gecko_demo.admin`)
that imports psycopg.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from psycopg import errors as pgerrors
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from exporter.db.dsn import describe_target
from exporter.errors import (
    DatabaseError,
    DatabaseUnavailable,
    LockTimeout,
    StatementTimeout,
)

log = structlog.get_logger("exporter.db")

Params = Sequence[Any] | Mapping[str, Any] | None


@dataclass(frozen=True)
class SessionOptions:
    """Session settings shared by every lane."""

    application_name: str
    connect_timeout_seconds: float
    lock_timeout_seconds: float
    backoff_initial_seconds: float
    backoff_max_seconds: float


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _scrub(message: str, secret: str | None) -> str:
    """Drop a password that a driver message might echo (defence in depth)."""
    text = " ".join(message.split())
    if secret:
        text = text.replace(secret, "****")
    return text[:500]


class LaneSession:
    """What a probe sees of a database session (see :class:`exporter.probes.base.Session`)."""

    def __init__(self, conn: psycopg.AsyncConnection[dict[str, Any]], lane: Lane) -> None:
        self._conn = conn
        self._lane = lane

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
            cur = await self._conn.execute(sql, params, prepare=prepare)
            rows = await cur.fetchall() if cur.description is not None else []
        except pgerrors.LockNotAvailable as exc:
            raise LockTimeout(f"lock_timeout: {exc.diag.message_primary}") from None
        except pgerrors.QueryCanceled as exc:
            raise StatementTimeout(f"statement cancelled: {exc.diag.message_primary}") from None
        except psycopg.OperationalError as exc:
            if self._conn.closed or self._conn.broken:
                # the connection itself is gone: reconnect on the next run
                self._lane.discard()
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

    async def fetch_one(
        self, sql: str, params: Params = None, *, prepare: bool | None = None
    ) -> dict[str, Any] | None:
        rows = await self.fetch(sql, params, prepare=prepare)
        return rows[0] if rows else None


class Lane:
    """At most one persistent connection, used by one probe at a time."""

    def __init__(self, name: str, dsn: str, options: SessionOptions, health: Health) -> None:
        self.name = name
        self._dsn = dsn
        self._options = options
        self._health = health
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None
        self._lock = asyncio.Lock()
        self._statement_timeout_ms: int | None = None
        self._backoff = options.backoff_initial_seconds
        self._next_attempt = 0.0
        self.password: str | None = None
        try:
            pw = conninfo_to_dict(dsn).get("password")
            self.password = str(pw) if pw else None
        except psycopg.ProgrammingError:
            self.password = None

    def note_reached(self) -> None:
        self._health.reached()

    def discard(self) -> None:
        """Forget the connection (it is closed locally; the server ends the backend)."""
        conn, self._conn = self._conn, None
        self._statement_timeout_ms = None
        if conn is not None and not conn.closed:
            conn.pgconn.finish()

    def _connect_kwargs(self) -> dict[str, Any]:
        opts = self._options
        ours = (
            f"-c lock_timeout={_ms(opts.lock_timeout_seconds)}"
            " -c default_transaction_read_only=on"
            " -c idle_in_transaction_session_timeout=60000"
        )
        existing = conninfo_to_dict(self._dsn).get("options")
        return {
            "application_name": opts.application_name,
            "connect_timeout": max(1, round(opts.connect_timeout_seconds)),
            "options": f"{existing} {ours}" if existing else ours,
            "autocommit": True,
            "row_factory": dict_row,
        }

    async def _ensure_connected(self) -> psycopg.AsyncConnection[dict[str, Any]]:
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        self.discard()
        now = time.monotonic()
        if now < self._next_attempt:
            raise DatabaseUnavailable(
                f"reconnect backoff ({self._next_attempt - now:.2f}s left after last failure)"
            )
        try:
            conn = await psycopg.AsyncConnection.connect(self._dsn, **self._connect_kwargs())
        except psycopg.Error as exc:
            self._next_attempt = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self._options.backoff_max_seconds)
            self._health.unreachable()
            message = _scrub(str(exc), self.password)
            log.warning(
                "db_connect_failed",
                lane=self.name,
                target=describe_target(self._dsn),
                error=message,
                retry_in_seconds=round(self._next_attempt - time.monotonic(), 3),
            )
            raise DatabaseUnavailable(message) from None
        self._backoff = self._options.backoff_initial_seconds
        self._next_attempt = 0.0
        self._conn = conn
        self._health.reached(server_version=int(conn.info.server_version))
        log.info(
            "db_connected",
            lane=self.name,
            target=describe_target(self._dsn),
            backend_pid=conn.info.backend_pid,
            server_version=conn.info.server_version,
        )
        return conn

    @asynccontextmanager
    async def session(
        self, statement_timeout_seconds: float, on_acquired: Callable[[], None] | None = None
    ) -> AsyncIterator[LaneSession]:
        """Exclusive use of the lane's connection with the given statement_timeout.

        ``on_acquired`` is called once the lane is ours, before any round trip
        (so a caller can tell "waited for the lane" from "waited for the server").
        """
        async with self._lock:
            if on_acquired is not None:
                on_acquired()
            conn = await self._ensure_connected()
            clean = False
            try:
                wanted = _ms(statement_timeout_seconds)
                if self._statement_timeout_ms != wanted:
                    await LaneSession(conn, self).fetch(f"SET statement_timeout = {wanted}")
                    self._statement_timeout_ms = wanted
                yield LaneSession(conn, self)
                clean = True
            finally:
                if (
                    not clean
                    and self._conn is conn
                    and (
                        conn.closed
                        or conn.broken
                        or conn.pgconn.transaction_status != TransactionStatus.IDLE
                    )
                ):
                    # cancelled or failed mid-statement: never reuse a session in an
                    # unknown state
                    self.discard()

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None and not self._conn.closed:
                await self._conn.close()
            self._conn = None


class Health:
    """Whether the database answered recently (drives ``gecko_up``)."""

    def __init__(self) -> None:
        self.last_reached: float | None = None
        self.last_unreachable: float | None = None
        self.server_version: int | None = None

    def reached(self, server_version: int | None = None) -> None:
        self.last_reached = time.monotonic()
        if server_version is not None:
            self.server_version = server_version

    def unreachable(self) -> None:
        self.last_unreachable = time.monotonic()

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
        self.lanes = {name: Lane(name, dsn, options, self.health) for name in self.LANES}

    def lane(self, name: str) -> Lane:
        return self.lanes[name]

    async def close(self) -> None:
        await asyncio.gather(*(lane.close() for lane in self.lanes.values()))
