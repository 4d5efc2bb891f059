"""Probes that run every few seconds hand back the same family objects for an equal answer.

The store and the renderers skip a family that is the same object as the run before
(converted to text once per object); most answers of these probes are equal from
one run to the next (no lock waits, the same connections).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from exporter.probes.base import Session
from exporter.probes.connections import ConnectionsProbe, PoolMatcher
from exporter.probes.locks import LocksProbe
from exporter.samples import Family


class ScriptedSession:
    """Answers each statement with the next scripted rows."""

    server_version = 180000
    backend_pid = 1

    def __init__(self, answers: list[list[dict[str, Any]]]) -> None:
        self.answers = answers

    async def fetch(
        self, sql: str, params: object = None, *, prepare: bool | None = None
    ) -> list[dict[str, Any]]:
        del sql, params, prepare
        return self.answers.pop(0)

    async def fetch_one(
        self, sql: str, params: object = None, *, prepare: bool | None = None
    ) -> dict[str, Any] | None:
        rows = await self.fetch(sql, params, prepare=prepare)
        return rows[0] if rows else None


def run(probe: ConnectionsProbe | LocksProbe, *answers: list[dict[str, Any]]) -> list[Family]:
    session = cast(Session, ScriptedSession(list(answers)))
    return asyncio.run(probe.collect(session, 0.0))


def connections_row(active: int) -> dict[str, Any]:
    return {
        "max_connections": 100,
        "superuser_reserved": 3,
        "reserved": 0,
        "groups": [
            {"state": "active", "application_name": "api", "usename": "app",
             "client_addr": "", "n": active},
            {"state": "idle", "application_name": "api", "usename": "app",
             "client_addr": "", "n": 2},
        ],
    }  # fmt: skip


def test_connections_equal_answer_same_objects_changed_answer_new_values() -> None:
    probe = ConnectionsProbe([PoolMatcher("api", 10, application_name="api")])
    first = run(probe, [connections_row(3)])
    second = run(probe, [connections_row(3)])
    assert len(first) == len(second) and all(a is b for a, b in zip(first, second, strict=True))
    third = run(probe, [connections_row(5)])
    assert third != first
    by_name = {f.name: f for f in third}
    states = {s.labels: s.value for s in by_name["gecko_connections"].samples}
    assert states[("active",)] == 5


def test_locks_equal_answer_same_objects_changed_answer_new_values() -> None:
    probe = LocksProbe("gecko-exporter")
    first = run(probe, [])
    second = run(probe, [])
    assert len(first) == len(second) and all(a is b for a, b in zip(first, second, strict=True))
    waiting = [{"pid": 7, "application_name": "api"}]
    lock = [{"pid": 7, "blocked_by": [], "mode": "AccessShareLock", "locktype": "relation",
             "relation": 1, "wait_seconds": 2.5}]  # fmt: skip
    third = run(probe, waiting, lock)
    by_name = {f.name: f for f in third}
    assert by_name["gecko_lock_waiting_backends"].samples[0].value == 1.0
    assert by_name["gecko_lock_longest_wait_seconds"].samples[0].value == 2.5
