"""Parsing and masking of libpq connection strings (URI or key=value)."""

from __future__ import annotations

import re

import psycopg
from psycopg.conninfo import conninfo_to_dict

_URI_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@?#]*:)([^@/?#]*)(@)")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
MASK = "****"


def validate_dsn(dsn: str) -> None:
    """Raise ``ValueError`` (without echoing the DSN) if libpq cannot parse it."""
    if not dsn.strip():
        raise ValueError("is empty")
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        # libpq's message can quote the offending fragment: keep only its first
        # clause and never the string itself.
        detail = str(exc).split(":", 1)[0].strip() or "invalid connection string"
        raise ValueError(f"is not a valid libpq connection string ({detail})") from None


def mask_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ``****`` (for logs and check-config)."""
    masked = _URI_PASSWORD.sub(lambda m: m.group(1) + MASK + m.group(3), dsn)
    return _KV_PASSWORD.sub(lambda m: m.group(1) + MASK, masked)


def describe_target(dsn: str) -> str:
    """``host:port/dbname`` for logs: no user, no password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<invalid dsn>"
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = str(params.get("port") or "5432")
    dbname = str(params.get("dbname") or params.get("user") or "")
    return f"{host}:{port}/{dbname}"
