"""``gecko-exporter lint``: static checks of Prisma migrations, no database.

Two sources of findings, merged per statement:

- **squawk** (the ``squawk-cli`` wheel's binary, ``--reporter json``) for the generic
  PostgreSQL rules: non-concurrent index builds and drops, missing ``lock_timeout``,
  renames and drops, ``NOT NULL`` columns without default, constraints without
  ``NOT VALID``, type changes, ``SET NOT NULL``, … Every squawk rule gets a severity and a
  Prisma-aware fix from :data:`SQUAWK_RULES` (unknown squawk rules default to warning).
- **gecko rules** (:data:`GECKO_RULES`) for what squawk cannot know about Prisma Migrate:
  how Prisma sends a file (one implicit transaction before script splitting, and after it
  whenever its splitter cannot parse the file), Prisma's rename-as-DROP+ADD, and the
  rollback-file convention.

Squawk runs with ``--assume-in-transaction`` for every file Prisma runs as one transaction
(so it skips index builds on tables created earlier in the file and flags NOT VALID +
VALIDATE in one file), without it for files Prisma splits. Findings on a statement whose
relations were all created earlier in the same migration are dropped: nobody else can see
those tables yet, so no lock can queue. Squawk's own syntax errors are dropped too: the
file already parsed with PostgreSQL's grammar.

Ignoring: ``--ignore RULE`` (any number, comma-separated), a comment
``-- gecko-lint: ignore RULE[, RULE…]`` directly above or inside a statement, or
``-- gecko-lint: ignore-file RULE[, RULE…]`` anywhere in the file. squawk's own
``-- squawk-ignore`` comments keep working for squawk rules.
"""

from __future__ import annotations

import bisect
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.errors import ExporterError
from exporter.gate.lint_command import DEFAULT_PRISMA_VERSION, parse_prisma_version
from exporter.gate.sql import Migration, Statement, lock_rank, parse_sql, read_sql

SEVERITIES = ("error", "warning", "info")

#: Prisma version from which Migrate splits a script around CONCURRENTLY statements
#: (prisma-engines #5767/#5799, ≈ 7.4 per the reference: unconfirmed).
SPLIT_FROM = (7, 4)

#: Statement shapes Prisma's splitter (Rust sqlparser ≤ 0.62) fails to parse: one of them
#: anywhere in a file makes Prisma fall back to one multi-statement batch (prisma-engines #5847).
SPLITTER_FAILS: tuple[tuple[str, bool], ...] = (("drop_index", True),)  # (kind, concurrent)


#: Statements that leave nothing to roll back (a migration made only of these needs no
#: rollback file): settings, checks of existing rows, statistics, enum values (PostgreSQL
#: cannot drop them).
NOTHING_TO_UNDO = frozenset(
    {"set", "reset", "begin", "commit", "rollback", "transaction", "validate_constraint",
     "analyze", "vacuum", "select", "alter_enum", "comment"}
)  # fmt: skip
DESTROYS_DATA = frozenset({"drop_table", "truncate", "delete"})


class LintToolError(ExporterError):
    """squawk is missing or failed: lint cannot run."""


@dataclass(frozen=True)
class Rule:
    name: str
    severity: str
    summary: str
    fix: str


GECKO_RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        Rule(
            "prisma-concurrently-in-transaction",
            "error",
            "CONCURRENTLY statement that Prisma runs inside a transaction (SQLSTATE 25001)",
            "Put the CONCURRENTLY statement alone in its own migration folder (no SET, no "
            "comment-only tricks: every statement counts); set lock_timeout on the migration "
            "role or the URL (options=-c lock_timeout=5s) instead of in the file.",
        ),
        Rule(
            "prisma-split-script",
            "info",
            "Prisma splits this file around its CONCURRENTLY statements: it is no longer atomic",
            "A failure part-way leaves the earlier statements applied: make every statement "
            "re-runnable (IF [NOT] EXISTS) and prefer one CONCURRENTLY statement per migration.",
        ),
        Rule(
            "prisma-rename-as-drop-add",
            "warning",
            "DROP COLUMN and ADD COLUMN on the same table: Prisma generates a field rename "
            "this way, losing the column's data",
            "If this is a rename, expand/contract instead: add the new column, dual-write and "
            "backfill, switch reads, then drop the old column in a later release.",
        ),
        Rule(
            "missing-rollback",
            "warning",
            "No rollback file (down.sql or rollback.sql beside migration.sql)",
            "Write down.sql beside migration.sql with the statements that undo this migration "
            "(DROP INDEX CONCURRENTLY IF EXISTS …, ALTER TABLE … DROP COLUMN IF EXISTS …); "
            "Prisma ignores it, operators run it with psql, then "
            "`prisma migrate resolve --rolled-back NAME`.",
        ),
    )
}

