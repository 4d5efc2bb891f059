"""Reading configuration files: bounded UTF-8 text (no pydantic, no YAML here).

Used by the settings loader (the config file), the runtime configuration (the
DSN secret files) and the web config file; every problem is one
:class:`~exporter.errors.SettingsError` line. YAML is read by
:mod:`exporter.yaml_files`, imported only where a YAML file is read (the daemon
loads PyYAML only for a web config file).
"""

from __future__ import annotations

from pathlib import Path

from exporter.errors import SettingsError


def read_bounded_text(path: Path, limit: int, what: str) -> str:
    """A UTF-8 text file of at most ``limit`` bytes, or one SettingsError line."""
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise SettingsError(f"{what}: cannot read ({exc.strerror or type(exc).__name__})") from None
    if len(data) > limit:
        raise SettingsError(f"{what}: larger than {limit // 1024} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{what}: not UTF-8 (invalid byte at offset {exc.start})") from None
