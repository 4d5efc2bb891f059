"""The app's statements in pg_stat_statements and the stable statement series (pure logic).

Texts below are what pg_stat_statements stores for the app's statements (constants
replaced by ``$n`` after the bound parameters), copied from PostgreSQL 15 and 18.
"""

from __future__ import annotations

from typing import Any

import pytest

from exporter.probes import app_queries
from exporter.probes.app_statements import (
    APP_QUERY_NAMES,
    AppStatements,
    app_shapes,
    fingerprint,
    texts_sql,
)
from exporter.probes.statements import EntrySnapshot, SeriesMembership, StatementTracker, ranked
from tests.health.conftest import series

STORED_RECENT = (
    'SELECT s."id", s."slug", s."input", s."score", s."label", s."createdAt", '
    'COALESCE(ev."_aggr_count_evidence", $4) AS "_aggr_count_evidence" FROM "public"."Scan" s '
    'LEFT JOIN (SELECT "scanId", COUNT(*) AS "_aggr_count_evidence" FROM "public"."Evidence" '
    'WHERE $5=$6 GROUP BY "scanId") ev ON s."id" = ev."scanId" WHERE s."status" = $1 '
    'ORDER BY s."createdAt" DESC LIMIT $2 OFFSET $3'
)


def stored(sql: str) -> str:
    """psycopg's ``%s`` as the server numbers them (what an entry's text holds)."""
    parts = sql.split("%s")
    return "".join(p + (f"${i + 1}" if i < len(parts) - 1 else "") for i, p in enumerate(parts))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- fingerprints ----------------------------------------------------------------
def test_every_app_statement_is_recognised_as_stored() -> None:
    shapes = app_shapes("public")
    assert sorted(set(shapes.values())) == sorted(APP_QUERY_NAMES)
    assert shapes[fingerprint(STORED_RECENT)] == "recent_reports"
    for name, sql in [
        ("scan_lookup", app_queries.dedupe_lookup("public")),
        ("report_scan", app_queries.scan_by_slug("public")),
        ("report_scan", app_queries.scan_by_id("public")),
        ("report_evidence", app_queries.evidence_for_scan("public")),
        ("report_issues", app_queries.issues_for_scan("public")),
    ]:
        text = stored(sql).replace(" AND 1=1", " AND $9=$10")
        assert shapes[fingerprint(text)] == name


def test_layout_comments_and_case_do_not_matter() -> None:
    base = fingerprint(STORED_RECENT)
    squeezed = STORED_RECENT.replace(", ", ",").replace(" = ", "=")
    tagged = STORED_RECENT + " /*route='%2Fapi%2Freports%2Frecent',traceparent='00-ab-cd-01'*/;"
    lower = STORED_RECENT.replace("SELECT", "select").replace("LIMIT", "limit")
    multiline = STORED_RECENT.replace(" FROM ", "\n  FROM ").replace(" WHERE", " -- note\nWHERE")
    literal = STORED_RECENT.replace("$1", "'done'").replace("$2", "10")
    for text in (squeezed, tagged, lower, multiline, literal):
        assert fingerprint(text) == base


def test_other_statements_are_not_the_apps() -> None:
    shapes = app_shapes("public")
    near_misses = [
        STORED_RECENT.replace('"public"."Evidence"', '"public"."Issue"'),  # another table
        STORED_RECENT.replace('s."status" = $1', 's."status" <> $1'),  # another operator
        STORED_RECENT.replace('"Scan"', '"scan"'),  # quoted identifiers keep their case
        stored(app_queries.recent_done_scans("public")),  # the exporter's sampler
        'SELECT "public"."Scan"."id","public"."Scan"."status" FROM "public"."Scan" '
        'WHERE ("public"."Scan"."id" = $1 AND $4=$5) LIMIT $2 OFFSET $3',  # status poll
    ]
    for text in near_misses:
        assert fingerprint(text) not in shapes
    # the app in another schema: its own shapes
    assert fingerprint(stored(app_queries.dedupe_lookup("gecko"))) in app_shapes("gecko")
    assert fingerprint(stored(app_queries.dedupe_lookup("gecko"))) not in shapes


