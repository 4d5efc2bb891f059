"""Load the configuration in a short-lived child process (issue 12 §3).

pydantic-settings validates the configuration, but pydantic, pydantic-settings and
pydantic-core would stay resident in the daemon for its whole life (13-17 MiB of
its RSS). So ``gecko-exporter run`` starts ``python -m exporter.config_process``:
the config-file path and the flag values go to the child as JSON on its stdin
(never in its arguments: nothing secret may appear in a process's argv), the
child inherits the environment, validates with :func:`exporter.settings.load_config`
and writes the pickled :class:`~exporter.config.Config` to stdout (exit 0), or one
error line to stderr (exit 2). The parent, which imports only :mod:`exporter.config`
to unpickle, relays that line.

The pickle is trusted: it is the output of this package's own code, run with this
interpreter, read from a pipe only the parent holds.
"""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from exporter.config import Config
from exporter.errors import SettingsError

#: the child's exit status for a configuration error (its stderr holds the one line)
EXIT_SETTINGS = 2
#: longest wait for the child (a config file on a FIFO nobody writes must not hang start-up)
TIMEOUT_SECONDS = 60.0
#: the child's stderr is one line; more is cut (a runaway child cannot fill the log)
MAX_ERROR_CHARS = 2000


class LoaderFailed(Exception):
    """The child died without a configuration error line (a bug, a signal, a time-out)."""


def load_in_child(
    *,
    config_file: Path | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    timeout: float = TIMEOUT_SECONDS,
) -> Config:
    """The validated configuration, from a child process that imports pydantic-settings.

    Raises :class:`SettingsError` (one line) for bad input and :class:`LoaderFailed`
    when the child fails otherwise.
    """
    request = json.dumps(
        {
            "config_file": None if config_file is None else str(config_file),
            "overrides": {key: _jsonable(value) for key, value in (overrides or {}).items()},
        }
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "exporter.config_process"],
            input=request.encode(),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise LoaderFailed(f"did not finish within {timeout:g} s") from None
    except OSError as exc:
        raise LoaderFailed(f"cannot start ({exc.strerror or type(exc).__name__})") from None
    if done.returncode == 0:
        try:
            config = pickle.loads(done.stdout)  # noqa: S301 - our own child's output
        except Exception:  # noqa: BLE001 - any unpickling problem is one line
            raise LoaderFailed("wrote no configuration") from None
        if not isinstance(config, Config):
            raise LoaderFailed("wrote no configuration")
        return config
    line = _last_line(done.stderr)
    if done.returncode == EXIT_SETTINGS and line:
        raise SettingsError(line)
    if done.returncode < 0:
        raise LoaderFailed(f"killed by {_signal_name(-done.returncode)}")
    raise LoaderFailed(f"exited with status {done.returncode}")


def _jsonable(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def _last_line(stderr: bytes) -> str:
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1][:MAX_ERROR_CHARS] if lines else ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def main() -> int:
    """The child: JSON request on stdin, pickled Config on stdout or one line on stderr."""
    try:
        request = json.loads(sys.stdin.buffer.read())
        from exporter.settings import load_config  # noqa: PLC0415 - the child's whole job

        config = load_config(config_file=request["config_file"], overrides=request["overrides"])
    except SettingsError as exc:
        sys.stderr.write(f"{exc}\n")
        return EXIT_SETTINGS
    sys.stdout.buffer.write(pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
