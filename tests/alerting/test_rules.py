"""The alert rules: generated files up to date, promtool lint and unit tests, contract."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from alert_rules import catalogue, generate, render, thresholds
from alert_rules.config import RUNBOOK_BASE_URL, load_config
from tests.alerting.conftest import ALERT_RULES, REPO_ROOT

RULES_FILE = ALERT_RULES / "gecko-exporter.rules.yml"
UNIT_TESTS = sorted((ALERT_RULES / "tests").glob("*.test.yml"))
METRICS_DOC = REPO_ROOT / "docs" / "metrics.md"

#: Alert names promised by issue #4 (a contract: routing, silences and runbooks use them).
CONTRACT_ALERTS = {
    "GeckoScanLookupSlow",
    "GeckoReportGenerationSlow",
    "GeckoConnectionPoolSaturated",
    "GeckoSlowQuery",
    "GeckoExporterDown",
    "GeckoDatabaseDown",
    "GeckoProbeFailing",
    "GeckoProbeStalled",
    "GeckoCriticalIndexMissing",
    "GeckoInvalidIndex",
    "GeckoQueryPlanRegression",
    "GeckoMigrationFailed",
    "GeckoLockQueueBehindDDL",
    "GeckoPgBouncerClientsWaiting",  # issue 11 §2
    "GeckoPgBouncerDown",
    # issue 9 item 8: planned long work has its own alerts, apart from GeckoSlowQuery
    "GeckoLongIndexBuild",
    "GeckoLongBackup",
}


def committed_rules() -> dict[str, Any]:
    data = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def alerting_rules() -> list[dict[str, Any]]:
    return [r for g in committed_rules()["groups"] for r in g["rules"] if "alert" in r]


def recording_rules() -> list[dict[str, Any]]:
    return [r for g in committed_rules()["groups"] for r in g["rules"] if "record" in r]


def run(args: list[str], cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=120, check=False)


# -- generated files ------------------------------------------------------------------


def test_committed_rule_files_equal_generator_output() -> None:
    config = load_config()
    for path, text in render.outputs(config).items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.relative_to(REPO_ROOT)} is stale: run python -m alert_rules.generate"
        )


def test_generator_check_mode_detects_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "rules.yml"
    stale.write_text("groups: []\n")
    assert generate.main(["--rules-out", str(stale), "--check"]) == 1
    assert generate.main(["--rules-out", str(stale)]) == 0
    assert generate.main(["--rules-out", str(stale), "--check"]) == 0
    assert stale.read_text() == render.render_plain(load_config())


def test_generator_runs_as_a_script_and_as_a_module() -> None:
    for args in (["alert_rules/generate.py", "--check"], ["-m", "alert_rules.generate", "--check"]):
        proc = run([sys.executable, *args])
        assert proc.returncode == 0, proc.stderr


def test_overrides_go_to_explicit_outputs_only(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        generate.main(["--set", "slowQueryFor=2s"])
    assert exc.value.code == 2
    out = tmp_path / "short.yml"
    assert generate.main(["--set", "slowQueryFor=2s", "--rules-out", str(out)]) == 0
    rules = yaml.safe_load(out.read_text())["groups"][1]["rules"]
    slow = [
        r for r in rules if r["alert"] == "GeckoSlowQuery" and r["labels"]["severity"] == "warning"
    ]
    assert slow[0]["for"] == "2s"
    assert "gecko_longest_active_query_seconds > 5" in slow[0]["expr"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"scanLookupSeconds": 0.2}, "not a histogram bucket bound"),
        ({"reportGenerationCriticalSeconds": 3}, "not a histogram bucket bound"),
        ({"poolUtilizationRatio": 1.2}, "a ratio in (0, 1]"),
        ({"slowQueryFor": "5 minutes"}, "Prometheus duration"),
        ({"slowQuerySeconds": "5s"}, "not a finite number"),
        ({"slowQuerySeconds": -1}, "must not be negative"),
        ({"noSuchThresholdSeconds": 1}, "unknown threshold"),
    ],
)
def test_invalid_thresholds_are_rejected(overrides: dict[str, Any], message: str) -> None:
    config = load_config()
    with pytest.raises(thresholds.ConfigError, match=re.escape(message)):
        config.with_overrides(**overrides)


def test_thresholds_file_has_exactly_the_keys_the_rules_use(tmp_path: Path) -> None:
    data = yaml.safe_load((ALERT_RULES / "thresholds.yaml").read_text())
    assert set(data) == set(catalogue.required_keys())
    partial = dict(data)
    partial.pop("slowQuerySeconds")
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(partial))
    with pytest.raises(thresholds.ConfigError, match="missing threshold"):
        load_config(path)


def test_histogram_buckets_match_the_exporter_and_the_metric_contract() -> None:
    from exporter.samples import LATENCY_BUCKETS  # noqa: PLC0415

    assert thresholds.LATENCY_BUCKETS == LATENCY_BUCKETS
    doc = METRICS_DOC.read_text()
    line = next(ln for ln in doc.splitlines() if ln.startswith("Histogram buckets"))
    listed = [float(x) for x in re.findall(r"\d+(?:\.\d+)?", line.split(":", 1)[1].split("(")[0])]
    assert tuple(listed) == thresholds.LATENCY_BUCKETS
    config = load_config()
    for key in thresholds.HISTOGRAM_THRESHOLDS:
        assert float(config.thresholds[key]) in thresholds.LATENCY_BUCKETS


# -- promtool -------------------------------------------------------------------------


def test_promtool_check_rules_lint_all_fatal(promtool: str) -> None:
    proc = run([promtool, "check", "rules", "--lint=all", "--lint-fatal", str(RULES_FILE)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(alerting_rules()) + len(recording_rules())} rules found" in proc.stdout


@pytest.mark.parametrize("test_file", UNIT_TESTS, ids=[p.name for p in UNIT_TESTS])
def test_promtool_unit_tests(promtool: str, test_file: Path) -> None:
    proc = run([promtool, "test", "rules", str(test_file)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_unit_tests_fail_on_a_wrong_expectation(promtool: str, tmp_path: Path) -> None:
    """The unit tests can fail: flip one expected severity and promtool must object."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "gecko-exporter.rules.yml").write_text(RULES_FILE.read_text())
    broken = (ALERT_RULES / "tests" / "capacity.test.yml").read_text()
    broken = broken.replace("severity: critical", "severity: warning", 1)
    (tmp_path / "tests" / "capacity.test.yml").write_text(broken)
    proc = run([promtool, "test", "rules", str(tmp_path / "tests" / "capacity.test.yml")])
    assert proc.returncode == 1, proc.stdout


