"""Client-side bound literals (``Session.fetch_literals``) and the pre-16 generic plan path.

``EXECUTE name(...)`` takes no bind parameters, so the plan probe's arguments are
quoted by psycopg (``ClientCursor``) instead of by hand. Checked on PostgreSQL 18
and 15; the PREPARE / EXPLAIN EXECUTE path is forced on 18 too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

import pytest

from exporter.db.session import LaneSession
from exporter.errors import DatabaseError
from exporter.probes.app_queries import scan_by_slug
from exporter.probes.plans import generic_plan_steps, plan_root, plan_shape, uses_index
from tests.health.conftest import HealthDb, ProbeRunner, probe_runner

pytestmark = pytest.mark.integration

T = TypeVar("T")

#: the report query by slug (its generic plan is on Scan_slug_key whatever the value)
REPORT_SCAN = scan_by_slug("public")
TRICKY = "https://a.example/?q='x'&p=back\\slash\\'; DROP TABLE \"Scan\"; --"


def in_session(runner: ProbeRunner, body: Callable[[LaneSession], Awaitable[T]]) -> T:
    async def run() -> T:
        async with runner.db.lane("app").session(2.0) as session:
            return await body(session)

    return runner.loop.run_until_complete(run())


def test_literals_round_trip_exactly(health_db: HealthDb) -> None:
    when = datetime(2026, 11, 24, 8, 0, 0, 123000)

    async def body(session: LaneSession) -> dict[str, object]:
        rows = await session.fetch_literals(
            "SELECT %s::text AS a, %s::timestamp AS b, %s::int AS c", (TRICKY, when, 7)
        )
        return rows[0]

    with probe_runner(health_db.monitor_dsn) as runner:
        row = in_session(runner, body)
    assert row == {"a": TRICKY, "b": when, "c": 7}


def test_a_value_that_cannot_be_quoted_is_a_database_error(health_db: HealthDb) -> None:
    async def body(session: LaneSession) -> list[dict[str, object]]:
        with pytest.raises(DatabaseError):
            await session.fetch_literals("SELECT %s::text AS a", ("a\x00b",))
        return await session.fetch("SELECT 1 AS one")  # the session is still usable

    with probe_runner(health_db.monitor_dsn) as runner:
        assert in_session(runner, body) == [{"one": 1}]


def test_generic_plan_through_prepare_and_execute(health_db: HealthDb) -> None:
    """PREPARE + EXPLAIN EXECUTE with driver-quoted arguments (the path before PostgreSQL 16).

    A quote, backslashes and a comment in the slug stay one literal: the plan is the
    report lookup's (on ``Scan_slug_key``) and the statement is deallocated after.
    """
    values = (TRICKY, 1, 0)
    assert REPORT_SCAN.count("%s") == len(values)

    async def body(session: LaneSession) -> tuple[dict[str, object], list[dict[str, object]]]:
        explained: list[dict[str, object]] = []
        for step in generic_plan_steps(150000, "literal_test", REPORT_SCAN, values):
            if step.literals is None:
                result = await session.fetch(step.sql, prepare=False)
            else:
                result = await session.fetch_literals(step.sql, step.literals)
            if step.explains:
                explained = result
        left = await session.fetch(
            "SELECT count(*) AS n FROM pg_prepared_statements"
            " WHERE name = 'gecko_plan_literal_test'"
        )
        return explained[0], left

    with probe_runner(health_db.monitor_dsn) as runner:
        row, left = in_session(runner, body)
    assert uses_index(plan_shape(plan_root(next(iter(row.values())))), "Scan_slug_key")
    assert left == [{"n": 0}]  # DEALLOCATE ran


def test_pre_16_servers_take_the_execute_path(health_db: HealthDb) -> None:
    steps = generic_plan_steps(health_db.major * 10000, "q", REPORT_SCAN, (TRICKY, 1, 0))
    with_literals = [s for s in steps if s.literals is not None]
    if health_db.major < 16:
        assert len(with_literals) == 1 and with_literals[0].explains
        assert with_literals[0].sql.endswith("EXECUTE gecko_plan_q(%s, %s, %s)")
        assert with_literals[0].literals == (TRICKY, 1, 0)
    else:
        assert with_literals == [] and "GENERIC_PLAN" in steps[0].sql
