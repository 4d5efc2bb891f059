"""Renderings of a lint result: readable table, stable JSON, SARIF 2.1.0.

The JSON document (``schema_version`` 1) is a contract, documented in
docs/migration-gate.md; fields are only ever added.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

from exporter import __version__
from exporter.gate.lint import GECKO_RULES, SQUAWK_RULES, Finding, LintResult

JSON_SCHEMA_VERSION = 1
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://github.com/gecko-advisor/gecko-exporter/blob/main/docs/migration-gate.md"
_SARIF_LEVEL = {"error": "error", "warning": "warning", "info": "note"}


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it, else as given."""
    try:
        return Path(os.path.relpath(path)).as_posix() if not _outside(path) else path.as_posix()
    except ValueError:
        return path.as_posix()


def _outside(path: Path) -> bool:
    return os.path.relpath(path).startswith("..")


# --------------------------------------------------------------------------- table


def render_table(result: LintResult) -> str:
    lines: list[str] = []
    by_migration: dict[str, list[Finding]] = {}
    for f in result.findings:
        by_migration.setdefault(f"{f.migration}\0{f.file}", []).append(f)
    for m in result.migrations:
        found = by_migration.get(f"{m.name}\0{m.path}", [])
        mark = "ok" if not found else _worst(found)
        lines.append(f"{m.name}  ({display_path(m.path)}, {len(m.statements)} statements): {mark}")
        for f in found:
            loc = f"{display_path(f.file)}:{f.line}"
            lines.append(f"  {f.severity.upper():<7} {loc}  {f.rule}")
            if f.statement:
                lines.append(f"{_INDENT}{_clip(f.statement, _WIDTH - len(_INDENT))}")
            lines.extend(_wrap(f.message))
            if f.fix:
                lines.extend(_wrap(f"fix: {f.fix}"))
    lines.append(
        f"{len(result.migrations)} migrations, {result.count('error')} errors, "
        f"{result.count('warning')} warnings, {result.count('info')} info"
    )
    return "\n".join(lines) + "\n"


_WIDTH = 100
_INDENT = " " * 10


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(
        text,
        _WIDTH,
        initial_indent=_INDENT,
        subsequent_indent=_INDENT + "  ",
        break_on_hyphens=False,
        break_long_words=False,
    ) or [_INDENT]


def _worst(findings: list[Finding]) -> str:
    for sev in ("error", "warning", "info"):
        n = sum(1 for f in findings if f.severity == sev)
        if n:
            return f"{n} {sev}{'s' if n > 1 and sev != 'info' else ''}" + (
                f" (+{len(findings) - n} more)" if len(findings) > n else ""
            )
    return "ok"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# --------------------------------------------------------------------------- json


def render_json(result: LintResult, *, prisma_version: str) -> dict[str, Any]:
    return {
        "schema_version": JSON_SCHEMA_VERSION,
        "tool": "gecko-exporter lint",
        "tool_version": __version__,
        "prisma_version": prisma_version,
        "summary": {
            "migrations": len(result.migrations),
            "statements": sum(len(m.statements) for m in result.migrations),
            "errors": result.count("error"),
            "warnings": result.count("warning"),
            "infos": result.count("info"),
            "exit_code": result.exit_code,
        },
        "migrations": [
            {
                "name": m.name,
                "path": display_path(m.path),
                "rollback": display_path(m.rollback) if m.rollback else None,
                "statements": [
                    {
                        "line": s.line,
                        "kind": s.kind,
                        "tables": list(s.tables),
                        "lock": s.lock,
                        "rewrites": s.rewrites,
                        "scans": s.scans,
                        "concurrent": s.concurrent,
                    }
                    for s in m.statements
                ],
            }
            for m in result.migrations
        ],
        "findings": [
            {
                "file": display_path(f.file),
                "line": f.line,
                "column": f.column,
                "rule": f.rule,
                "severity": f.severity,
                "message": f.message,
                "fix": f.fix,
                "source": f.source,
                "migration": f.migration,
                "statement": f.statement,
            }
            for f in result.findings
        ],
    }


# --------------------------------------------------------------------------- sarif


def _rule_descriptor(rule: str, findings: list[Finding]) -> dict[str, Any]:
    if rule in GECKO_RULES:
        r = GECKO_RULES[rule]
        summary, fix, level = r.summary, r.fix, r.severity
        uri = f"{INFORMATION_URI}#{rule}"
    else:
        level, fix = SQUAWK_RULES.get(rule, ("warning", ""))
        sample = next(f for f in findings if f.rule == rule)
        summary = sample.message
        fix = fix or sample.fix
        uri = f"https://squawkhq.com/docs/{rule}"
    return {
        "id": rule,
        "name": rule,
        "shortDescription": {"text": summary},
        "help": {"text": fix or summary},
        "helpUri": uri,
        "defaultConfiguration": {"level": _SARIF_LEVEL[level]},
    }


def render_sarif(result: LintResult, *, prisma_version: str) -> dict[str, Any]:
    rule_ids = sorted({f.rule for f in result.findings})
    index = {r: i for i, r in enumerate(rule_ids)}
    results = []
    for f in result.findings:
        text = f.message + (f" Fix: {f.fix}" if f.fix else "")
        results.append(
            {
                "ruleId": f.rule,
                "ruleIndex": index[f.rule],
                "level": _SARIF_LEVEL[f.severity],
                "message": {"text": text},
                "locations": [
                    {
                        "physicalLocation": {
                            "artifactLocation": {"uri": _uri(f.file)},
                            "region": {"startLine": f.line, "startColumn": f.column},
                        }
                    }
                ],
                "properties": {"migration": f.migration, "source": f.source},
            }
        )
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "gecko-exporter lint",
                        "version": __version__,
                        "informationUri": INFORMATION_URI,
                        "rules": [_rule_descriptor(r, result.findings) for r in rule_ids],
                    }
                },
                "columnKind": "unicodeCodePoints",
                "results": results,
                "properties": {"prismaVersion": prisma_version},
            }
        ],
    }


def _uri(path: Path) -> str:
    """Relative POSIX path (what CI systems match to the checkout) or a file: URI."""
    if path.is_absolute() and _outside(path):
        return path.as_uri()
    shown = display_path(path)
    return Path(shown).as_uri() if Path(shown).is_absolute() else shown
