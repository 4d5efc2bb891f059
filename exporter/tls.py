"""TLS for the HTTP server: an ``ssl.SSLContext`` from ``tls_server_config``.

The certificate, key and client CA files are re-read when they change (checked
at most once a second, on the next new connection), as exporter-toolkit re-reads
them per handshake: a renewed certificate (cert-manager, a rotated Secret) is
served without a restart. A file that fails to load keeps the previous context
and is logged once per change.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from exporter.errors import SettingsError
from exporter.web_config import TlsServerConfig, load_web_config

log = structlog.get_logger("exporter.tls")

_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_VERIFY = {
    "NoClientCert": ssl.CERT_NONE,
    # Go's RequestClientCert asks for a certificate but accepts any client, with or without
    # one: the same set of clients as not asking (Python cannot ask without verifying).
    "RequestClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}


def build_context(cfg: TlsServerConfig) -> ssl.SSLContext:
    """A server context for ``cfg``; :class:`SettingsError` naming the field on failure."""
    where = "tls_server_config"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.minimum_version = _VERSIONS[cfg.min_version]
        ctx.maximum_version = _VERSIONS[cfg.max_version]
    except (ValueError, ssl.SSLError) as exc:
        raise SettingsError(f"{where}.min_version: not supported here ({exc})") from None
    if cfg.prefer_server_cipher_suites:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    if cfg.openssl_ciphers:
        try:
            ctx.set_ciphers(":".join(cfg.openssl_ciphers))
        except ssl.SSLError:
            raise SettingsError(
                f"{where}.cipher_suites: none of the suites is available in this OpenSSL build"
            ) from None
    for name, path in (("cert_file", cfg.cert_file), ("key_file", cfg.key_file)):
        if not os.access(path, os.R_OK):
            reason = "no such file" if not path.exists() else "not readable"
            raise SettingsError(f"{where}.{name}: cannot read {path} ({reason})")
    try:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    except (ssl.SSLError, OSError) as exc:
        # the reason from OpenSSL (e.g. KEY_VALUES_MISMATCH), never file contents
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or "invalid PEM"
        raise SettingsError(
            f"{where}.cert_file: cannot load the certificate and key ({reason})"
        ) from None
    if cfg.client_ca_file is not None or cfg.client_ca_pem is not None:
        field = "client_ca_file" if cfg.client_ca_file is not None else "client_ca"
        try:
            if cfg.client_ca_file is not None:
                ctx.load_verify_locations(cafile=cfg.client_ca_file)
            else:
                ctx.load_verify_locations(cadata=cfg.client_ca_pem)
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or "invalid PEM"
            raise SettingsError(f"{where}.{field}: cannot load the CA ({reason})") from None
    ctx.verify_mode = _VERIFY[cfg.client_auth_type]
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _normalise_san(kind: str, value: str) -> str:
    if kind == "IP Address":
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            return value
    return value


def allowed_san(peer: dict[str, Any], allowed: tuple[str, ...]) -> bool:
    """True when the verified peer certificate has a SAN in ``allowed`` (exact match)."""
    wanted = {_normalise_san("IP Address", a) for a in allowed} | set(allowed)
    for kind, value in peer.get("subjectAltName", ()):
        if _normalise_san(str(kind), str(value)) in wanted:
            return True
    return False


def _stamp(cfg: TlsServerConfig) -> tuple[tuple[int, int], ...]:
    out = []
    for path in cfg.files:
        try:
            st = path.stat()
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((-1, -1))
    return tuple(out)


class ReloadingContext:
    """The current server context, rebuilt when one of its files changes."""

    def __init__(
        self,
        cfg: TlsServerConfig,
        *,
        check_every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self._ctx = build_context(cfg)
        self._stamp = _stamp(cfg)
        self._failed_stamp: tuple[tuple[int, int], ...] | None = None
        self._checked = clock()
        self._check_every = check_every
        self._clock = clock
        self._lock = threading.Lock()

    def context(self) -> ssl.SSLContext:
        now = self._clock()
        with self._lock:
            if now - self._checked < self._check_every:
                return self._ctx
            self._checked = now
            stamp = _stamp(self.cfg)
            if stamp in (self._stamp, self._failed_stamp):
                return self._ctx
            try:
                ctx = build_context(self.cfg)
            except SettingsError as exc:
                self._failed_stamp = stamp
                log.error("tls_reload_failed", error=str(exc))  # noqa: TRY400 - one line, no traceback
                return self._ctx
            self._ctx, self._stamp, self._failed_stamp = ctx, stamp, None
            log.info("tls_reloaded", cert_file=str(self.cfg.cert_file))
            return self._ctx


def check_web_config(path: Path) -> dict[str, Any]:
    """Validate the file and load its certificates (``check-config``); its summary."""
    cfg = load_web_config(path)
    if cfg.tls is not None:
        build_context(cfg.tls)
    return cfg.summary()
