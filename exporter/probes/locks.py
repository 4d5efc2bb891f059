"""Heavyweight lock waits and the DDL lock queue, sampled cheaply.

Step 1 reads only ``pg_stat_activity`` for backends whose ``wait_event_type``
is ``Lock``. Only when some wait does step 2 read their ungranted ``pg_locks``
rows and call ``pg_blocking_pids()`` for those backends: the function briefly
takes the lock manager's partition locks, so it is never called for every
backend on every run.

The DDL hazard: a migration's ACCESS EXCLUSIVE request that waits (behind a
long transaction) makes every later statement on the table queue behind it,
plain SELECTs included. ``gecko_lock_access_exclusive_waiting`` counts such
requests; ``gecko_lock_waiting_behind_access_exclusive`` counts the backends
whose blockers include one of them.

Only backends of the monitored database count (other databases of the server
have their own lock queues). The exporter's own sessions (its
``application_name``) are left out of the counts: its app-lane probes may
wait up to lock_timeout (100 ms) behind DDL, which is not application
traffic. Nothing of the app is excluded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from exporter.probes.base import LaneName, Row, Session
from exporter.samples import Family, gauge, keep_unchanged

log = structlog.get_logger("exporter.probes.locks")

WAITING_SQL = """
SELECT pid, COALESCE(application_name, '') AS application_name,
       EXTRACT(EPOCH FROM clock_timestamp() - state_change)::float8 AS state_seconds
FROM pg_stat_activity
WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid() AND datname = current_database()
"""

ACCESS_EXCLUSIVE = "AccessExclusiveLock"


def locks_sql(server_version: int) -> str:
    """Ungranted locks of the waiting backends; ``waitstart`` exists from PostgreSQL 14."""
    waited = (
        "EXTRACT(EPOCH FROM clock_timestamp() - l.waitstart)::float8"
        if server_version >= 140000
        else "NULL::float8"
    )
    return f"""
SELECT l.pid, l.locktype, l.mode, l.relation::bigint AS relation,
       {waited} AS wait_seconds,
       pg_blocking_pids(l.pid) AS blocked_by
FROM pg_locks l
WHERE NOT l.granted AND l.pid = ANY(%(pids)s)
"""


@dataclass(frozen=True)
class Waiter:
    pid: int
    application_name: str
    mode: str
    locktype: str
    relation: int | None
    wait_seconds: float
    blocked_by: tuple[int, ...]


@dataclass(frozen=True)
class LockSummary:
    waiting: int
    longest_wait_seconds: float
    access_exclusive_waiting: int
    waiting_behind_access_exclusive: int
    access_exclusive_pids: tuple[int, ...]


def waiters(activity: Sequence[Row], locks: Sequence[Row]) -> list[Waiter]:
    """Join step 1 and step 2 rows per waiting backend (pure)."""
    by_pid = {int(r["pid"]): r for r in activity}
    result: list[Waiter] = []
    for lock in locks:
        pid = int(lock["pid"])
        act = by_pid.get(pid)
        if act is None:
            continue  # its wait ended between the two statements
        waited = lock.get("wait_seconds")
        if waited is None:  # PostgreSQL 13, or waitstart not yet set
            waited = act.get("state_seconds") or 0.0
        result.append(
            Waiter(
                pid=pid,
                application_name=str(act.get("application_name") or ""),
                mode=str(lock.get("mode") or ""),
                locktype=str(lock.get("locktype") or ""),
                relation=int(lock["relation"]) if lock.get("relation") is not None else None,
                wait_seconds=max(0.0, float(waited)),
                blocked_by=tuple(int(p) for p in lock.get("blocked_by") or ()),
            )
        )
    return result


def summarize(found: Sequence[Waiter], own_application_name: str) -> LockSummary:
    """Counts over the waiting backends, the exporter's own left out (pure)."""
    exclusive = {w.pid for w in found if w.mode == ACCESS_EXCLUSIVE and w.locktype == "relation"}
    counted = [w for w in found if w.application_name != own_application_name]
    # one backend waits on one lock, but parallel workers can repeat a leader's pid
    pids = {w.pid for w in counted}
    behind = {w.pid for w in counted if exclusive.intersection(w.blocked_by)}
    return LockSummary(
        waiting=len(pids),
        longest_wait_seconds=max((w.wait_seconds for w in counted), default=0.0),
        access_exclusive_waiting=len(exclusive & pids),
        waiting_behind_access_exclusive=len(behind),
        access_exclusive_pids=tuple(sorted(exclusive & pids)),
    )


def parse(summary: LockSummary) -> list[Family]:
    return [
        gauge(
            "gecko_lock_waiting_backends",
            "Backends waiting on a heavyweight lock (exporter sessions excluded).",
            float(summary.waiting),
        ),
        gauge(
            "gecko_lock_longest_wait_seconds",
            "Longest current lock wait; 0 when none.",
            summary.longest_wait_seconds,
        ),
        gauge(
            "gecko_lock_access_exclusive_waiting",
            "ACCESS EXCLUSIVE relation lock requests waiting (DDL in the lock queue).",
            float(summary.access_exclusive_waiting),
        ),
        gauge(
            "gecko_lock_waiting_behind_access_exclusive",
            "Backends queued behind a waiting ACCESS EXCLUSIVE request.",
            float(summary.waiting_behind_access_exclusive),
        ),
    ]


class LocksProbe:
    name = "locks"
    lane: LaneName = "activity"

    def __init__(self, own_application_name: str) -> None:
        self.own_application_name = own_application_name
        self._queue: tuple[int, ...] = ()
        #: the last answer: families equal to it are returned as the same objects
        self._last: tuple[Family, ...] = ()

    async def collect(self, session: Session, now: float) -> list[Family]:
        del now
        activity = await session.fetch(WAITING_SQL)
        if not activity:
            summary = summarize([], self.own_application_name)
        else:
            pids = [int(r["pid"]) for r in activity]
            locks = await session.fetch(locks_sql(session.server_version), {"pids": pids})
            summary = summarize(waiters(activity, locks), self.own_application_name)
        self._log_queue(summary)
        self._last = keep_unchanged(parse(summary), self._last)
        return list(self._last)

    def _log_queue(self, summary: LockSummary) -> None:
        queue = summary.access_exclusive_pids if summary.waiting_behind_access_exclusive else ()
        if queue and queue != self._queue:
            log.warning(
                "lock_queue_behind_access_exclusive",
                access_exclusive_pids=list(queue),
                waiting_behind=summary.waiting_behind_access_exclusive,
                longest_wait_seconds=round(summary.longest_wait_seconds, 3),
            )
        elif not queue and self._queue:
            log.info("lock_queue_cleared", access_exclusive_pids=list(self._queue))
        self._queue = queue

    def persistent(self) -> list[Family]:
        return []
