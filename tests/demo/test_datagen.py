"""Synthetic data: shapes, proportions, uniqueness and determinism (no I/O)."""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from datetime import datetime, timedelta

import pytest

from gecko_demo import datagen
from gecko_demo.datagen import (
    ERROR_SUMMARIES,
    ISSUE_RULES,
    DataGenerator,
    GeneratedScan,
    evidence_count_quantiles,
    label_for,
)

NOW = datetime(2026, 11, 24, 8, 0, 0)
NANOID = set(string.ascii_letters + string.digits + "_-")
NORMALIZED = re.compile(r"^https?://[a-z0-9.-]+\.[a-z]{2,}(/[a-z/-]*)?$")
CUID = re.compile(r"^c[0-9a-z]{24}$")


@pytest.fixture(scope="module")
def scans() -> list[GeneratedScan]:
    gen = DataGenerator(3, now=NOW)
    gen.users(20)
    return list(gen.scans(6000))


def _done_urls(scans: list[GeneratedScan]) -> list[GeneratedScan]:
    return [s for s in scans if s.status == "done" and s.target_type == "url"]


def test_same_seed_and_now_give_identical_rows() -> None:
    def rows(seed: int) -> list[tuple[object, ...]]:
        out: list[tuple[object, ...]] = []
        for s in DataGenerator(seed, now=NOW).scans(300):
            out.append(s.scan_row())
            out.extend(s.evidence_rows())
            out.extend(s.issue_rows())
        return out

    first = rows(11)
    assert first == rows(11)
    assert first != rows(12)


def test_naive_utc_now_is_required() -> None:
    with pytest.raises(ValueError, match="naive UTC"):
        DataGenerator(1, now=datetime.fromisoformat("2026-11-24T08:00:00+00:00"))


def test_status_proportions_and_in_flight_tail(scans: list[GeneratedScan]) -> None:
    counts = Counter(s.status for s in scans)
    total = len(scans)
    assert 0.93 <= counts["done"] / total <= 0.98
    assert 0.015 <= counts["error"] / total <= 0.06
    in_flight = counts["queued"] + counts["running"]
    assert 5 <= in_flight <= total * 0.01
    # the newest submissions are still waiting for, or inside, a worker
    assert [s.status for s in scans[-5:]] == ["running", "running", "queued", "queued", "queued"]


def test_lifecycle_columns_follow_status(scans: list[GeneratedScan]) -> None:
    for s in scans:
        assert s.created_at <= s.updated_at
        if s.status == "queued":
            assert (s.started_at, s.finished_at, s.score, s.label) == (None, None, None, None)
            assert s.progress == 0
        elif s.status == "running":
            assert s.started_at is not None and s.started_at >= s.created_at
            assert s.finished_at is None and s.score is None
            assert 0 < s.progress < 100
        elif s.status == "error":
            assert s.started_at is not None and s.finished_at is not None
            assert s.finished_at > s.started_at
            assert s.summary in ERROR_SUMMARIES
            assert s.score is None and not s.evidence and not s.issues
        else:
            assert s.status == "done"
            assert s.started_at is not None and s.finished_at is not None
            assert s.progress == 100
            assert s.score is not None and 0 <= s.score <= 100
            assert s.label == label_for(s.score)
            assert s.summary and len(s.summary) <= 200


def test_done_url_scans_take_seconds_and_carry_meta(scans: list[GeneratedScan]) -> None:
    keys = {
        "trackerDomains", "thirdPartyDomains", "missingHeaders", "cookieIssues",
        "policyFound", "tlsGrade", "fingerprintDetected", "mixedContent",
    }  # fmt: skip
    for s in _done_urls(scans):
        assert s.started_at is not None and s.finished_at is not None
        assert timedelta(seconds=2) <= s.finished_at - s.started_at <= timedelta(seconds=15)
        assert s.meta is not None and set(s.meta) == keys
        assert s.meta["tlsGrade"] in ("A", "C")
        assert s.source in ("manual", "manual-force")


def test_stubs_are_done_without_evidence(scans: list[GeneratedScan]) -> None:
    stubs = [s for s in scans if s.source == "stub"]
    assert stubs, "about 1 % of scans are app/address stubs"
    for s in stubs:
        assert s.target_type in ("app", "address")
        assert s.normalized_input is None
        assert s.status == "done" and s.progress == 100 and s.score in (75, 80)
        assert not s.evidence and not s.issues
    for s in scans:
        assert (s.target_type == "url") == (s.normalized_input is not None)


def test_created_at_spans_ninety_days_in_order(scans: list[GeneratedScan]) -> None:
    created = [s.created_at for s in scans]
    assert created == sorted(created)
    assert created[0] >= NOW - timedelta(days=90)
    assert created[-1] <= NOW
    assert created[-1] - created[0] > timedelta(days=85)
    assert all(c.microsecond % 1000 == 0 for c in created)  # TIMESTAMP(3)


def test_slugs_and_ids_are_unique_and_well_formed(scans: list[GeneratedScan]) -> None:
    slugs = [s.slug for s in scans]
    assert len(set(slugs)) == len(slugs)
    assert all(len(slug) == 8 and set(slug) <= NANOID for slug in slugs)
    ids = [s.id for s in scans]
    ids += [ev_id for s in scans for ev_id, _ in s.evidence]
    ids += [iss_id for s in scans for iss_id, _ in s.issues]
    assert len(set(ids)) == len(ids)
    assert all(CUID.match(i) for i in ids)