def _unit_test_cases() -> list[tuple[str, dict[str, Any]]]:
    cases: list[tuple[str, dict[str, Any]]] = []
    for path in UNIT_TESTS:
        data = yaml.safe_load(path.read_text())
        assert data["rule_files"] == ["../gecko-exporter.rules.yml"], path
        for test in data["tests"]:
            cases.extend((test["name"], case) for case in test.get("alert_rule_test", []))
    return cases


def test_every_alert_tier_has_firing_silent_and_pending_cases() -> None:
    cases = _unit_test_cases()
    tiers = {(r["alert"], r["labels"]["severity"]) for r in alerting_rules()}
    fired = {
        (c["alertname"], a["exp_labels"]["severity"]) for _, c in cases for a in c["exp_alerts"]
    }
    assert tiers <= fired, f"tiers never seen firing in a unit test: {sorted(tiers - fired)}"
    for alert in {name for name, _ in tiers}:
        own = [c for _, c in cases if c["alertname"] == alert]
        assert any(not c["exp_alerts"] for c in own), f"{alert}: no silent case"
    for _, case in cases:
        for exp in case["exp_alerts"]:
            assert set(exp["exp_annotations"]) == {"summary", "description", "runbook_url"}
    # `for` behaviour: each tier with a non-zero `for` is silent in a test before it fires
    by_test: dict[str, list[dict[str, Any]]] = {}
    for name, case in cases:
        by_test.setdefault(name, []).append(case)
    for rule in alerting_rules():
        if rule["for"] == "0s":
            continue
        tier = (rule["alert"], rule["labels"]["severity"])
        assert any(_silent_then_firing(test_cases, tier) for test_cases in by_test.values()), (
            f"{tier}: no test shows it pending before it fires"
        )


def _silent_then_firing(cases: list[dict[str, Any]], tier: tuple[str, str]) -> bool:
    def seconds(text: str) -> float:
        return sum(
            int(n) * {"s": 1, "m": 60, "h": 3600}[u] for n, u in re.findall(r"(\d+)([smh])", text)
        )

    own = sorted(
        (c for c in cases if c["alertname"] == tier[0]), key=lambda c: seconds(c["eval_time"])
    )
    seen_silent = False
    for case in own:
        severities = {a["exp_labels"]["severity"] for a in case["exp_alerts"]}
        if tier[1] not in severities:
            seen_silent = True
        elif seen_silent:
            return True
    return False


# -- contract -------------------------------------------------------------------------


def test_alert_names_are_the_contract() -> None:
    assert {r["alert"] for r in alerting_rules()} == CONTRACT_ALERTS
    assert set(catalogue.alert_names()) == CONTRACT_ALERTS


def test_every_alert_has_severity_annotations_and_runbook() -> None:
    for rule in alerting_rules():
        name = rule["alert"]
        assert rule["labels"] == {"severity": rule["labels"]["severity"]}, name
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        ann = rule["annotations"]
        assert set(ann) == {"summary", "description", "runbook_url"}, name
        assert re.fullmatch(r"[A-Za-z].*\.", ann["summary"]), f"{name}: summary is a sentence"
        assert "{{" not in ann["summary"], f"{name}: summary is static"
        assert "$value" in ann["description"], f"{name}: description carries the value"
        assert ann["runbook_url"] == f"{RUNBOOK_BASE_URL}/{name}.md"
        assert (REPO_ROOT / "docs" / "runbooks" / f"{name}.md").is_file(), name
    # same summary across the tiers of one alert
    summaries: dict[str, set[str]] = {}
    for rule in alerting_rules():
        summaries.setdefault(rule["alert"], set()).add(rule["annotations"]["summary"])
    assert all(len(s) == 1 for s in summaries.values()), summaries


