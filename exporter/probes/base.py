"""What every probe is: a name, a lane, and ``collect(session) -> families``.

Probe modules hold the SQL text and pure row parsing; they reach the database
only through the :class:`Session` protocol below, so nothing here imports the
driver and parsing is testable without I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from exporter.samples import Family

#: ``pgbouncer``: the PgBouncer admin console (exporter.db.pgbouncer), not a database lane
LaneName = Literal["activity", "app", "catalog", "pgbouncer"]
Row = dict[str, Any]
Params = Sequence[Any] | Mapping[str, Any] | None


class Session(Protocol):
    """A database session lent to a probe for one run."""

    @property
    def server_version(self) -> int:
        """``server_version_num`` (e.g. 150018)."""
        ...

    @property
    def backend_pid(self) -> int: ...

    async def fetch(
        self, sql: str, params: Params = None, *, prepare: bool | None = None
    ) -> list[Row]: ...

    async def fetch_one(
        self, sql: str, params: Params = None, *, prepare: bool | None = None
    ) -> Row | None: ...

    async def fetch_literals(self, sql: str, params: Params) -> list[Row]:
        """Run one statement with its ``%s`` parameters bound client-side.

        The driver quotes each value into the text as a literal: for statements
        that take no bind parameters (``EXECUTE name(...)`` arguments).
        """
        ...


class Probe(Protocol):
    """A periodic measurement of the database."""

    #: bounded label value of ``gecko_probe_*{probe}``
    name: str
    #: connection lane: ``app`` for anything touching application tables
    lane: LaneName

    async def collect(self, session: Session, now: float) -> list[Family]:
        """Run the probe's statements and return its metric families.

        ``now`` is the wall-clock time (Unix seconds) of the run's start.
        Raise :class:`exporter.errors.DatabaseError` subclasses on failure.
        """
        ...

    def persistent(self) -> list[Family]:
        """Families owned by the exporter (histograms, counters) served even when stale."""
        ...


@runtime_checkable
class ObservesAbandonedRuns(Protocol):
    """A probe that times its runs and wants to hear about the runs it did not finish.

    The scheduler calls :meth:`abandoned` (then re-reads :meth:`Probe.persistent`)
    when a run that reached the database was given up: the probe's deadline passed
    after the run had its lane, or the server cancelled a statement
    (``statement_timeout``) or refused a lock (``lock_timeout``). Runs that never
    reached the database (unavailable, lane busy) are not reported here.
    """

    def abandoned(self, elapsed_seconds: float) -> None:
        """Account for a run given up ``elapsed_seconds`` after it got its lane."""
        ...
