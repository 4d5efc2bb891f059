"""Run ``gecko-exporter`` in this process (fast enough for property-based tests)."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from unittest import mock

from exporter import cli


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """os.environ without any GECKO_* variable, plus ``env``; restored afterwards."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("GECKO_")}
    clean.update(env)
    with mock.patch.dict(os.environ, clean, clear=True):
        yield


def run_inprocess(argv: Sequence[str], env: Mapping[str, str]) -> Outcome:
    """``gecko-exporter ARGV``; any exception but SystemExit propagates (a traceback)."""
    out, err = io.StringIO(), io.StringIO()
    with environment(env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return Outcome(code, out.getvalue(), err.getvalue())