# Severity and a Prisma-aware fix for squawk's rules (fix "" keeps squawk's help text).
SQUAWK_RULES: dict[str, tuple[str, str]] = {
    "require-concurrent-index-creation": (
        "error",
        "CREATE INDEX CONCURRENTLY in a migration of its own (the only statement of its "
        "migration.sql; Prisma < 7.4 runs a file as one transaction).",
    ),
    "require-concurrent-index-deletion": (
        "error",
        "DROP INDEX CONCURRENTLY as the only statement of its own migration.",
    ),
    "require-lock-timeout": (
        "error",
        "Start the file with SET lock_timeout = '5s'; (a statement queued behind a long "
        "transaction blocks every query on the table until it gets its lock).",
    ),
    "require-statement-timeout": ("warning", "Start the file with SET statement_timeout = …;"),
    "constraint-missing-not-valid": (
        "error",
        "ADD CONSTRAINT … NOT VALID in one migration, ALTER TABLE … VALIDATE CONSTRAINT in a "
        "later migration (Prisma runs one file in one transaction, so both in one file keeps "
        "the strong lock during the validation scan).",
    ),
    "adding-foreign-key-constraint": (
        "warning",
        "Add the foreign key NOT VALID, then VALIDATE CONSTRAINT in a later migration.",
    ),
    "adding-not-nullable-field": (
        "error",
        "ADD CONSTRAINT … CHECK (col IS NOT NULL) NOT VALID; VALIDATE CONSTRAINT in a later "
        "migration; then SET NOT NULL (PostgreSQL 12+ skips the scan) and drop the check.",
    ),
    "adding-required-field": (
        "error",
        "Add the column nullable or with a constant DEFAULT, backfill in batches, then "
        "enforce NOT NULL via a NOT VALID check.",
    ),
    "changing-column-type": (
        "error",
        "Add a new column of the new type, dual-write and backfill, switch reads, drop the "
        "old column later.",
    ),
    "renaming-column": (
        "error",
        "The running app version still uses the old name: add the new column (or a view), "
        "dual-write, switch the app, drop the old one in a later release.",
    ),
    "renaming-table": (
        "error",
        "The running app version still uses the old name: create the new table or a view, "
        "switch the app, then remove the old name in a later release.",
    ),
    "ban-drop-column": (
        "error",
        "Stop using the column in the app (Prisma: remove the field and deploy) first; drop "
        "it in a later migration, with a backup of its data.",
    ),
    "ban-drop-table": (
        "error",
        "Stop using the table in the app first; drop it in a later release, after a backup.",
    ),
    "ban-drop-database": ("error", ""),
    "ban-truncate-cascade": ("error", ""),
    "disallowed-unique-constraint": (
        "error",
        "CREATE UNIQUE INDEX CONCURRENTLY in its own migration, then ADD CONSTRAINT … UNIQUE "
        "USING INDEX.",
    ),
    "adding-serial-primary-key-field": ("error", ""),
    "adding-field-with-default": ("warning", ""),
    "ban-drop-not-null": ("warning", ""),
    "ban-concurrent-index-creation-in-transaction": ("error", ""),
    "ban-uncommitted-transaction": ("error", ""),
    "transaction-nesting": ("warning", ""),
    "prefer-robust-stmts": ("info", ""),
    "prefer-bigint-over-int": ("info", ""),
    "prefer-bigint-over-smallint": ("info", ""),
    "prefer-identity": ("info", ""),
    "prefer-timestamptz": ("info", ""),
    "prefer-text-field": ("info", ""),
    "ban-char-field": ("info", ""),
}
# Replaced by the Prisma-version-aware gecko rule.
SQUAWK_EXCLUDED = ("ban-concurrent-index-creation-in-transaction",)

