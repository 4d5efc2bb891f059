"""Runbooks: one per alert, with the expected parts, correctly quoted SQL that really runs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import yaml

from tests.alerting.conftest import ALERT_RULES, REPO_ROOT
from tests.conftest import GeckoDatabase

RUNBOOKS = REPO_ROOT / "docs" / "runbooks"
RULES = yaml.safe_load((ALERT_RULES / "gecko-exporter.rules.yml").read_text())
ALERTS = [r for g in RULES["groups"] for r in g["rules"] if "alert" in r]
ALERT_NAMES = sorted({r["alert"] for r in ALERTS})

#: Gecko Advisor identifiers that need double quotes (mixed case).
GECKO_IDENTIFIERS = (
    "Scan", "Evidence", "Issue", "CachedList", "User", "RateLimit", "WatchedUrl",
    "normalizedInput", "targetType", "finishedAt", "startedAt", "createdAt", "updatedAt",
    "dedupeOfId", "shareMessage", "userId", "isPublic", "isProScan", "scannerIp", "scanId",
    "sortWeight", "howToFix", "whyItMatters", "fetchedAt", "IssueSeverity",
)  # fmt: skip

#: Catalog names that do not exist (any more) on PostgreSQL 13+.
OLD_CATALOG_NAMES = (
    r"(?<!exec_)\bmean_time\b",
    r"(?<!exec_)\btotal_time\b",
    r"(?<!exec_)\bmax_time\b",
    r"\bprocpid\b",
    r"\bcurrent_query\b",
    r"\bwaiting\b\s*(=|,|\bIS\b)",
    r"pg_stat_user_(tables|indexes)[^;]*\b(tablename|indexname)\b",
)


@dataclass(frozen=True)
class SqlBlock:
    runbook: str
    tags: tuple[str, ...]
    text: str

    @property
    def mitigation(self) -> bool:
        return "mitigation" in self.tags

    @property
    def min_major(self) -> int:
        for tag in self.tags:
            match = re.fullmatch(r"pg(\d+)\+", tag)
            if match:
                return int(match.group(1))
        return 13

    def __str__(self) -> str:
        return f"{self.runbook}: {self.text.strip().splitlines()[0][:60]}"


def sql_blocks(path: Path) -> list[SqlBlock]:
    blocks = []
    for info, body in re.findall(r"^```(sql[^\n]*)\n(.*?)^```", path.read_text(), re.M | re.S):
        blocks.append(SqlBlock(path.stem, tuple(info.split()[1:]), body))
    return blocks


ALL_BLOCKS = [b for name in ALERT_NAMES for b in sql_blocks(RUNBOOKS / f"{name}.md")]
DIAGNOSTIC_BLOCKS = [b for b in ALL_BLOCKS if not b.mitigation]


def strip_literals_and_comments(sql: str) -> str:
    sql = re.sub(r"--[^\n]*", "", sql)
    return re.sub(r"'(?:[^']|'')*'", "''", sql)


@pytest.mark.parametrize("alert", ALERT_NAMES)
def test_runbook_has_meaning_first_checks_and_mitigation(alert: str) -> None:
    path = RUNBOOKS / f"{alert}.md"
    text = path.read_text()
    assert text.startswith(f"# {alert}\n")
    sections = re.findall(r"^## (.+)$", text, re.M)
    assert sections[:3] == ["Meaning", "First checks", "Mitigation"], sections
    first_checks = text.split("## First checks", 1)[1].split("## Mitigation", 1)[0]
    assert "```sql\n" in first_checks, f"{alert}: no SQL to run first"
    for severity in {r["labels"]["severity"] for r in ALERTS if r["alert"] == alert}:
        assert re.search(rf"\*\*{severity}\*\*|\b{severity} \(", text), f"{alert}: {severity}?"


def test_runbook_index_lists_every_alert() -> None:
    index = (RUNBOOKS / "README.md").read_text()
    for alert in ALERT_NAMES:
        assert f"[{alert}]({alert}.md)" in index
    assert {p.stem for p in RUNBOOKS.glob("Gecko*.md")} == set(ALERT_NAMES)


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=str)
def test_runbook_sql_quotes_gecko_identifiers(block: SqlBlock) -> None:
    code = strip_literals_and_comments(block.text)
    for ident in GECKO_IDENTIFIERS:
        bare = re.findall(rf'(?<!["\w]){ident}(?!["\w])', code)
        assert not bare, f"{block}: unquoted {ident}"


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=str)
def test_runbook_sql_uses_current_catalog_names(block: SqlBlock) -> None:
    code = strip_literals_and_comments(block.text)
    for pattern in OLD_CATALOG_NAMES:
        assert not re.search(pattern, code, re.I | re.S), f"{block}: {pattern}"
    if "waitstart" in code:
        assert block.min_major >= 14, f"{block}: pg_locks.waitstart needs pg14+"
    if "GENERIC_PLAN" in code:
        assert block.min_major >= 16, f"{block}: EXPLAIN (GENERIC_PLAN) needs pg16+"
    if "<" in re.sub(r"<>|<=|<\s", "", code):
        assert block.mitigation, f"{block}: placeholders belong in mitigation blocks"


def test_the_quoting_check_catches_unquoted_identifiers() -> None:
    bad = SqlBlock("x", (), "SELECT normalizedInput FROM \"Scan\" WHERE status = 'Scan';")
    with pytest.raises(AssertionError, match="unquoted normalizedInput"):
        test_runbook_sql_quotes_gecko_identifiers(bad)


@pytest.mark.integration
@pytest.mark.parametrize("block", DIAGNOSTIC_BLOCKS, ids=str)
def test_runbook_first_checks_run_read_only_as_the_monitoring_role(
    block: SqlBlock, gecko_db_any: GeckoDatabase
) -> None:
    if gecko_db_any.major < block.min_major:
        pytest.skip(f"needs PostgreSQL {block.min_major}+")
    with psycopg.connect(gecko_db_any.monitor_dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute("SET default_transaction_read_only = on")
        conn.execute("SET statement_timeout = '30s'")
        conn.execute(block.text)
        assert not conn.info.transaction_status, "a block left a transaction open"