def test_texts_sql() -> None:
    sql = texts_sql('"ext"', exclude_own_role=True)
    assert '"ext".pg_stat_statements(showtext := true)' in sql
    assert "s.queryid = ANY(%s::bigint[])" in sql and "s.userid <>" in sql
    assert "s.userid <>" not in texts_sql('"ext"', exclude_own_role=False)


# -- counting --------------------------------------------------------------------
def row(
    queryid: str,
    calls: float,
    ms: float,
    rows: float = 0,
    *,
    userid: str = "10",
    own: bool = False,
    since: str | None = None,
) -> dict[str, Any]:
    return {
        "userid": userid,
        "queryid": queryid,
        "own": own,
        "calls": calls,
        "total_ms": ms,
        "max_ms": ms,
        "rows": rows,
        "since": since,
        "toplevel": True,
    }


TEXTS = {
    "1": STORED_RECENT,
    "2": stored(app_queries.dedupe_lookup("public")),
    "3": "SELECT $1",
    "4": STORED_RECENT,  # the same shape under another queryid (parameter types, new table)
    "5": stored(app_queries.scan_by_slug("public")),
    "6": stored(app_queries.evidence_for_scan("public")),
    "7": stored(app_queries.issues_for_scan("public")),
}


def run(app: AppStatements, rows: list[dict[str, Any]]) -> list[str]:
    """One probe run: classify what it asks for (with TEXTS), then count."""
    asked = app.to_classify(rows)
    if asked:
        app.learn(asked, [{"queryid": q, "query": TEXTS[q]} for q in asked if q in TEXTS])
    app.update(rows)
    return asked


def calls(app: AppStatements) -> dict[tuple[str, ...], float]:
    return series(app.persistent(), "gecko_app_query_calls_total")


def identified(app: AppStatements) -> dict[tuple[str, ...], float]:
    return series(app.families(), "gecko_app_query_identified")


def test_counts_and_identifies_by_text() -> None:
    app = AppStatements("public", clock=Clock())
    assert set(calls(app)) == {(n,) for n in APP_QUERY_NAMES}  # every name, from the start
    assert set(identified(app).values()) == {0.0}
    assert run(app, [row("1", 5, 50, 50), row("3", 100, 1)]) == ["1", "3"]
    assert calls(app)[("recent_reports",)] == 5
    assert series(app.persistent(), "gecko_app_query_exec_time_seconds_total")[
        ("recent_reports",)
    ] == pytest.approx(0.05)
    assert series(app.persistent(), "gecko_app_query_rows_total")[("recent_reports",)] == 50
    assert identified(app)[("recent_reports",)] == 1 and identified(app)[("scan_lookup",)] == 0
    run(app, [row("1", 7, 70, 70), row("3", 200, 2)])
    assert calls(app)[("recent_reports",)] == 7
    assert app.text_reads == 1  # nothing new: no second text read


def test_the_exporters_own_rows_never_count() -> None:
    app = AppStatements("public", clock=Clock())
    assert run(app, [row("2", 500, 900, userid="20", own=True)]) == []  # own: not even read
    assert calls(app)[("scan_lookup",)] == 0 and identified(app)[("scan_lookup",)] == 0
    run(app, [row("2", 500, 900, userid="20", own=True), row("2", 3, 30, userid="10")])
    assert calls(app)[("scan_lookup",)] == 3 and identified(app)[("scan_lookup",)] == 1


def test_counters_never_decrease() -> None:
    app = AppStatements("public", clock=Clock())
    run(app, [row("1", 10, 100, 10)])
    run(app, [row("1", 15, 150, 15)])
    assert calls(app)[("recent_reports",)] == 15
    run(app, [])  # pg_stat_statements_reset(): the entry is gone
    assert calls(app)[("recent_reports",)] == 15 and identified(app)[("recent_reports",)] == 0
    run(app, [row("1", 2, 20, 2)])  # back, counting from zero
    assert calls(app)[("recent_reports",)] == 17
    run(app, [row("1", 1, 10, 1)])  # reset between two reads: the current value is new
    assert calls(app)[("recent_reports",)] == 18
    seconds = series(app.persistent(), "gecko_app_query_exec_time_seconds_total")
    assert seconds[("recent_reports",)] == pytest.approx(0.18)


