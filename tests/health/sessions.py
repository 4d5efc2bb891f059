"""Other sessions for the lock scenarios: a statement blocked in a thread, cleaned up."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from gecko_demo import admin


class BackgroundStatement:
    """Runs one statement on its own connection in a thread (it may block on a lock).

    Without autocommit the statement's transaction stays open after it ran,
    until :meth:`rollback`. Every wait is bounded by the session's 30 s
    lock_timeout and statement_timeout, so a failed test never hangs.
    """

    def __init__(
        self, dsn: str, statement: str, *, application_name: str, autocommit: bool = False
    ) -> None:
        self.conn: psycopg.Connection[Any] = psycopg.connect(
            dsn,
            application_name=application_name,
            autocommit=autocommit,
            options="-c lock_timeout=30s -c statement_timeout=30s",
        )
        self.pid = int(self.conn.info.backend_pid)
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(statement,), daemon=True)
        self.thread.start()

    def _run(self, statement: str) -> None:
        try:
            self.conn.execute(statement.encode())
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def rollback(self) -> None:
        if not self.conn.closed:
            self.conn.rollback()

    def close(self, admin_dsn: str) -> None:
        """Wait a little for the statement, then make sure the backend is gone."""
        if not self.done.wait(10):
            with admin.connect(admin_dsn, application_name="gecko-health-cleanup") as conn:
                conn.execute("SELECT pg_terminate_backend(%s)", (self.pid,))
            self.done.wait(10)
        self.thread.join(10)
        self.conn.close()


@contextmanager
def background(
    admin_dsn: str, statement: str, *, application_name: str, autocommit: bool = False
) -> Iterator[BackgroundStatement]:
    stmt = BackgroundStatement(
        admin_dsn, statement, application_name=application_name, autocommit=autocommit
    )
    try:
        yield stmt
    finally:
        stmt.close(admin_dsn)


@contextmanager
def open_transaction(dsn: str, statement: str, *, application_name: str) -> Iterator[int]:
    """Run ``statement`` in a transaction kept open (holding its locks) for the block."""
    with psycopg.connect(dsn, application_name=application_name) as conn:
        conn.execute(statement.encode())
        try:
            yield int(conn.info.backend_pid)
        finally:
            conn.rollback()
