"""The Prometheus web configuration file (exporter-toolkit format), parsed strictly.

The same file works for this exporter and the Go exporters built on
prometheus/exporter-toolkit (``--web.config.file``)::

    tls_server_config:
      cert_file: server.crt          # relative paths: against the file's directory
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: ca.crt
      min_version: TLS12
    http_server_config:
      headers: {X-Content-Type-Options: nosniff}
    basic_auth_users:
      prometheus: $2b$10$...         # bcrypt hash
    rate_limit: {interval: 100ms, burst: 20}

Unknown keys are rejected as the toolkit does (strict YAML unmarshal). Keys the
toolkit knows but this exporter cannot honour with Python's ``ssl`` module
(inline ``cert``/``key``, ``curve_preferences``, ``RequireAnyClientCert``) are
rejected with the reason, never silently ignored. ``http2`` is accepted and
ignored: the exporter speaks HTTP/1.1.

Every problem is one :class:`~exporter.errors.SettingsError` line naming the
field. Hashes never appear in messages or in :meth:`WebConfig.summary`. The only
I/O here is reading the file itself (size-bounded).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.config_files import read_bounded_text
from exporter.errors import SettingsError

#: a web config file is a few lines; refuse anything that is clearly not one
MAX_FILE_BYTES = 1 << 20

TLS_VERSIONS = ("TLS10", "TLS11", "TLS12", "TLS13")

#: client_auth_type values of the toolkit and whether Python's ssl can honour them
CLIENT_AUTH_TYPES = (
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "RequireClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)
#: modes that verify a client certificate against client_ca_file / client_ca
VERIFYING_CLIENT_AUTH = ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert")

#: Go's secure cipher suites (tls.CipherSuites()) -> OpenSSL names. TLS 1.3 suites map to
#: None: neither Go nor Python's ssl lets a server choose them (always enabled).
CIPHER_SUITES: dict[str, str | None] = {
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    # Go's older spellings of the two ChaCha suites
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
}

#: headers the toolkit lets a file set, with their allowed values (None: any value)
EXTRA_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

_BCRYPT_HASH = re.compile(r"^\$2[aby]?\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}

_TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit")
_TLS_KEYS = (
    "cert",
    "key",
    "client_ca",
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "client_allowed_sans",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
)
_HTTP_KEYS = ("http2", "headers")
_RATE_KEYS = ("interval", "burst")


@dataclass(frozen=True)
class TlsServerConfig:
    """``tls_server_config`` with paths resolved against the file's directory."""

    cert_file: Path
    key_file: Path
    client_auth_type: str = "NoClientCert"
    client_ca_file: Path | None = None
    client_ca_pem: str | None = None
    client_allowed_sans: tuple[str, ...] | None = None
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    #: Go suite names as written (validated); see :data:`CIPHER_SUITES`
    cipher_suites: tuple[str, ...] = ()
    prefer_server_cipher_suites: bool = True

    @property
    def files(self) -> tuple[Path, ...]:
        """The files a certificate reload watches."""
        extra = (self.client_ca_file,) if self.client_ca_file is not None else ()
        return (self.cert_file, self.key_file, *extra)

    @property
    def openssl_ciphers(self) -> tuple[str, ...]:
        """The TLS 1.2 suites in OpenSSL spelling, in the configured order."""
        names = (CIPHER_SUITES[name] for name in self.cipher_suites)
        return tuple(dict.fromkeys(n for n in names if n is not None))


@dataclass(frozen=True)
class RateLimit:
    """Token bucket over all requests: one token every ``interval_seconds``, ``burst`` at most."""

    interval_seconds: float
    burst: int


@dataclass(frozen=True)
class WebConfig:
    """The parsed file. ``basic_auth_users`` maps user names to bcrypt hashes."""

    path: Path
    tls: TlsServerConfig | None = None
    headers: tuple[tuple[str, str], ...] = ()
    http2: bool = True
    basic_auth_users: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    rate_limit: RateLimit | None = None

    def summary(self) -> dict[str, Any]:
        """What the file enables, for logs and ``check-config`` (no hashes, no key material)."""
        tls: dict[str, Any] | None = None
        if self.tls is not None:
            tls = {
                "cert_file": str(self.tls.cert_file),
                "client_auth_type": self.tls.client_auth_type,
                "min_version": self.tls.min_version,
                "max_version": self.tls.max_version,
            }
        return {
            "path": str(self.path),
            "tls": tls,
            "basic_auth_users": sorted(self.basic_auth_users),
            "headers": sorted(name for name, _ in self.headers),
            "rate_limit": (
                None
                if self.rate_limit is None
                else {
                    "interval_seconds": self.rate_limit.interval_seconds,
                    "burst": self.rate_limit.burst,
                }
            ),
        }


