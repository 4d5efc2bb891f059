"""One-shot read-only sessions for the command-line gate (``preflight``, ``verify``).

A command opens exactly one connection, runs its checks and closes it. The
session is the exporter's own (:class:`exporter.db.session.Lane`), so it has the
same guarantees as the daemon's lanes: its own ``application_name``,
``lock_timeout`` (100 ms by default: it never waits in a lock queue for
longer), ``statement_timeout``, ``default_transaction_read_only`` and
``idle_in_transaction_session_timeout`` in the startup packet, autocommit, and
driver errors mapped to :mod:`exporter.errors` with the password scrubbed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from exporter.db.session import Health, Lane, LaneSession, SessionOptions


@dataclass(frozen=True)
class OneShotOptions:
    """Settings of a one-shot session."""

    application_name: str
    statement_timeout_seconds: float
    lock_timeout_seconds: float = 0.1
    connect_timeout_seconds: float = 5.0


@asynccontextmanager
async def oneshot_session(dsn: str, options: OneShotOptions) -> AsyncIterator[LaneSession]:
    """One read-only session, closed on exit.

    Raises :class:`exporter.errors.DatabaseUnavailable` when the server cannot
    be reached (no retry: a command reports and exits).
    """
    lane = Lane(
        options.application_name,
        dsn,
        SessionOptions(
            application_name=options.application_name,
            connect_timeout_seconds=options.connect_timeout_seconds,
            lock_timeout_seconds=options.lock_timeout_seconds,
            backoff_initial_seconds=0.1,
            backoff_max_seconds=0.1,
        ),
        Health(),
    )
    try:
        async with lane.session(options.statement_timeout_seconds) as session:
            yield session
    finally:
        await lane.close()


async def set_statement_timeout(session: LaneSession, seconds: float) -> None:
    """Change the session's statement_timeout (bind parameter, no SQL composition)."""
    await session.fetch(
        "SELECT set_config('statement_timeout', %s, false)", (str(max(1, round(seconds * 1000))),)
    )