def test_normalized_inputs_repeat_so_dedupe_lookups_hit(scans: list[GeneratedScan]) -> None:
    inputs = Counter(s.normalized_input for s in scans if s.normalized_input)
    assert all(NORMALIZED.match(n) for n in inputs), [n for n in inputs if not NORMALIZED.match(n)]
    total = sum(inputs.values())
    top_input, top_count = inputs.most_common(1)[0]
    assert top_count / total > 0.01, top_input
    assert len(inputs) < total / 2


def test_evidence_multiplicity_has_a_long_tail(scans: list[GeneratedScan]) -> None:
    q = evidence_count_quantiles(scans)
    assert 10 <= q["mean"] <= 25
    assert q["p50"] >= 5
    assert q["max"] >= 100


def test_evidence_rows_per_scan(scans: list[GeneratedScan]) -> None:
    for s in _done_urls(scans):
        kinds = Counter(ev.kind for _, ev in s.evidence)
        assert kinds["tls"] == 1
        assert kinds["policy"] <= 1
        trackers = [ev.title for _, ev in s.evidence if ev.kind == "tracker"]
        assert len(trackers) == len(set(trackers))
        for _, ev in s.evidence:
            assert 1 <= ev.severity <= 3
        # one createMany: every row of a scan has the same createdAt, before the final update
        assert s.evidence_created_at is not None and s.finished_at is not None
        assert s.started_at is not None
        assert s.started_at < s.evidence_created_at < s.finished_at


def test_issues_follow_the_scoring_table(scans: list[GeneratedScan]) -> None:
    seen: Counter[str] = Counter()
    for s in _done_urls(scans):
        keys = [iss.key for _, iss in s.issues]
        assert len(keys) == len(set(keys)) <= 8
        kinds = {ev.kind for _, ev in s.evidence}
        assert ("tracking.trackers" in keys) == ("tracker" in kinds)
        assert ("security.headers" in keys) == ("header" in kinds)
        assert ("security.cookies" in keys) == ("cookie" in kinds)
        assert ("compliance.policy" in keys) == ("policy" not in kinds)
        for _, iss in s.issues:
            rule = ISSUE_RULES[iss.key]
            assert (iss.category, iss.sort_weight, iss.title) == (
                rule.category, rule.sort_weight, rule.title,
            )  # fmt: skip
            assert iss.severity == rule.severity
            assert iss.severity not in ("critical", "info")
            assert len(iss.references) == 1 and set(iss.references[0]) == {"label", "url"}
            seen[iss.key] += 1
    assert seen["security.headers"] > seen["security.tls"] > 0


@pytest.mark.parametrize(
    ("score", "label"), [(100, "Safe"), (80, "Safe"), (79, "Caution"), (50, "Caution"),
                         (49, "High Risk"), (0, "High Risk")]
)  # fmt: skip
def test_label_thresholds(score: int, label: str) -> None:
    assert label_for(score) == label


def test_rows_match_the_copy_columns(scans: list[GeneratedScan]) -> None:
    s = next(s for s in _done_urls(scans) if s.issues)
    row = s.scan_row()
    assert len(row) == len(datagen.SCAN_COLUMNS) == 22
    assert json.loads(row[datagen.SCAN_COLUMNS.index("meta")]) == s.meta
    ev = next(s.evidence_rows())
    assert len(ev) == len(datagen.EVIDENCE_COLUMNS)
    assert isinstance(json.loads(ev[datagen.EVIDENCE_COLUMNS.index("details")]), dict)
    iss = next(s.issue_rows())
    assert len(iss) == len(datagen.ISSUE_COLUMNS)
    assert iss[datagen.ISSUE_COLUMNS.index("scanId")] == s.id


def test_users_and_cached_lists() -> None:
    gen = DataGenerator(5, now=NOW)
    users = gen.users(30)
    assert len(users) == 30 == len(set(gen.user_ids))
    assert all(len(u) == len(datagen.USER_COLUMNS) for u in users)
    emails = [u[1] for u in users]
    assert len(set(emails)) == 30
    lists = gen.cached_lists()
    assert [(row[1], row[2]) for row in lists] == [
        ("easyprivacy", "demo-1"), ("whotracks", "demo-1"), ("psl", "public-1"),
    ]  # fmt: skip
    assert all(100 <= len(row[4]) <= 400 for row in lists)  # small JSON, like the app's seed
    # some scans then belong to users
    owned = [s for s in gen.scans(3000) if s.user_id is not None]
    assert owned and {s.user_id for s in owned} <= set(gen.user_ids)


def test_crawl_is_stable_per_site_across_generators() -> None:
    a = DataGenerator(1, now=NOW)
    b = DataGenerator(99, now=NOW, site_seed=1)
    url = a.url_submission("github.com").normalized_input
    assert url is not None
    fa, fb = a.crawl(url), b.crawl(url)
    assert fa.meta["missingHeaders"] == fb.meta["missingHeaders"]
    assert fa.meta["tlsGrade"] == fb.meta["tlsGrade"]
    assert fa.meta["policyFound"] == fb.meta["policyFound"]
    assert a.hosts == b.hosts