_IGNORE_RE = re.compile(r"--[ \t]*gecko-lint:[ \t]*(ignore-file|ignore)[ \t]+([A-Za-z0-9_, \t-]+)")


@dataclass(frozen=True)
class Finding:
    file: Path
    line: int
    column: int
    rule: str
    severity: str
    message: str
    fix: str
    source: str  # "gecko" or "squawk"
    migration: str
    statement: str  # first line of the statement ("" for file-level findings)


@dataclass(frozen=True)
class LintOptions:
    prisma_version: str = DEFAULT_PRISMA_VERSION
    ignore: frozenset[str] = frozenset()
    pg_version: str | None = None
    squawk: str | None = None  # path of the binary; found next to the interpreter by default


@dataclass
class LintResult:
    migrations: list[Migration]
    findings: list[Finding] = field(default_factory=list)

    def count(self, severity: str) -> int:
        return sum(1 for f in self.findings if f.severity == severity)

    @property
    def exit_code(self) -> int:
        return 1 if self.count("error") else 0


# --------------------------------------------------------------------------- file model


@dataclass(frozen=True)
class FileMode:
    """How Prisma sends one migration file."""

    split: bool  # statements sent one by one (Prisma ≥ 7.4, CONCURRENTLY, splitter parses all)
    splitter_failure: Statement | None  # statement that defeats Prisma's splitter


def file_mode(migration: Migration, prisma: tuple[int, int]) -> FileMode:
    stmts = migration.statements
    blocker = next(
        (s for s in stmts if (s.kind, s.concurrent) in SPLITTER_FAILS),
        None,
    )
    has_concurrent = any(s.concurrent for s in stmts)
    split = prisma >= SPLIT_FROM and has_concurrent and blocker is None and len(stmts) > 1
    return FileMode(split=split, splitter_failure=blocker)


# --------------------------------------------------------------------------- gecko rules


def _first_line(st: Statement) -> str:
    return st.text.splitlines()[0].strip() if st.text else ""


def _finding(m: Migration, st: Statement | None, rule: str, message: str = "") -> Finding:
    r = GECKO_RULES[rule]
    return Finding(
        file=m.path,
        line=st.line if st else 1,
        column=st.column if st else 1,
        rule=rule,
        severity=r.severity,
        message=message or r.summary,
        fix=r.fix,
        source="gecko",
        migration=m.name,
        statement=_first_line(st) if st else "",
    )


def _concurrency_problem(
    st: Statement, m: Migration, prisma: tuple[int, int], mode: FileMode, in_block: bool
) -> str | None:
    """Why Prisma would run the CONCURRENTLY statement ``st`` inside a transaction, if it would."""
    what = _first_line(st)
    count = len(m.statements)
    if in_block:
        return f"{what}: inside BEGIN … COMMIT, fails with SQLSTATE 25001"
    if count > 1 and prisma < SPLIT_FROM:
        return (
            f"{what}: Prisma {prisma[0]}.{prisma[1]} sends this file ({count} statements) as "
            "one multi-statement string, which PostgreSQL runs as one implicit transaction: "
            "fails with SQLSTATE 25001"
        )
    if count > 1 and mode.splitter_failure is not None:
        blocker = mode.splitter_failure
        return (
            f"{what}: Prisma {prisma[0]}.{prisma[1]} cannot split this file (its SQL parser "
            f"rejects line {blocker.line}: {_first_line(blocker)}), so it runs as one implicit "
            "transaction: fails with SQLSTATE 25001"
        )
    return None