def test_a_recreated_entry_is_told_by_stats_since() -> None:
    app = AppStatements("public", clock=Clock())
    run(app, [row("1", 10, 100, since="2026-01-01 00:00:00")])
    # evicted and re-created, already past its old totals: PostgreSQL 17+ says so
    run(app, [row("1", 12, 120, since="2026-01-01 00:05:00")])
    assert calls(app)[("recent_reports",)] == 22


def test_new_queryids_of_a_known_shape_count_too() -> None:
    """Other parameter types or a recreated table: a new queryid, the same text shape."""
    clock = Clock()
    app = AppStatements("public", text_refresh_seconds=300, clock=clock)
    others = [row(q, 1, 1) for q in "2567"]
    run(app, [row("1", 10, 100), *others])
    assert set(identified(app).values()) == {1.0}
    # within text_refresh_seconds, every name identified: no text read yet
    clock.now += 60
    assert app.to_classify([row("1", 10, 100), row("4", 4, 40), *others]) == []
    app.update([row("1", 10, 100), row("4", 4, 40), *others])
    # later: read, and the entry's calls since it was created are all added
    clock.now += 300
    assert run(app, [row("1", 10, 100), row("4", 6, 60), *others]) == ["4"]
    assert calls(app)[("recent_reports",)] == 16 and app.text_reads == 2


def test_texts_are_read_at_every_run_while_a_name_is_missing() -> None:
    clock = Clock()
    app = AppStatements("public", text_refresh_seconds=300, clock=clock)
    assert run(app, [row("3", 1, 1)]) == ["3"]
    clock.now += 1
    assert run(app, [row("3", 1, 1), row("1", 2, 2)]) == ["1"]  # no name identified yet
    assert identified(app)[("recent_reports",)] == 1
    # once classified, a queryid is not read again, identified or not
    clock.now += 1
    assert app.to_classify([row("3", 1, 1), row("1", 2, 2)]) == []


def test_the_cache_forgets_queryids_that_left() -> None:
    app = AppStatements("public", clock=Clock())
    run(app, [row("1", 1, 1), row("3", 1, 1)])
    assert set(app.names) == {"1", "3"}
    run(app, [row("1", 2, 2)])
    assert set(app.names) == {"1"}


def test_unavailable_keeps_counters_and_clears_identified() -> None:
    app = AppStatements("public", clock=Clock())
    run(app, [row("1", 4, 4)])
    app.unavailable()
    assert set(identified(app).values()) == {0.0}
    assert calls(app)[("recent_reports",)] == 4


# -- stable statement series ------------------------------------------------------
def test_membership_enter_stay_leave() -> None:
    m = SeriesMembership(2, retention_seconds=100, max_series=10)
    assert m.update(["a", "b", "c", "d"], 0) == ["a", "b"]  # enter: top 2
    assert m.update(["c", "d", "a", "b"], 10) == ["a", "b", "c", "d"]  # a, b still in top 4
    # a drops out of the top 4 at t=20 (last seen there at 10)
    assert m.update(["c", "d", "b", "e", "a"], 20) == ["a", "b", "c", "d"]
    assert m.update(["c", "d", "b", "e"], 109) == ["a", "b", "c", "d"]  # 99 s out: stays
    assert m.update(["c", "d", "b", "e"], 110) == ["b", "c", "d"]  # 100 s out: leaves
    assert m.update([], 209) == ["b", "c", "d"]  # a quiet interval ranks nobody
    assert m.update([], 300) == []
    # ranking 3rd-4th never lets a statement enter
    assert m.update(["x", "y", "e", "f"], 400) == ["x", "y"]


