"""Settings of the health probes: defaults, overrides, bounds, and what the registry builds."""

from __future__ import annotations

import os

import pytest

from exporter.config import PROBE_NAMES
from exporter.errors import SettingsError
from exporter.probes.bloat import BloatProbe
from exporter.probes.indexes import DEFAULT_CRITICAL_INDEXES, IndexesProbe
from exporter.probes.migrations import MigrationsProbe
from exporter.probes.registry import build_pgbouncer_probe, build_probes
from exporter.probes.statements import StatementsProbe
from exporter.probes.tables import TablesProbe
from exporter.settings import load_config

DSN = "postgresql://mon:pw@db.example:5432/privacy"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("GECKO_"):
            monkeypatch.delenv(key)


def test_defaults_cover_every_probe_with_cadence_by_cost() -> None:
    s = load_config(overrides={"database_url": DSN})
    cadence = s.probe_settings()
    pgbouncer = build_pgbouncer_probe(s, lambda: True)  # scheduled only when configured
    assert set(cadence) == set(PROBE_NAMES) == {p.name for p in [*build_probes(s), pgbouncer]}
    assert cadence["locks"].interval_seconds <= 5  # cheap, and lock queues are short-lived
    assert cadence["bloat"].interval_seconds >= 300  # the most expensive
    assert s.critical_indexes == list(DEFAULT_CRITICAL_INDEXES)
    assert s.table_schemas() == ["public"]
    assert s.tables.max_tables == 30 and s.statements.top_n == 20
    assert s.bloat.pgstattuple is False
    assert s.migrations.advisory_lock_key == 72707369


def test_overrides_reach_the_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GECKO_TABLES__MAX_TABLES", "7")
    monkeypatch.setenv("GECKO_BLOAT__PGSTATTUPLE", "true")
    monkeypatch.setenv("GECKO_PROBES__PLANS__INTERVAL_SECONDS", "120")
    s = load_config(
        overrides={
            "database_url": DSN,
            "app_schema": "gecko",
            "critical_indexes": ["A_idx"],
            "statements": {"top_n": 5},
            "migrations": {"max_invalid_indexes": 3},
        }
    )
    probes = {p.name: p for p in build_probes(s)}
    tables = probes["tables"]
    assert isinstance(tables, TablesProbe)
    assert tables.max_tables == 7 and tables.schemas == ["gecko"]
    bloat = probes["bloat"]
    assert isinstance(bloat, BloatProbe) and bloat.pgstattuple and bloat.lane == "app"
    indexes = probes["indexes"]
    assert isinstance(indexes, IndexesProbe) and indexes.names == ("A_idx",)
    statements = probes["statements"]
    assert isinstance(statements, StatementsProbe) and statements.tracker.top_n == 5
    assert statements.membership.max_series == 100 and statements.app.text_refresh_seconds == 600
    migrations = probes["migrations"]
    assert isinstance(migrations, MigrationsProbe) and migrations.max_invalid == 3
    assert s.probe_settings()["plans"].interval_seconds == 120


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"tables": {"max_tables": 0}}, "tables.max_tables"),
        ({"tables": {"max_tables": 100000}}, "tables.max_tables"),
        ({"statements": {"top_n": 1000}}, "statements.top_n"),
        ({"statements": {"top_n": 50, "max_series": 10}}, "statements"),
        ({"statements": {"retention_seconds": -1}}, "statements.retention_seconds"),
        ({"migrations": {"max_invalid_indexes": 0}}, "migrations.max_invalid_indexes"),
        ({"critical_indexes": [""]}, "critical_indexes.0"),
        ({"tables": {"schemas": []}}, "tables.schemas"),
        ({"bloat": {"nope": True}}, "bloat.nope"),
    ],
)
def test_bounds_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(SettingsError, match=f"^{field}: "):
        load_config(overrides={"database_url": DSN, **overrides})