def gecko_findings(m: Migration, prisma: tuple[int, int]) -> list[Finding]:
    out: list[Finding] = []
    mode = file_mode(m, prisma)
    stmts = m.statements
    in_block = False
    reported_split = False
    for st in stmts:
        if st.kind == "begin":
            in_block = True
        elif st.kind in ("commit", "rollback"):
            in_block = False
        if not st.concurrent:
            continue
        problem = _concurrency_problem(st, m, prisma, mode, in_block)
        if problem:
            out.append(_finding(m, st, "prisma-concurrently-in-transaction", problem))
        elif mode.split and not reported_split:
            reported_split = True
            out.append(_finding(m, st, "prisma-split-script"))
    added = {s.tables[0] for s in stmts if "add_column" in s.actions and s.tables}
    out.extend(
        _finding(
            m,
            st,
            "prisma-rename-as-drop-add",
            f"{st.tables[0]}: DROP COLUMN and ADD COLUMN in one migration (Prisma generates "
            "a field rename this way and loses the column's data)",
        )
        for st in stmts
        if "drop_column" in st.actions and st.tables and st.tables[0] in added
    )
    undoable = [s for s in stmts if s.kind not in NOTHING_TO_UNDO]
    if m.rollback is None and undoable:
        if m.path.name == "migration.sql":
            beside = "down.sql or rollback.sql beside migration.sql"
        else:
            beside = f"{m.name}.down.sql or {m.name}.rollback.sql beside {m.path.name}"
        message = f"{m.name}: no {beside}"
        if any(s.kind in DESTROYS_DATA or "drop_column" in s.actions for s in undoable):
            message += " (it drops data: a rollback restores the structure, a backup the data)"
        out.append(_finding(m, None, "missing-rollback", message))
    return out


# --------------------------------------------------------------------------- squawk


def squawk_binary(explicit: str | None = None) -> str:
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "squawk"
    if beside.is_file():
        return str(beside)
    found = shutil.which("squawk")
    if not found:
        raise LintToolError("squawk binary not found: pip install 'squawk-cli>=2.70,<3'")
    return found


def run_squawk(
    files: Sequence[Path], *, in_transaction: bool, options: LintOptions
) -> list[dict[str, Any]]:
    """Run squawk once over ``files``; its JSON findings (0-based lines)."""
    if not files:
        return []
    cmd = [
        squawk_binary(options.squawk),
        "--reporter",
        "json",
        "--assume-in-transaction" if in_transaction else "--no-assume-in-transaction",
        "--exclude",
        ",".join(SQUAWK_EXCLUDED),
    ]
    if options.pg_version:
        cmd += ["--pg-version", options.pg_version]
    cmd += [str(f) for f in files]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LintToolError(f"squawk: cannot run ({exc})") from None
    if proc.returncode not in (0, 1):
        detail = _stderr_line(proc.stderr)
        raise LintToolError(f"squawk: exit code {proc.returncode}: {detail}")
    try:
        data = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError:
        raise LintToolError("squawk: output is not JSON") from None
    if not isinstance(data, list):
        raise LintToolError("squawk: output is not a JSON array")
    if proc.returncode == 1 and not data:  # exit 1 means findings: none reported is a failure
        detail = _stderr_line(proc.stderr)
        raise LintToolError(f"squawk: exit code 1 without findings: {detail}")
    return [d for d in data if isinstance(d, dict)]


