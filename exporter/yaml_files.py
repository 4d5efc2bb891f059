"""Strict YAML for configuration files: duplicate keys are errors, problems are one line.

Imported only where a YAML file is read: the settings loader (the config file) and
the web config file. The daemon without a web config never loads PyYAML.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import yaml

from exporter.config_files import read_bounded_text
from exporter.errors import SettingsError


class StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, rejecting duplicate keys; over-long integers stay text.

    An integer of thousands of digits would raise inside PyYAML (Python's
    int-conversion limit); kept as a string, the field's validation rejects it
    and names the field.
    """


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # unhashable: PyYAML reports it
            continue
        if duplicate:
            shown = key if isinstance(key, str) and len(key) <= 64 else "…"
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{shown}'", key_node.start_mark
            )
    return yaml.SafeLoader.construct_mapping(loader, node, deep=True)


_LONG_INTEGER = re.compile(r"[-+]?[0-9_]{100,}")


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    text = str(loader.construct_scalar(node))
    if _LONG_INTEGER.fullmatch(text):
        return text
    return yaml.SafeLoader.construct_yaml_int(loader, node)


def _construct_str(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> str:
    """A string; a JSON-style escaped surrogate pair (``"\\ud83d\\ude00"``) is one character.

    JSON is YAML, and JSON writers escape a character beyond U+FFFF as a UTF-16 pair;
    PyYAML reads each half as a lone surrogate, which no text encoding accepts. A lone
    surrogate stays as it is (the field's check rejects it).
    """
    text = str(loader.construct_scalar(node))
    if any("\ud800" <= char <= "\udfff" for char in text):
        with contextlib.suppress(UnicodeError):
            text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    return text


StrictLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
StrictLoader.add_constructor("tag:yaml.org,2002:str", _construct_str)


def parse_yaml(text: str) -> Any:
    """YAML text read by :class:`StrictLoader`, or one SettingsError line (no field prefix).

    PyYAML quotes the offending text in most problems (an undefined alias, a
    character that starts no token): only the kind of problem is kept, so a
    secret next to a typo is never echoed; a duplicate key is named.
    """
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = str(getattr(exc, "problem", None) or "invalid YAML")
        if not problem.startswith("duplicate key"):
            problem = problem.split("'", 1)[0].split('"', 1)[0].strip() or "invalid YAML"
        raise SettingsError(f"{problem}{where}") from None
    except RecursionError:
        raise SettingsError("nested too deeply") from None


def load_yaml_mapping(path: Path, limit: int, what: str) -> dict[Any, Any]:
    """A YAML file whose top level is a mapping (empty: ``{}``), or one SettingsError line."""
    text = read_bounded_text(path, limit, what)
    try:
        data = parse_yaml(text)
    except SettingsError as exc:
        raise SettingsError(f"{what}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"{what}: top level must be a mapping")
    return data
