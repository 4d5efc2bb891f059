"""External tools the dashboard tests need: present, skipped, or (under CI=true) a failure."""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path
from types import ModuleType

import pytest


def in_ci() -> bool:
    """True when running in CI (``CI=true``), where a missing tool must fail the run."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _missing(what: str, hint: str) -> None:
    message = f"{what} is not available ({hint})"
    if in_ci():
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def require_module(name: str, hint: str) -> ModuleType:
    """Import ``name``, or skip (fail under CI) with ``hint`` on how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        _missing(f"Python module {name}", hint)
        raise  # unreachable: _missing always raises


def require_executable(name: str, hint: str, *candidates: str) -> str:
    """Path of executable ``name`` (first existing candidate, else $PATH), or skip/fail."""
    for candidate in candidates:
        if Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if found is None:
        _missing(f"executable {name}", hint)
        raise AssertionError("unreachable")
    return found