def _stderr_line(stderr: str) -> str:
    """The line of squawk's stderr that says what went wrong."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return next(
        (ln for ln in lines if ln.lower().startswith("error")), lines[-1] if lines else "no output"
    )


def _statement_at(m: Migration, line: int, column: int) -> Statement | None:
    """The statement that contains 1-based (line, column) (statements are in file order)."""
    i = bisect.bisect_right(m.statements, (line, column), key=lambda st: (st.line, st.column))
    if i:
        return m.statements[i - 1]
    return m.statements[0] if m.statements else None


def squawk_findings(m: Migration, raw: Iterable[dict[str, Any]]) -> list[Finding]:
    out: list[Finding] = []
    lone = len(m.statements) == 1
    for d in raw:
        rule = str(d.get("rule_name") or "")
        if not rule or rule == "syntax-error":
            continue  # PostgreSQL's grammar already accepted the file
        line = int(d.get("line", 0)) + 1
        column = int(d.get("column", 0)) + 1
        st = _statement_at(m, line, column)
        severity, fix = SQUAWK_RULES.get(rule, ("warning", ""))
        fix = fix or str(d.get("help") or "")
        if (
            st is not None
            and st.concurrent
            and lone
            and rule in ("require-lock-timeout", "require-statement-timeout")
        ):
            # A SET in the file would be a second statement and break the CONCURRENTLY one.
            severity = "info"
            fix = (
                "Do not add SET to this file (it would make CONCURRENTLY fail under Prisma "
                "< 7.4): set lock_timeout/statement_timeout on the migration role or in the "
                "URL (options=-c lock_timeout=5s)."
            )
        out.append(
            Finding(
                file=m.path,
                line=st.line if st else line,
                column=st.column if st else column,
                rule=rule,
                severity=severity,
                message=str(d.get("message") or rule),
                fix=fix,
                source="squawk",
                migration=m.name,
                statement=_first_line(st) if st else "",
            )
        )
    return out


# --------------------------------------------------------------------------- filtering


def _rule_names(text: str, wanted: str) -> set[str]:
    names: set[str] = set()
    for kind, listed in _IGNORE_RE.findall(text):
        if kind == wanted:
            names.update(re.split(r"[\s,]+", listed.strip()))
    names.discard("")
    return names


def _file_ignored_rules(m: Migration) -> set[str]:
    rules: set[str] = set()
    for s in m.statements:
        rules |= _rule_names(s.leading + "\n" + s.text, "ignore-file")
    return rules


def _on_new_tables(st: Statement, created: set[str]) -> bool:
    return bool(st.tables) and all(t in created for t in st.tables)


def lint(migrations: Sequence[Migration], options: LintOptions | None = None) -> LintResult:
    """Lint ``migrations`` (a path named twice is linted once); findings in migration order."""
    options = options or LintOptions()
    prisma = parse_prisma_version(options.prisma_version)
    unique = list({m.path: m for m in migrations}.values())
    split = {m.path for m in unique if file_mode(m, prisma).split}
    whole_files = [m.path for m in unique if m.path not in split]
    split_files = [m.path for m in unique if m.path in split]
    raw = run_squawk(whole_files, in_transaction=True, options=options)
    raw += run_squawk(split_files, in_transaction=False, options=options)
    by_file: dict[str, list[dict[str, Any]]] = {str(m.path): [] for m in unique}
    for d in raw:
        name = str(d.get("file", ""))
        if name not in by_file:  # never drop a finding silently
            raise LintToolError(f"squawk: finding for a file it was not given: {name!r}")
        by_file[name].append(d)

    for m in unique:  # a rollback file must at least be valid SQL
        if m.rollback is not None:
            parse_sql(read_sql(m.rollback), m.rollback)
    result = LintResult(migrations=unique)
    for m in unique:
        created: set[str] = set()
        created_before: dict[tuple[int, int], set[str]] = {}
        for st in m.statements:
            created_before[st.line, st.column] = set(created)
            created.update(st.creates)
        findings = gecko_findings(m, prisma) + squawk_findings(m, by_file[str(m.path)])
        # once per file, not per finding (that was quadratic: 5 000 CREATE INDEX took 30 s)
        file_ignored = _file_ignored_rules(m)
        at = {(s.line, s.column): s for s in reversed(m.statements)}  # first one wins
        kept: list[Finding] = []
        for f in findings:
            target = at.get((f.line, f.column)) if f.statement else None
            ignored = (
                _rule_names(target.leading + "\n" + target.text, "ignore") if target else set()
            )
            if f.rule in options.ignore or f.rule in file_ignored or f.rule in ignored:
                continue
            if target is not None and _on_new_tables(
                target, created_before[target.line, target.column]
            ):
                continue
            kept.append(f)
        kept.sort(key=lambda f: (f.line, f.column, _sev_rank(f), f.rule))
        result.findings.extend(kept)
    return result


def _sev_rank(f: Finding) -> int:
    return SEVERITIES.index(f.severity)


def strongest_lock(statements: Iterable[Statement]) -> str:
    best = ""
    for s in statements:
        if lock_rank(s.lock) > lock_rank(best):
            best = s.lock
    return best
