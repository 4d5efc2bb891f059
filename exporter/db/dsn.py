"""Parsing, validation and masking of libpq connection strings (URI or key=value).

Everything here works on what libpq itself makes of the string
(:func:`psycopg.conninfo.conninfo_to_dict`, i.e. ``PQconninfoParse``), never on
a regular expression over the text:

* :func:`mask_dsn` rebuilds the DSN from the parsed parameters with every
  secret parameter replaced (:func:`psycopg.conninfo.make_conninfo`); a string
  libpq cannot parse is not shown at all.
* :func:`describe_target` shows host, port, database and user only, and only
  values that cannot hold a piece of the password.
* :func:`validate_dsn` rejects what libpq would only reject at connect time
  (``sslmode=bogus``, ``port=99999``) so that a typo is exit code 2 at start,
  not a reconnect loop; its messages never quote the string.
* :func:`redact` removes the password from a driver message (defence in depth).

A raw ``/`` or ``@`` in the password of a URI makes libpq read part of the
password as the host, port or database (``postgresql://u:Sup3r/x@h/db`` has
host ``u`` and port ``Sup3r``). Such a URI is *ambiguous*: it is rejected by
:func:`validate_dsn` and shown by nobody.
"""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

MASK = "****"
#: parameters whose values are secrets
SECRET_PARAMS = frozenset({"password", "sslpassword"})
#: shown instead of a DSN that cannot be shown safely
HIDDEN = "<connection string hidden: not a valid libpq connection string>"
_URI_PREFIXES = ("postgresql://", "postgres://")

#: libpq's message prefixes (fe-connect.c, conninfo parsing) and what we say instead:
#: libpq quotes the offending part of the string, which may be the password.
_PARSE_ERRORS = (
    ('missing "=" after', 'a word without "=" (quote values that contain spaces)'),
    ("unterminated quoted string", "unterminated quoted value"),
    ("invalid connection option", "unknown parameter name"),
    ("invalid percent-encoded token", "invalid percent-encoding (%XX)"),
    ("forbidden value %00", "%00 in a percent-encoded value"),
    ("extra key/value separator", 'extra "=" in a URI query parameter'),
    ("missing key/value separator", 'URI query parameter without "="'),
    ("invalid URI query parameter", "invalid URI query parameter"),
    ("unexpected character", "unexpected character in the URI"),
    ("end of string reached when looking for matching", 'missing "]" after an IPv6 address'),
    ("IPv6 host address may not be empty", "empty IPv6 address in the URI"),
)

#: libpq's enumerated options (libpq 18; case-sensitive unless noted) — libpq checks
#: them only when it connects (connectOptions2), so a typo would be retried forever.
_ENUMS: dict[str, frozenset[str]] = {
    "sslmode": frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}),
    "gssencmode": frozenset({"disable", "prefer", "require"}),
    "channel_binding": frozenset({"disable", "prefer", "require"}),
    "target_session_attrs": frozenset(
        {"any", "read-write", "read-only", "primary", "standby", "prefer-standby"}
    ),
    "load_balance_hosts": frozenset({"disable", "random"}),
    "sslcertmode": frozenset({"disable", "allow", "require"}),
    "sslnegotiation": frozenset({"postgres", "direct"}),
    "min_protocol_version": frozenset({"3.0", "3.2", "latest"}),
    "max_protocol_version": frozenset({"3.0", "3.2", "latest"}),
}
#: compared case-insensitively by libpq
_ENUMS_NOCASE: dict[str, frozenset[str]] = {
    "ssl_min_protocol_version": frozenset({"", "tlsv1", "tlsv1.1", "tlsv1.2", "tlsv1.3"}),
    "ssl_max_protocol_version": frozenset({"", "tlsv1", "tlsv1.1", "tlsv1.2", "tlsv1.3"}),
}
_AUTH_METHODS = frozenset({"password", "md5", "gss", "sspi", "scram-sha-256", "oauth", "none"})
#: integer options (libpq's parse_int_param: optional sign, digits, surrounding blanks)
_INTEGERS = (
    "connect_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
)
_INT_MAX = 2**31 - 1


def _parse_error(exc: psycopg.ProgrammingError) -> str:
    message = str(exc)
    for prefix, ours in _PARSE_ERRORS:
        if message.startswith(prefix):
            return ours
    return "unreadable"


def is_uri(dsn: str) -> bool:
    return dsn.lstrip().startswith(_URI_PREFIXES)


def _uri_ambiguous(dsn: str) -> bool:
    """A URI whose credentials libpq cannot delimit: a raw ``@`` or ``/`` in them.

    libpq finds the user info by looking for the first ``@`` or ``/`` after
    ``://``; every other raw ``@`` means that the user name or password held a
    ``/`` or ``@`` that was not percent-encoded, so libpq read a piece of it as
    the host, port or database.
    """
    rest = dsn.lstrip().split("://", 1)[1]
    at, slash = rest.find("@"), rest.find("/")
    userinfo_end = at if at != -1 and (slash == -1 or at < slash) else -1
    return "@" in rest[userinfo_end + 1 :]


