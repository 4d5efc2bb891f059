"""The PgBouncer admin console: one connection on a lane of its own.

The console (the special database ``pgbouncer``) speaks the simple query
protocol only and rejects unknown startup parameters, so its lane differs from
a database lane (:class:`exporter.db.session.Lane`) in three ways:

* no ``options`` startup parameter (``lock_timeout`` etc. mean nothing there;
  ``application_name`` is accepted and set);
* no server-side prepare, ever (``prepare_threshold=None``): a statement without
  parameters then goes out as one simple Query message;
* no ``statement_timeout`` to set: SHOW commands answer from PgBouncer's memory,
  and the probe's deadline (enforced by the scheduler, which abandons a stuck
  lane) bounds a run.

Everything else is the database lane's: keepalives and ``tcp_user_timeout``,
bounded connection attempts, exponential reconnect backoff, the shared backoff
after an authentication failure, one log line per state change, passwords
scrubbed from driver messages.

:class:`PgBouncerConsole` is what the scheduler needs of a "database"
(``health``, ``lane(name)``, ``close()``); it has its **own** health, so a
PgBouncer that is down, frozen or refusing logins never touches ``gecko_up``
or the database lanes: the composition root runs it in a scheduler of its own.
"""

from __future__ import annotations

from typing import Any

from exporter.db.dsn import describe_target
from exporter.db.session import ConnectGate, Health, Lane, SessionOptions

#: the console's lane (a bounded label value, like the database lanes)
LANE = "pgbouncer"


class PgBouncerLane(Lane):
    """A :class:`Lane` to the admin console: no startup options, no prepare, no timeout SET."""

    sets_statement_timeout = False

    def _connect_kwargs(self) -> dict[str, Any]:
        kwargs = super()._connect_kwargs()
        kwargs.pop("options", None)  # the console rejects unknown startup parameters
        kwargs["prepare_threshold"] = None  # and the extended protocol
        return kwargs


class PgBouncerConsole:
    """The admin console behind one lane, with health of its own (``gecko_pgbouncer_up``)."""

    def __init__(self, url: str, options: SessionOptions) -> None:
        self.target = describe_target(url)
        self.health = Health()
        self.gate = ConnectGate(
            self.health,
            auth_backoff_initial_seconds=options.auth_backoff_initial_seconds,
            auth_backoff_max_seconds=options.auth_backoff_max_seconds,
            target=self.target,
        )
        self.console = PgBouncerLane(LANE, url, options, self.health, self.gate)

    def lane(self, name: str) -> PgBouncerLane:
        if name != LANE:
            raise KeyError(name)
        return self.console

    def bound_connect_attempts(self, seconds: float) -> None:
        """A connection attempt gives up after ``seconds`` (as in the Database lanes)."""
        self.console.connect_attempt_bound_seconds = seconds

    async def close(self) -> None:
        await self.console.close()
