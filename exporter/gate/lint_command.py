"""The ``gecko-exporter lint PATH…`` subcommand (registered by exporter/cli.py).

Exit codes: 0 no error-level finding, 1 error-level findings, 2 bad input (missing path,
unparsable SQL, bad flag, squawk unavailable): one line on stderr, never a traceback.
No database access.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from exporter.errors import ExporterError

EXIT_BAD_INPUT = 2
#: The Prisma version Gecko Advisor runs.
DEFAULT_PRISMA_VERSION = "5.22"


def parse_prisma_version(text: str) -> tuple[int, int]:
    """'5.22' / '7.4.1' → (5, 22) / (7, 4); ValueError on anything else."""
    m = re.fullmatch(r"v?(\d+)(?:\.(\d+))?(?:\.\d+)?(?:[-+][0-9A-Za-z.-]*)?", text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a Prisma version like 5.22 or 7.4.0")
    return int(m.group(1)), int(m.group(2) or 0)


def configured_prisma_version(config: str | None) -> str:
    """``gate.prisma_version`` of the config file (--config or GECKO_CONFIG), else the default.

    Without a config file lint reads no settings at all.
    """
    if config is None and not os.environ.get("GECKO_CONFIG"):
        return DEFAULT_PRISMA_VERSION
    from exporter.settings import load_config  # noqa: PLC0415 - only when a config file is named

    return load_config(config_file=config).gate.prisma_version


def _prisma_version(text: str) -> str:
    try:
        parse_prisma_version(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _rules(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expects a rule name")
    return names


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``lint`` to the ``gecko-exporter`` subcommands."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "lint",
        help="check Prisma migrations for locking and compatibility hazards (no database)",
        description=(
            "Check migration.sql files, Prisma migration folders or a prisma/migrations "
            "folder for locking and compatibility hazards. Static: no database access."
        ),
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        type=Path,
        help="a migration.sql, a Prisma migration folder or a prisma/migrations folder",
    )
    p.add_argument(
        "--format",
        choices=["table", "json", "sarif"],
        default="table",
        dest="output_format",
        help="report format (default table; json and sarif: see docs/migration-gate.md)",
    )
    p.add_argument(
        "--prisma-version",
        type=_prisma_version,
        metavar="X.Y",
        help="Prisma version that applies the migrations (default: gate.prisma_version of "
        f"--config, else {DEFAULT_PRISMA_VERSION}): before 7.4 a file is always one transaction",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="YAML config file to read gate.prisma_version from (env GECKO_CONFIG)",
    )
    p.add_argument(
        "--ignore",
        type=_rules,
        action="append",
        default=[],
        metavar="RULE[,RULE…]",
        help="skip a rule (repeatable); inline: -- gecko-lint: ignore RULE",
    )
    p.add_argument(
        "--pg-version", metavar="X.Y", help="PostgreSQL version squawk assumes (its default: 15)"
    )
    p.add_argument("--output", metavar="FILE", type=Path, help="write the report to FILE")
    return p


def run(args: argparse.Namespace) -> int:
    # The parser (libpg_query) loads only when lint runs, not for every subcommand.
    from exporter.gate.lint import LintOptions, lint  # noqa: PLC0415
    from exporter.gate.lint_format import render_json, render_sarif, render_table  # noqa: PLC0415
    from exporter.gate.sql import load_migrations  # noqa: PLC0415

    try:
        prisma_version = args.prisma_version or configured_prisma_version(args.config)
    except ExporterError as exc:
        sys.stderr.write(f"gecko-exporter lint: error: {exc}\n")
        return EXIT_BAD_INPUT
    options = LintOptions(
        prisma_version=prisma_version,
        ignore=frozenset(r for group in args.ignore for r in group),
        pg_version=args.pg_version,
    )
    try:
        migrations = load_migrations(args.paths)
        result = lint(migrations, options)
    except ExporterError as exc:
        sys.stderr.write(f"gecko-exporter lint: error: {exc}\n")
        return EXIT_BAD_INPUT
    if args.output_format == "table":
        text = render_table(result)
    else:
        render = render_json if args.output_format == "json" else render_sarif
        text = json.dumps(render(result, prisma_version=prisma_version), indent=2) + "\n"
    if args.output is not None:
        try:
            args.output.write_text(text, encoding="utf-8")
        except OSError as exc:
            sys.stderr.write(
                f"gecko-exporter lint: error: --output {args.output}: {exc.strerror or exc}\n"
            )
            return EXIT_BAD_INPUT
    else:
        sys.stdout.write(text)
    return result.exit_code