def parse_dsn(dsn: str) -> dict[str, str]:
    """libpq's parameters of the DSN; ``ValueError`` (not quoting it) when unusable."""
    if not dsn.strip():
        raise ValueError("is empty")
    try:  # a non-UTF-8 byte of the environment (a lone surrogate): the codec's error quotes it
        dsn.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not UTF-8 text") from None
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ValueError(f"is not a valid libpq connection string ({_parse_error(exc)})") from None
    if is_uri(dsn) and _uri_ambiguous(dsn):
        raise ValueError(
            "is an ambiguous URI: percent-encode '@' (%40) and '/' (%2F) in the user name, "
            "password and parameter values"
        )
    if is_uri(dsn) and any(ord(c) < 0x20 or ord(c) == 0x7F for c in dsn.strip()):
        # libpq keeps a raw newline in the URI (a secret file's second line ends up in dbname,
        # which logs and the landing page show): a URI must percent-encode it
        raise ValueError(
            "is a URI with a raw control character (a second line?): percent-encode it"
        )
    return {key: str(value) for key, value in params.items() if value is not None}


def _int_ok(text: str) -> bool:
    body = text.strip(" \t\n\r\f\v")
    digits = body[1:] if body[:1] in ("+", "-") else body
    return digits.isascii() and digits.isdigit() and abs(int(body)) <= _INT_MAX


def _check_options(params: dict[str, str]) -> None:
    for key, allowed in _ENUMS.items():
        if key in params and params[key] not in allowed:
            raise ValueError(f"{key}: must be one of {', '.join(sorted(allowed))}")
    for key, allowed in _ENUMS_NOCASE.items():
        if key in params and params[key].lower() not in allowed:
            raise ValueError(f"{key}: must be one of TLSv1, TLSv1.1, TLSv1.2, TLSv1.3")
    if "require_auth" in params:
        methods = params["require_auth"].split(",")
        negated = {m.startswith("!") for m in methods}
        if len(negated) > 1 or any(m.lstrip("!") not in _AUTH_METHODS for m in methods):
            raise ValueError(
                "require_auth: must be a comma-separated list of "
                f"{', '.join(sorted(_AUTH_METHODS))} (all or none negated with '!')"
            )
    for key in _INTEGERS:
        if key in params and not _int_ok(params[key]):
            raise ValueError(f"{key}: must be an integer")
    hosts = params.get("host", "").split(",") if "host" in params else []
    addrs = params.get("hostaddr", "").split(",") if "hostaddr" in params else []
    ports = params["port"].split(",") if "port" in params else []
    for port in ports:
        if port.strip() and not (_int_ok(port) and 1 <= int(port) <= 65535):
            raise ValueError("port: must be a number between 1 and 65535")
    servers = max(len(hosts), len(addrs), 1)
    if hosts and addrs and len(hosts) != len(addrs):
        raise ValueError("hostaddr: needs as many addresses as host has names")
    if len(ports) > 1 and len(ports) != servers:
        raise ValueError("port: needs one port, or one per host")


def validate_dsn(dsn: str) -> None:
    """Raise ``ValueError`` if libpq would reject the DSN; the message never quotes it."""
    _check_options(parse_dsn(dsn))


def safe_params(dsn: str) -> dict[str, str] | None:
    """The parsed parameters, or None for a string that cannot be shown safely."""
    try:
        return parse_dsn(dsn)
    except ValueError:
        return None


def mask_dsn(dsn: str) -> str:
    """The DSN rebuilt from libpq's parameters with every secret replaced by ``****``.

    The result is in key=value form; a string libpq cannot parse (or an
    ambiguous URI) is not shown at all.
    """
    params = safe_params(dsn)
    if params is None:
        return HIDDEN
    masked = {key: (MASK if key in SECRET_PARAMS else value) for key, value in params.items()}
    return make_conninfo("", **masked) if masked else ""


def _shown(value: str | None) -> str | None:
    return value if value else None


def describe_target(dsn: str) -> str:
    """``user@host:port/dbname`` for logs and the landing page: never a password.

    Only libpq's host, port, dbname and user are used; a port that is not a
    number (or a list of them) is left out, and a string libpq cannot parse,
    or an ambiguous URI, is described as hidden.
    """
    params = safe_params(dsn)
    if params is None:
        return "<connection string hidden>"
    host = _shown(params.get("host")) or _shown(params.get("hostaddr")) or "localhost"
    port_text = params.get("port", "")
    ports = port_text.split(",") if port_text else []
    port = port_text if ports and all(p.isascii() and p.isdigit() for p in ports) else None
    user = _shown(params.get("user"))
    dbname = _shown(params.get("dbname")) or user or ""
    where = f"{host}:{port or '5432'}/{dbname}"
    return f"{user}@{where}" if user else where


def secrets_of(dsn: str) -> list[str]:
    """The secret values libpq reads from the DSN (password, sslpassword)."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return []
    return [str(params[key]) for key in SECRET_PARAMS if params.get(key)]


def redact_secrets(text: str, secrets: list[str]) -> str:
    """``text`` on one line without the secrets or any word of them (3+ characters).

    libpq does not print passwords, but a misread string can put a piece of one
    where libpq quotes a host or an option.
    """
    out = " ".join(text.split())
    needles: set[str] = set()
    for secret in secrets:
        if secret:
            needles.add(secret)
            needles.update(part for part in secret.split() if len(part) >= 3)
    for needle in sorted(needles, key=len, reverse=True):
        out = out.replace(needle, MASK)
    return out


def redact(text: str, dsn: str) -> str:
    """``text`` without the DSN itself, its secrets, or any word of them (driver messages)."""
    return redact_secrets(text, [dsn.strip(), *secrets_of(dsn)])
