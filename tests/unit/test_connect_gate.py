"""Connection failures: bounded reasons, the shared auth backoff, one summary a minute (pure)."""

from __future__ import annotations

import itertools

import psycopg
import pytest
from psycopg import errors as pgerrors
from structlog.testing import capture_logs

from exporter.db.session import (
    CONNECT_FAILURE_REASONS,
    ConnectGate,
    Health,
    classify_connect_error,
    tcp_liveness_params,
)

LANES = ("activity", "app", "catalog")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (
            'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  '
            'password authentication failed for user "gecko_monitor"',
            "auth",
        ),
        (
            'connection failed: connection to server at "10.0.0.1", port 5432 failed: FATAL:  '
            'no pg_hba.conf entry for host "10.0.0.9", user "u", database "d", no encryption',
            "auth",
        ),
        ("connection failed: fe_sendauth: no password supplied", "auth"),
        ('FATAL:  role "gecko_monitor" is not permitted to log in', "auth"),
        ("FATAL:  sorry, too many clients already", "too_many_connections"),
        (
            "FATAL:  remaining connection slots are reserved for roles with the SUPERUSER attribute",
            "too_many_connections",
        ),
        ("ERROR:  no more connections allowed (max_client_conn)", "too_many_connections"),
        ("FATAL:  the database system is starting up", "cannot_connect_now"),
        ("FATAL:  the database system is shutting down", "cannot_connect_now"),
        (
            'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection '
            "refused\n\tIs the server running on that host and accepting TCP/IP connections?",
            "refused",
        ),
        (
            "failed to resolve host 'db.invalid': [Errno -2] Name or service not known",
            "dns",
        ),
        ('could not translate host name "db.invalid" to address', "dns"),
        ("connection failed: timeout expired", "timeout"),
        ("server closed the connection unexpectedly", "other"),
        ('FATAL:  database "nodb" does not exist', "other"),
    ],
)
def test_connect_errors_map_to_bounded_reasons(message: str, reason: str) -> None:
    assert classify_connect_error(psycopg.OperationalError(message)) == reason
    assert reason in CONNECT_FAILURE_REASONS


def test_timeouts_are_timeouts_whatever_the_message() -> None:
    assert classify_connect_error(TimeoutError()) == "timeout"
    assert classify_connect_error(pgerrors.ConnectionTimeout("whatever")) == "timeout"


def test_liveness_params_follow_the_connect_timeout() -> None:
    assert tcp_liveness_params(5) == {
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 1,
        "keepalives_count": 5,
        "tcp_user_timeout": 10000,
    }
    slow = tcp_liveness_params(30)
    assert slow["keepalives_idle"] == 30
    assert slow["tcp_user_timeout"] == (30 + 6 * 5) * 1000


def _gate(health: Health | None = None) -> ConnectGate:
    return ConnectGate(
        health or Health(),
        auth_backoff_initial_seconds=10,
        auth_backoff_max_seconds=300,
        target="db:5432/privacy",
    )


def _simulate_wrong_password(gate: ConnectGate, seconds: float) -> list[float]:
    """Three lanes that each want to connect every 0.1 s; every login is refused."""
    attempts: list[float] = []
    now = 0.0
    while now < seconds:
        for lane in LANES:
            if gate.blocked_for(now) > 0:
                continue
            gate.begin_attempt(now)
            attempts.append(now)
            gate.failed(lane, "auth", "OperationalError", started=now, now=now, logged=False)
        now = round(now + 0.1, 3)
    return attempts


def test_wrong_password_costs_a_handful_of_logins_a_minute() -> None:
    attempts = _simulate_wrong_password(_gate(), 3600)
    first_minute = [t for t in attempts if t < 60]
    # t=0, then 10 s, 20 s, 40 s ... apart: one login per backoff period for all lanes
    assert first_minute == [0.0, 10.0, 30.0]
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[:5] == [10.0, 20.0, 40.0, 80.0, 160.0]
    assert max(gaps) == pytest.approx(300.0)  # capped
    assert len(attempts) <= 3 + 60 * 60 / 60  # never more than about one a minute once capped


def test_lanes_refused_in_the_same_round_double_the_backoff_once() -> None:
    gate = _gate()
    for _lane in LANES:  # all three lanes started before the first refusal came back
        gate.begin_attempt(0.0)
    for i, lane in enumerate(LANES):
        gate.failed(lane, "auth", "OperationalError", started=0.0, now=0.1 * (i + 1), logged=True)
    assert gate.blocked_for(0.3) == pytest.approx(10.0)


def test_a_successful_login_ends_the_shared_backoff() -> None:
    gate = _gate()
    gate.failed("app", "auth", "OperationalError", started=0.0, now=0.0, logged=True)
    assert gate.blocked_for(1.0) > 0
    gate.succeeded("app")
    assert gate.blocked_for(1.0) == 0


def test_other_failures_do_not_block_every_lane() -> None:
    gate = _gate()
    gate.failed("app", "refused", "OperationalError", started=0.0, now=0.0, logged=True)
    assert gate.blocked_for(0.0) == 0


def test_failures_are_counted_by_reason() -> None:
    health = Health()
    gate = _gate(health)
    gate.failed("app", "refused", "OperationalError", started=0.0, now=0.0, logged=True)
    gate.failed("app", "refused", "OperationalError", started=1.0, now=1.0, logged=False)
    gate.failed("activity", "timeout", "TimeoutError", started=1.0, now=1.0, logged=True)
    counts = health.connect_failures()
    assert set(counts) == set(CONNECT_FAILURE_REASONS)  # zeros exported too
    assert counts["refused"] == 2
    assert counts["timeout"] == 1
    assert sum(counts.values()) == 3


def test_at_most_one_summary_line_a_minute() -> None:
    gate = _gate()
    with capture_logs() as logs:
        now = 0.0
        for lane in LANES:
            gate.failed(lane, "refused", "OperationalError", started=now, now=now, logged=True)
        while now < 185:  # every lane retries every 0.5 s for three minutes
            now += 0.5
            for lane in LANES:
                gate.failed(lane, "refused", "OperationalError", started=now, now=now, logged=False)
    summaries = [e for e in logs if e["event"] == "db_connect_failures_summary"]
    assert len(summaries) == 3
    assert all(e["log_level"] == "warning" for e in summaries)
    first = summaries[0]
    assert first["last_reason"] == "refused"
    assert first["last_error_class"] == "OperationalError"
    assert first["failing_lanes"] == list(LANES)
    # every retry of the first minute, counted: 3 lanes x 119 ticks, then the one that logs
    assert first["failures"] == 3 * 119 + 1
    assert first["reasons"] == {"refused": 358}
    assert "error" not in first  # never a driver message in the summary


def test_summary_period_restarts_after_every_lane_recovered() -> None:
    gate = _gate()
    with capture_logs() as logs:
        gate.failed("app", "refused", "OperationalError", started=0, now=0, logged=True)
        gate.failed("app", "refused", "OperationalError", started=1, now=1, logged=False)
        gate.succeeded("app")
        # a new outage two minutes later: its first retries are not summarised at once
        gate.failed("app", "refused", "OperationalError", started=120, now=120, logged=True)
        gate.failed("app", "refused", "OperationalError", started=121, now=121, logged=False)
        assert not [e for e in logs if e["event"] == "db_connect_failures_summary"]
        gate.failed("app", "refused", "OperationalError", started=181, now=181, logged=False)
    summaries = [e for e in logs if e["event"] == "db_connect_failures_summary"]
    assert len(summaries) == 1
    assert summaries[0]["failures"] == 2