def test_runbook_base_url_is_configurable(tmp_path: Path) -> None:
    out = tmp_path / "r.yml"
    base = "https://runbooks.example.invalid/gecko"
    assert generate.main(["--runbook-base-url", base, "--rules-out", str(out)]) == 0
    rules = [r for g in yaml.safe_load(out.read_text())["groups"] for r in g["rules"]]
    urls = {r["annotations"]["runbook_url"] for r in rules if "alert" in r}
    assert urls == {f"{base}/{name}.md" for name in CONTRACT_ALERTS}


def _documented_metrics() -> set[str]:
    return set(re.findall(r"`(gecko_[a-z0-9_]+)`", METRICS_DOC.read_text()))


def test_rules_use_only_documented_metric_names() -> None:
    documented = _documented_metrics()
    histograms = {"gecko_scan_lookup_duration_seconds", "gecko_report_generation_duration_seconds"}
    assert histograms <= documented
    text = RULES_FILE.read_text()
    used = set(re.findall(r"(?<![:\w])(gecko_[a-z0-9_]+)", text))
    for rule in recording_rules():
        used |= set(re.findall(r"(?<![:\w])(gecko_[a-z0-9_]+)", rule["expr"]))
    unknown = set()
    for name in used:
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        if name not in documented and not (base in histograms and base != name):
            unknown.add(name)
    assert not unknown, f"metric names not in docs/metrics.md: {sorted(unknown)}"


def test_recording_rules_follow_level_metric_operations_and_keep_instance() -> None:
    for rule in recording_rules():
        name, expr = rule["record"], rule["expr"]
        assert re.fullmatch(r"job:gecko_[a-z0-9_]+:[a-z0-9_]+", name), name
        if "rate(" in expr:
            assert "sum by (job, instance" in expr, name
            if name.endswith("_bucket:rate5m"):
                assert "sum by (job, instance, le)" in expr, name
    names = {r["record"] for r in recording_rules()}
    for metric in (
        "gecko_scan_lookup_duration_seconds",
        "gecko_report_generation_duration_seconds",
    ):
        assert f"job:{metric}:p99_rate5m" in names
        assert f"job:{metric}:under_threshold_ratio_rate5m" in names
    # the latency alerts use the shared recording rules, not their own copies
    for rule in alerting_rules():
        if rule["alert"] in {"GeckoScanLookupSlow", "GeckoReportGenerationSlow"}:
            assert ":p99_rate5m > " in rule["expr"]


# -- every threshold is pinned by the unit tests -----------------------------------------


def _mutations(key: str, value: float | str) -> list[float | str]:
    if isinstance(value, str):
        number, unit = re.fullmatch(r"(\d+)([a-z]+)", value).groups()  # type: ignore[union-attr]
        n = int(number)
        if n == 0:
            return ["1m"]
        half = f"{n * 60 // 2}s" if unit == "m" else f"{n // 2}{unit}" if n > 1 else None
        return [m for m in (f"{n * 2}{unit}", half) if m]
    if key in thresholds.HISTOGRAM_THRESHOLDS:
        i = thresholds.LATENCY_BUCKETS.index(float(value))
        return [thresholds.LATENCY_BUCKETS[i + 1], thresholds.LATENCY_BUCKETS[i - 1]]
    if value == 0:
        return [1]
    up = round(value * 1.1, 6)
    if key.endswith("Ratio"):
        up = min(up, 1.0)
    return [up, round(value * 0.9, 6)]


@pytest.mark.slow
def test_every_threshold_and_for_is_pinned_by_a_unit_test(promtool: str, tmp_path: Path) -> None:
    """Mutate each threshold / `for` / window (one step either way): a unit test must fail."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    config = load_config()
    jobs = [(k, m) for k, v in config.thresholds.items() for m in _mutations(k, v)]

    def survives(job: tuple[str, float | str]) -> bool:
        key, value = job
        work = tmp_path / f"{key}-{value}"
        (work / "tests").mkdir(parents=True)
        for test in UNIT_TESTS:
            (work / "tests" / test.name).write_text(test.read_text())
        rules = render.render_plain(config.with_overrides(**{key: value}))
        (work / "gecko-exporter.rules.yml").write_text(rules)
        # one file at a time: a mutation is caught as soon as one file fails
        return all(
            run([promtool, "test", "rules", str(test)]).returncode == 0
            for test in sorted((work / "tests").iterdir())
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        survivors = [
            job for job, alive in zip(jobs, pool.map(survives, jobs), strict=True) if alive
        ]
    assert {key for key, _ in jobs} == set(config.thresholds), "every threshold is mutated"
    assert not survivors, f"no unit test notices these changes: {survivors}"