def test_membership_hard_cap() -> None:
    m = SeriesMembership(1, retention_seconds=1000, max_series=3)
    m.update(["a"], 0)
    m.update(["b"], 1)
    m.update(["c"], 2)
    assert sorted(m.members) == ["a", "b", "c"]
    # full: the newcomer replaces the member longest out of the top 2
    assert m.update(["d", "c"], 3) == ["b", "c", "d"]
    # every member ranks in the top 2... and the cap holds: the newcomer waits
    m2 = SeriesMembership(2, retention_seconds=1000, max_series=2)
    m2.update(["a", "b"], 0)
    assert m2.update(["c", "a", "b"], 1) == ["a", "b"] and m2.refused == 1
    with pytest.raises(ValueError, match="max_series"):
        SeriesMembership(5, retention_seconds=1, max_series=4)


def test_series_stay_stable_while_the_ranking_shifts() -> None:
    """A workload whose top statements rotate: the exported set keeps its members."""
    tracker = StatementTracker(top_n=3)
    m = SeriesMembership(3, retention_seconds=300, max_series=20)
    totals = dict.fromkeys("abcdef", 0.0)
    history: list[list[str]] = []
    for minute in range(10):
        busy = "abcdef"[minute % 6 :] + "abcdef"[: minute % 6]  # rotate the ranking
        for weight, q in enumerate(reversed(busy), start=1):
            totals[q] += weight * 10
        rows = [{"queryid": q, "calls": 1, "total_ms": t, "max_ms": 1} for q, t in totals.items()]
        stats = tracker.observe(rows)
        history.append(m.update([s.queryid for s in ranked(stats.values())], minute * 60.0))
    # every statement ranked in the top 3 at some point and never left the top 6
    assert all(h == list("abcdef") for h in history[3:])
    assert history[:3] == [list("abc"), list("abcd"), list("abcde")]


def test_entry_snapshot_rebuilds_the_full_set_from_changes() -> None:
    snap = EntrySnapshot()
    assert snap.params() == ([], [], [], [])
    full = snap.apply([{**row("1", 5, 50), "kind": "entry"}, {**row("2", 1, 1), "kind": "entry"}])
    assert sorted(r["queryid"] for r in full) == ["1", "2"]
    assert snap.params() == ([10, 10], [1, 2], [True, True], [5.0, 1.0])
    # only what changed comes back: 1 ran again, 2 is gone (reset or evicted), 3 is new
    full = snap.apply(
        [
            {**row("1", 6, 60), "kind": "entry"},
            {"kind": "gone", "userid": "10", "queryid": "2", "toplevel": True},
            {**row("1", 2, 2), "toplevel": False, "kind": "entry"},  # nested: its own entry
            {**row("3", 1, 1, userid="11"), "kind": "entry"},
        ]
    )
    assert sorted((r["userid"], r["queryid"], r["calls"]) for r in full) == [
        ("10", "1", 2),
        ("10", "1", 6),
        ("11", "3", 1),
    ]
    assert snap.apply([]) == full  # nothing changed: nothing transferred, nothing lost


def test_texts_of_other_tables_are_not_tokenized(monkeypatch: pytest.MonkeyPatch) -> None:
    """Most texts in pg_stat_statements are none of the app's: ones that lack a quoted
    identifier every shape has are rejected before the (costly) tokenizer; the app's own
    texts, stored or as psycopg sends them, are still classified."""
    import exporter.probes.app_statements as module  # noqa: PLC0415

    app = AppStatements("public")
    calls: list[str] = []
    real = module.fingerprint

    def counting(sql: str) -> str:
        calls.append(sql)
        return real(sql)

    monkeypatch.setattr(module, "fingerprint", counting)
    others = [
        'SELECT "id", "email" FROM "public"."User" WHERE "email" = $1 LIMIT $2',
        'UPDATE "public"."Scan" SET "status" = $1 WHERE "id" = $2',
        "SELECT pg_sleep($1)",
    ]
    for text in others:
        assert app.classify(text) is None
    assert calls == []
    assert app.classify(STORED_RECENT) == "recent_reports"
    assert app.classify(stored(app_queries.scan_by_slug("public"))) == "report_scan"
    assert app.classify(app_queries.issues_for_scan("public")) == "report_issues"
    assert len(calls) == 3
