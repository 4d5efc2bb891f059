"""Every flag of every subcommand says what it does in --help."""

from __future__ import annotations

import argparse

from exporter.cli import build_parser


def test_every_option_has_help_text() -> None:
    parser = build_parser()
    missing = [
        f"{name} {opt.option_strings[0]}"
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name, sub in action.choices.items()
        for opt in sub._actions
        if opt.option_strings and not opt.help
    ]
    assert missing == []
