"""Threshold placeholders inside rule text, and walking the rule data to replace them.

The catalogue writes a threshold as a token; each output flavour (concrete values or Helm
expressions) resolves the tokens its own way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

TOKEN_RE = re.compile(r"\x00([A-Za-z0-9]+)\x00")
_MARKER_RE = re.compile(r"<<([A-Za-z0-9]+)>>")


def T(key: str) -> str:  # noqa: N802 - reads like a placeholder in the rule text
    """Placeholder for threshold ``key`` inside rule text."""
    return f"\x00{key}\x00"


def from_markers(text: str) -> str:
    """Turn ``<<key>>`` markers into threshold placeholders."""
    return _MARKER_RE.sub(lambda m: T(m.group(1)), text)


def map_strings(data: Any, fn: Callable[[str], str]) -> Any:
    """``data`` (nested lists and dicts) with ``fn`` applied to every string value."""
    if isinstance(data, str):
        return fn(data)
    if isinstance(data, list):
        return [map_strings(item, fn) for item in data]
    if isinstance(data, dict):
        return {key: map_strings(value, fn) for key, value in data.items()}
    return data


def substitute(text: str, fn: Callable[[str], str]) -> str:
    """``text`` with each token replaced by ``fn(key)``."""
    return TOKEN_RE.sub(lambda m: fn(m.group(1)), text)


def keys_in(text: str) -> list[str]:
    """Threshold keys of the tokens in ``text``, in order."""
    return TOKEN_RE.findall(text)