class _Invalid(Exception):
    """A problem at ``where`` (dotted field path)."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")


def load_web_config(path: Path | str) -> WebConfig:
    """Read and validate the file; raise :class:`SettingsError` naming the field."""
    file = Path(path)
    prefix = f"web_config_file {file}"
    text = read_bounded_text(file, MAX_FILE_BYTES, prefix)
    try:
        return parse_web_config(text, file)
    except SettingsError as exc:
        raise SettingsError(f"{prefix}: {exc}") from None


def parse_web_config(text: str, path: Path) -> WebConfig:
    """Parse the file's text; relative paths resolve against ``path``'s directory."""
    # the config files' strict loader (imported here: a daemon without a web config never
    # loads PyYAML): duplicate keys are errors, as in exporter-toolkit's strict reading; an
    # over-long integer stays text for the field check to reject
    from exporter.yaml_files import parse_yaml  # noqa: PLC0415

    data = parse_yaml(text)
    try:
        return _parse(data, path)
    except _Invalid as exc:
        raise SettingsError(str(exc)) from None


# -- parsing helpers ------------------------------------------------------------
def _mapping(value: Any, where: str, keys: tuple[str, ...] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Invalid(where, "must be a mapping")
    for key in value:
        if not isinstance(key, str):
            raise _Invalid(where, f"key {key!r} must be a string")
        if keys is not None and key not in keys:
            raise _Invalid(f"{where}.{key}" if where else key, "unknown field")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(where, "must be a string")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(where, "must be true or false")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _Invalid(where, "must be a list of strings")
    return tuple(_string(item, f"{where}[{i}]") for i, item in enumerate(value))


def _path(value: Any, where: str, base: Path) -> Path | None:
    if value is None or value == "":
        return None
    text = _string(value, where)
    if "\x00" in text:
        raise _Invalid(where, "must not contain NUL")
    p = Path(text)
    return p if p.is_absolute() else base / p


def parse_duration(text: str) -> float:
    """A Go duration (``100ms``, ``1m30s``, ``0``) in seconds; ValueError when invalid."""
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            raise ValueError(f"{text!r} is not a duration (e.g. 100ms, 1s, 1m30s)")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if not text:
        raise ValueError("empty duration")
    return total


def _parse(data: Any, path: Path) -> WebConfig:
    if data is not None and not isinstance(data, dict):
        raise _Invalid("web config", "top level must be a mapping")
    top = _mapping(data, "", _TOP_KEYS)
    base = path.parent
    tls = _parse_tls(top.get("tls_server_config"), base)
    http = _mapping(top.get("http_server_config"), "http_server_config", _HTTP_KEYS)
    http2 = True
    if "http2" in http and http["http2"] is not None:
        http2 = _bool(http["http2"], "http_server_config.http2")
    headers = _parse_headers(http.get("headers"))
    users = _parse_users(top.get("basic_auth_users"))
    rate = _parse_rate_limit(top.get("rate_limit"))
    return WebConfig(
        path=path,
        tls=tls,
        headers=headers,
        http2=http2,
        basic_auth_users=users,
        rate_limit=rate,
    )


def _parse_tls(value: Any, base: Path) -> TlsServerConfig | None:
    where = "tls_server_config"
    tls = _mapping(value, where, _TLS_KEYS)
    for inline in ("cert", "key"):
        if tls.get(inline) not in (None, ""):
            raise _Invalid(
                f"{where}.{inline}",
                f"inline PEM is not supported by gecko-exporter; use {inline}_file",
            )
    if tls.get("curve_preferences"):
        raise _Invalid(
            f"{where}.curve_preferences",
            "not supported by gecko-exporter (OpenSSL's default groups are used); remove it",
        )
    cert = _path(tls.get("cert_file"), f"{where}.cert_file", base)
    key = _path(tls.get("key_file"), f"{where}.key_file", base)
    ca_file = _path(tls.get("client_ca_file"), f"{where}.client_ca_file", base)
    ca_pem_raw = tls.get("client_ca")
    ca_pem = _string(ca_pem_raw, f"{where}.client_ca") if ca_pem_raw not in (None, "") else None
    auth_raw = tls.get("client_auth_type")
    auth = _string(auth_raw, f"{where}.client_auth_type") if auth_raw not in (None, "") else ""
    enabled = any(v is not None for v in (cert, key, ca_file, ca_pem)) or auth != ""
    if not enabled:
        # the toolkit serves plain HTTP when no TLS field is set, whatever else the section holds
        _check_tls_options(tls, where)
        return None
    if cert is None:
        raise _Invalid(f"{where}.cert_file", "missing (TLS needs cert_file and key_file)")
    if key is None:
        raise _Invalid(f"{where}.key_file", "missing (TLS needs cert_file and key_file)")
    auth = auth or "NoClientCert"
    if auth not in CLIENT_AUTH_TYPES:
        raise _Invalid(
            f"{where}.client_auth_type",
            f"unknown value {auth!r} (known: {', '.join(CLIENT_AUTH_TYPES)})",
        )
    if auth in ("RequireAnyClientCert", "RequireClientCert"):
        raise _Invalid(
            f"{where}.client_auth_type",
            f"{auth} (a client certificate required but not verified) is not supported: "
            "Python's ssl module verifies every certificate it requires; "
            "use RequireAndVerifyClientCert with client_ca_file",
        )
    if ca_file is not None and ca_pem is not None:
        raise _Invalid(f"{where}.client_ca", "set only one of client_ca and client_ca_file")
    has_ca = ca_file is not None or ca_pem is not None
    if has_ca and auth == "NoClientCert":
        raise _Invalid(
            f"{where}.client_auth_type",
            "client CAs are configured without a client auth policy "
            "(set VerifyClientCertIfGiven or RequireAndVerifyClientCert)",
        )
    if auth in VERIFYING_CLIENT_AUTH and not has_ca:
        raise _Invalid(f"{where}.client_ca_file", f"required by client_auth_type {auth}")
    sans: tuple[str, ...] | None = None
    if tls.get("client_allowed_sans") is not None:
        sans = _strings(tls["client_allowed_sans"], f"{where}.client_allowed_sans")
        if auth != "RequireAndVerifyClientCert":
            raise _Invalid(
                f"{where}.client_allowed_sans",
                "requires client_auth_type RequireAndVerifyClientCert",
            )
    options = _check_tls_options(tls, where)
    return TlsServerConfig(
        cert_file=cert,
        key_file=key,
        client_auth_type=auth,
        client_ca_file=ca_file,
        client_ca_pem=ca_pem,
        client_allowed_sans=sans,
        min_version=options["min_version"],
        max_version=options["max_version"],
        cipher_suites=options["cipher_suites"],
        prefer_server_cipher_suites=options["prefer_server_cipher_suites"],
    )


def _check_tls_options(tls: dict[str, Any], where: str) -> dict[str, Any]:
    versions = {}
    for name, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        raw = tls.get(name)
        value = default if raw in (None, "") else _string(raw, f"{where}.{name}")
        if value not in TLS_VERSIONS:
            raise _Invalid(
                f"{where}.{name}",
                f"unknown TLS version {value!r} (known: {', '.join(TLS_VERSIONS)})",
            )
        versions[name] = value
    if TLS_VERSIONS.index(versions["min_version"]) > TLS_VERSIONS.index(versions["max_version"]):
        raise _Invalid(f"{where}.min_version", "is above max_version")
    suites = _strings(tls.get("cipher_suites"), f"{where}.cipher_suites")
    for i, suite in enumerate(suites):
        if suite not in CIPHER_SUITES:
            raise _Invalid(f"{where}.cipher_suites[{i}]", f"unknown cipher suite {suite!r}")
    prefer = tls.get("prefer_server_cipher_suites")
    return {
        **versions,
        "cipher_suites": suites,
        "prefer_server_cipher_suites": (
            True if prefer is None else _bool(prefer, f"{where}.prefer_server_cipher_suites")
        ),
    }


def _parse_headers(value: Any) -> tuple[tuple[str, str], ...]:
    where = "http_server_config.headers"
    headers = _mapping(value, where, None)
    out = []
    for name, raw in headers.items():
        allowed = EXTRA_HEADERS.get(name, ())
        if name not in EXTRA_HEADERS:
            raise _Invalid(
                f"{where}.{name}",
                f"can not be configured (allowed: {', '.join(EXTRA_HEADERS)})",
            )
        text = _string(raw, f"{where}.{name}")
        if any(c in text for c in "\r\n\x00"):
            raise _Invalid(f"{where}.{name}", "must be one line")
        if allowed and text not in allowed:
            raise _Invalid(f"{where}.{name}", f"must be one of {', '.join(allowed)}")
        if text:
            out.append((name, text))
    return tuple(out)


def _parse_users(value: Any) -> dict[str, bytes]:
    where = "basic_auth_users"
    users = _mapping(value, where, None)
    out: dict[str, bytes] = {}
    for name, hashed in users.items():
        if ":" in name or not name:
            raise _Invalid(f"{where}.{name}", "a user name must be non-empty and without ':'")
        if not isinstance(hashed, str) or not _BCRYPT_HASH.match(hashed):
            # never echo the value: it may be a plaintext password pasted by mistake
            raise _Invalid(f"{where}.{name}", "is not a bcrypt hash ($2a$/$2b$/$2y$, cost 4-31)")
        out[name] = hashed.encode("ascii")
    return out


def _parse_rate_limit(value: Any) -> RateLimit | None:
    where = "rate_limit"
    rate = _mapping(value, where, _RATE_KEYS)
    raw_interval = rate.get("interval", 0)
    if isinstance(raw_interval, int) and not isinstance(raw_interval, bool) and raw_interval == 0:
        interval = 0.0
    else:
        try:
            interval = parse_duration(_string(raw_interval, f"{where}.interval"))
        except ValueError as exc:
            raise _Invalid(f"{where}.interval", str(exc)) from None
    burst = rate.get("burst", 0)
    if not isinstance(burst, int) or isinstance(burst, bool) or burst < 0:
        raise _Invalid(f"{where}.burst", "must be a non-negative integer")
    if interval == 0:
        return None
    if burst == 0:
        raise _Invalid(f"{where}.burst", "must be at least 1 when interval is set")
    return RateLimit(interval_seconds=interval, burst=burst)
