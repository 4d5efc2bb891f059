"""``gecko-exporter preflight PATH…`` and ``gecko-exporter verify``: the live gate commands.

The DSN comes exactly as for ``run``: ``GECKO_DATABASE_URL``,
``GECKO_DATABASE_URL_FILE`` / ``--database-url-file`` or the config file;
never a flag holding it. Each command opens one read-only session with its own
``application_name`` (``<application_name>-preflight`` / ``-verify``), a
100 ms ``lock_timeout`` and ``gate.statement_timeout_seconds``.

Exit codes: preflight 0 go, 1 no-go; verify 0 pass, 1 fail; both 2 for bad
input (arguments, config, migration files, baseline file) or an unreachable
database, with one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from exporter.config import Config
from exporter.db.oneshot import OneShotOptions, oneshot_session
from exporter.errors import DatabaseError, DatabaseUnavailable, ExporterError
from exporter.log import configure_logging

COMMANDS = ("preflight", "verify")
EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 1 and 1000")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML config file (env GECKO_CONFIG)")
    p.add_argument(
        "--database-url-file",
        metavar="FILE",
        help="file holding the DSN (env GECKO_DATABASE_URL_FILE; or set GECKO_DATABASE_URL)",
    )
    p.add_argument("--format", choices=["text", "json"], default="text", help="output format")
    p.add_argument(
        "--runs",
        type=_positive_int,
        metavar="N",
        help="latency probe runs (default gate.latency_runs, 20)",
    )


def add_parsers(sub: Any) -> None:
    """Register ``preflight`` and ``verify`` on the CLI's subparsers."""
    pre = sub.add_parser(
        "preflight",
        help="is it safe to run these migrations now? (live, read-only; exit 0 go, 1 no-go)",
    )
    pre.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="migration.sql, a Prisma migration folder or a prisma/migrations folder",
    )
    _common(pre)
    pre.add_argument(
        "--show-queries",
        action="store_true",
        help="include the query text of blocking sessions (off: pid, application, state, age)",
    )
    pre.add_argument(
        "--baseline",
        type=Path,
        metavar="FILE",
        help="write plans and latency of the critical queries here, for verify --baseline",
    )
    ver = sub.add_parser(
        "verify", help="did the migration go well? (live, read-only; exit 0 pass, 1 fail)"
    )
    _common(ver)
    ver.add_argument(
        "--baseline", type=Path, metavar="FILE", help="compare with a preflight --baseline file"
    )


def _fail(command: str, message: str) -> int:
    sys.stderr.write(f"gecko-exporter {command}: error: {message}\n")
    return EXIT_USAGE


def _settings(args: argparse.Namespace) -> Config:
    from exporter.settings import load_config  # noqa: PLC0415 - pydantic only when validating

    overrides = {}
    if args.database_url_file is not None:
        overrides["database_url_file"] = args.database_url_file
    return load_config(config_file=args.config, overrides=overrides)


def _options(settings: Config, suffix: str) -> OneShotOptions:
    return OneShotOptions(
        application_name=f"{settings.application_name}-{suffix}"[:63],
        statement_timeout_seconds=settings.gate.statement_timeout_seconds,
        lock_timeout_seconds=settings.lock_timeout_seconds,
        connect_timeout_seconds=settings.connect_timeout_seconds,
    )


def run(args: argparse.Namespace) -> int:
    """Run ``args.command`` (one of :data:`COMMANDS`); returns the exit code."""
    command = str(args.command)
    try:
        settings = _settings(args)
        dsn = settings.dsn()
        runs = args.runs or settings.gate.latency_runs
        if command == "preflight":
            from exporter.gate.preflight import PreflightOptions, run_preflight  # noqa: PLC0415
            from exporter.gate.sql import load_migrations  # noqa: PLC0415

            migrations = load_migrations(args.paths)
            pre_options = PreflightOptions(
                show_queries=args.show_queries, baseline_path=args.baseline, runs=runs
            )
        else:
            from exporter.gate.live_measure import read_baseline  # noqa: PLC0415
            from exporter.gate.verify import VerifyOptions, run_verify  # noqa: PLC0415

            baseline = read_baseline(args.baseline) if args.baseline is not None else None
            ver_options = VerifyOptions(runs=runs, baseline=baseline, baseline_path=args.baseline)
    except ExporterError as exc:  # settings, migration files, baseline file
        return _fail(command, str(exc))
    # the commands print their result on stdout; only errors are logged (stderr)
    configure_logging(settings.log_format, "error")

    async def main() -> tuple[str, dict[str, Any], bool]:
        async with oneshot_session(dsn, _options(settings, command)) as session:
            if command == "preflight":
                pre = await run_preflight(session, settings, migrations, pre_options)
                return pre.text(), pre.document(), pre.go
            ver = await run_verify(session, settings, ver_options)
            return ver.text(), ver.document(), ver.passed

    try:
        text, document, ok = asyncio.run(main())
    except DatabaseUnavailable as exc:
        return _fail(command, f"database unreachable: {exc}")
    except DatabaseError as exc:
        return _fail(command, f"database error: {exc}")
    except ExporterError as exc:  # e.g. the baseline file cannot be written
        return _fail(command, str(exc))
    if args.format == "json":
        from exporter.gate.live_report import to_json  # noqa: PLC0415

        sys.stdout.write(to_json(document))
    else:
        sys.stdout.write(text)
    return EXIT_OK if ok else EXIT_FAIL
