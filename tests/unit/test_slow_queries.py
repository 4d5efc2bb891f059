"""Slow-query de-duplication (pure)."""

from __future__ import annotations

from datetime import datetime

from exporter.probes.slow_queries import SlowQueryTracker, build_sql

T0 = datetime(2026, 1, 1, 12, 0, 0)
T1 = datetime(2026, 1, 1, 12, 5, 0)


def row(
    pid: int, seconds: float, state: str = "active", start: datetime = T0, **kw: object
) -> dict:  # type: ignore[type-arg]
    return {"pid": pid, "state": state, "query_start": start, "query_seconds": seconds,
            "state_seconds": seconds, "usename": "app", "application_name": "api",
            "datname": "privacy", "query_id": 42, "query": "SELECT pg_sleep(7)", **kw}  # fmt: skip


def test_counts_each_query_once() -> None:
    t = SlowQueryTracker(5)
    assert t.update([row(1, 1)]).new_slow == ()
    first = t.update([row(1, 5.5)])
    assert [q.pid for q in first.new_slow] == [1]
    assert first.longest_active_seconds == 5.5
    for s in (6, 7, 8):
        assert t.update([row(1, s)]).new_slow == ()
    assert t.total == 1
    done = t.update([])
    assert [q.pid for q in done.finished_slow] == [1]
    assert done.slow_running == 0
    assert done.longest_active_seconds == 0


def test_same_pid_new_query_counts_again() -> None:
    t = SlowQueryTracker(5)
    t.update([row(1, 6)])
    summary = t.update([row(1, 6, start=T1)])
    assert len(summary.new_slow) == 1
    assert len(summary.finished_slow) == 1
    assert t.total == 2


def test_threshold_is_strict_and_idle_in_transaction_separate() -> None:
    t = SlowQueryTracker(5)
    s = t.update([row(1, 5.0), row(2, 30, state="idle in transaction"),
                  row(3, 9, state="idle in transaction (aborted)")])  # fmt: skip
    assert s.new_slow == ()
    assert s.longest_active_seconds == 5.0
    assert s.longest_idle_in_transaction_seconds == 30
    assert t.total == 0


def test_sql_uses_query_id_only_from_14() -> None:
    assert "query_id AS query_id" in build_sql(140000)
    assert "NULL::bigint AS query_id" in build_sql(130010)
