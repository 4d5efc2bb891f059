"""Pure helpers for building SQL text from allow-listed identifiers."""

from __future__ import annotations


def quote_ident(name: str) -> str:
    """Quote an identifier the way PostgreSQL does (``"Scan"``, doubled quotes)."""
    if "\x00" in name:
        raise ValueError("identifier contains NUL")
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, table: str) -> str:
    """``"schema"."Table"``."""
    return f"{quote_ident(schema)}.{quote_ident(table)}"
