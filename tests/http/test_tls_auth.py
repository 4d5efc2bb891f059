"""TLS, client certificates, basic auth, headers and rate limit with a real PKI."""

from __future__ import annotations

import base64
import http.client
import shutil
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from exporter.errors import SettingsError
from exporter.server import BasicAuth, HttpServer
from exporter.tls import ReloadingContext, build_context
from exporter.web_config import load_web_config
from tests.http.certs import Pki, bcrypt_hash, issue, make_ca
from tests.http.conftest import ServeFactory
from tests.support.wait import wait_until


def client_context(
    pki: Pki, *, cert: tuple[Path, Path] | None = None, max_version: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        ctx.load_cert_chain(*cert)
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


def https_get(
    port: int, ctx: ssl.SSLContext, path: str = "/metrics", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def tls_config(pki: Pki, extra: str = "") -> str:
    return (
        "tls_server_config:\n"
        f"  cert_file: {pki.server_cert.name}\n"
        f"  key_file: {pki.server_key.name}\n" + extra
    )


# -- TLS ------------------------------------------------------------------------------
def test_https_with_relative_paths_and_plain_http_refused(serve: ServeFactory, pki: Pki) -> None:
    server = serve(tls_config(pki), config_dir=pki.directory)
    assert server.scheme == "https"
    status, _, body = https_get(server.port, client_context(pki))
    assert status == 200
    assert b"gecko_up" in body
    # a plain-HTTP client gets no HTTP answer from the TLS port
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.connect()
    conn.sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.sock.settimeout(5)
    try:
        answer = conn.sock.recv(100)
    except ConnectionResetError:
        answer = b""
    assert not answer.startswith(b"HTTP/")
    conn.close()
    assert https_get(server.port, client_context(pki), "/healthz")[0] == 200


def test_keep_alive_over_tls(serve: ServeFactory, pki: Pki) -> None:
    server = serve(tls_config(pki), config_dir=pki.directory)
    conn = http.client.HTTPSConnection(
        "127.0.0.1", server.port, timeout=5, context=client_context(pki)
    )
    conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
    resp = conn.getresponse()
    assert resp.getheader("Content-Encoding") == "gzip"
    resp.read()
    sock = conn.sock
    conn.request("GET", "/healthz")
    assert conn.getresponse().read() == b"ok\n"
    assert conn.sock is sock
    conn.close()


def test_min_version_is_enforced(serve: ServeFactory, pki: Pki) -> None:
    server = serve(tls_config(pki, "  min_version: TLS13\n"), config_dir=pki.directory)
    with pytest.raises(ssl.SSLError):
        https_get(server.port, client_context(pki, max_version=ssl.TLSVersion.TLSv1_2))
    assert https_get(server.port, client_context(pki))[0] == 200


def test_cipher_suites_are_applied(serve: ServeFactory, pki: Pki) -> None:
    server = serve(
        tls_config(
            pki,
            "  max_version: TLS12\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\n",
        ),
        config_dir=pki.directory,
    )
    ctx = client_context(pki)
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        cipher = tls.cipher()
        assert cipher is not None
        assert cipher[0] == "ECDHE-ECDSA-AES256-GCM-SHA384"
        assert tls.version() == "TLSv1.2"


def test_client_certificate_required(serve: ServeFactory, pki: Pki) -> None:
    server = serve(
        tls_config(
            pki,
            f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki.ca.name}\n",
        ),
        config_dir=pki.directory,
    )
    good = client_context(pki, cert=(pki.client_cert, pki.client_key))
    assert https_get(server.port, good)[0] == 200
    for bad in (client_context(pki), client_context(pki, cert=(pki.rogue_cert, pki.rogue_key))):
        # TLS 1.3: the server's rejection arrives after the client's handshake completes
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            https_get(server.port, bad)
    # the health paths are not exempt from the client certificate
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        https_get(server.port, client_context(pki), "/healthz")
    assert https_get(server.port, good, "/healthz")[0] == 200


def test_client_certificate_verified_if_given(serve: ServeFactory, pki: Pki) -> None:
    server = serve(
        tls_config(
            pki,
            f"  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: {pki.ca.name}\n",
        ),
        config_dir=pki.directory,
    )
    assert https_get(server.port, client_context(pki))[0] == 200
    assert (
        https_get(server.port, client_context(pki, cert=(pki.client_cert, pki.client_key)))[0]
        == 200
    )
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        https_get(server.port, client_context(pki, cert=(pki.rogue_cert, pki.rogue_key)))


def test_client_allowed_sans(serve: ServeFactory, pki: Pki) -> None:
    base = (
        "  client_auth_type: RequireAndVerifyClientCert\n"
        f"  client_ca_file: {pki.ca.name}\n"
        "  client_allowed_sans: [{san}]\n"
    )
    good = client_context(pki, cert=(pki.client_cert, pki.client_key))
    allowed = serve(
        tls_config(pki, base.format(san="prometheus.monitoring.svc")), config_dir=pki.directory
    )
    assert https_get(allowed.port, good)[0] == 200
    other = serve(tls_config(pki, base.format(san="other.svc")), config_dir=pki.directory)
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        https_get(other.port, good)


def test_certificate_files_are_reloaded_when_they_change(
    serve: ServeFactory, pki: Pki, tmp_path: Path
) -> None:
    for name in ("ca.crt", "ca.key", "server.crt", "server.key"):
        shutil.copy(pki.directory / name, tmp_path / name)
    server = serve(
        "tls_server_config: {cert_file: server.crt, key_file: server.key}\n", config_dir=tmp_path
    )
    ctx = client_context(pki)

    def served_cert() -> bytes:
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            return der

    before = served_cert()
    issue(
        tmp_path,
        "ca",
        "server",
        "renewed.localhost",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    after = wait_until(
        lambda: (der := served_cert()) != before and der, timeout=10, message="renewed cert"
    )
    assert after != before


def test_a_broken_renewal_keeps_the_last_good_context(pki: Pki, tmp_path: Path) -> None:
    for name in ("ca.crt", "ca.key", "server.crt", "server.key"):
        shutil.copy(pki.directory / name, tmp_path / name)
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config: {cert_file: server.crt, key_file: server.key}\n")
    cfg = load_web_config(web)
    assert cfg.tls is not None
    now = [0.0]
    source = ReloadingContext(cfg.tls, check_every=1.0, clock=lambda: now[0])
    first = source.context()
    issue(tmp_path, "ca", "server", "renewed", "subjectAltName=DNS:localhost\n")
    assert source.context() is first  # not checked again within check_every
    now[0] += 1.5
    renewed = source.context()
    assert renewed is not first
    (tmp_path / "server.key").write_text("not a key\n")
    now[0] += 1.5
    assert source.context() is renewed  # the failure is logged, the last good context stays
    now[0] += 1.5
    assert source.context() is renewed


def test_bad_certificate_files_fail_at_start(pki: Pki, tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config: {{cert_file: {pki.server_cert}, key_file: {pki.client_key}}}\n"
    )
    cfg = load_web_config(web)
    assert cfg.tls is not None
    with pytest.raises(SettingsError, match=r"tls_server_config\.cert_file: cannot load") as info:
        build_context(cfg.tls)
    assert "BEGIN" not in str(info.value)
    web.write_text("tls_server_config: {cert_file: nope.crt, key_file: nope.key}\n")
    cfg = load_web_config(web)
    assert cfg.tls is not None
    with pytest.raises(
        SettingsError, match=r"tls_server_config\.cert_file: cannot read .*nope\.crt"
    ):
        build_context(cfg.tls)


def test_other_ca_for_client_verification(pki: Pki, tmp_path: Path) -> None:
    """client_ca given inline (toolkit's ``client_ca``) works like client_ca_file."""
    make_ca(tmp_path, "inline-ca")
    pem = (tmp_path / "inline-ca.crt").read_text()
    web = tmp_path / "web.yml"
    indented = "".join(f"    {line}\n" for line in pem.splitlines())
    web.write_text(
        f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca: |\n{indented}"
    )
    cfg = load_web_config(web)
    assert cfg.tls is not None
    ctx = build_context(cfg.tls)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert len(ctx.get_ca_certs()) == 1


# -- basic auth -------------------------------------------------------------------------
@pytest.fixture
def auth_server(serve: ServeFactory, pki: Pki, tmp_path: Path) -> HttpServer:
    users = f"basic_auth_users:\n  prometheus: '{bcrypt_hash('s3cret-pass')}'\n"
    return serve(
        tls_config(pki, users)
        .replace("cert_file: ", f"cert_file: {pki.directory}/")
        .replace("key_file: ", f"key_file: {pki.directory}/"),
        config_dir=tmp_path,
    )


def test_basic_auth_wrong_and_right_passwords(auth_server: HttpServer, pki: Pki) -> None:
    ctx = client_context(pki)
    for headers in (
        {},
        basic("prometheus", "wrong"),
        basic("nobody", "s3cret-pass"),
        {"Authorization": "Bearer x"},
        {"Authorization": "Basic !!!"},
    ):
        status, resp_headers, _ = https_get(auth_server.port, ctx, headers=headers)
        assert status == 401, headers
        assert resp_headers["www-authenticate"].startswith("Basic realm=")
    status, _, body = https_get(auth_server.port, ctx, headers=basic("prometheus", "s3cret-pass"))
    assert status == 200
    assert b"gecko_up" in body
    assert https_get(auth_server.port, ctx, "/", headers={})[0] == 401
    # health checks carry no password
    assert https_get(auth_server.port, ctx, "/healthz")[0] == 200
    assert https_get(auth_server.port, ctx, "/readyz")[0] == 200


def test_basic_auth_over_plain_http(serve: ServeFactory, tmp_path: Path) -> None:
    server = serve(f"basic_auth_users:\n  a: '{bcrypt_hash('pw')}'\n", config_dir=tmp_path)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/metrics", headers=basic("a", "pw"))
    assert conn.getresponse().status == 200
    conn.close()


def counting_checkpw(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    calls: list[bytes] = []
    real: Callable[[bytes, bytes], bool] = bcrypt.checkpw

    def counted(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counted)
    return calls


def test_successful_checks_are_cached_failures_are_not(monkeypatch: pytest.MonkeyPatch) -> None:
    hashed = bcrypt_hash("pw").encode()
    auth = BasicAuth({"a": hashed})
    calls = counting_checkpw(monkeypatch)
    assert auth.verify(b"a", b"pw")
    assert auth.verify(b"a", b"pw")
    assert len(calls) == 1  # the second scrape did not pay a bcrypt
    assert not auth.verify(b"a", b"nope")
    assert not auth.verify(b"a", b"nope")
    assert len(calls) == 3
    assert not auth.verify(b"a", b"x" * 100)  # over bcrypt's 72 bytes: a failure, not a crash


def test_unknown_users_cost_a_bcrypt_of_the_same_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    hashed = bcrypt_hash("pw", cost=5).encode()
    auth = BasicAuth({"a": hashed})
    calls = counting_checkpw(monkeypatch)
    assert not auth.verify(b"ghost", b"pw")
    assert not auth.verify(b"ghost", b"pw")  # never cached as a success
    assert len(calls) == 2
    assert all(h != hashed and h.startswith(b"$2b$05$") for h in calls)


# -- headers and rate limit -------------------------------------------------------------
def test_configured_headers_on_every_response(serve: ServeFactory, tmp_path: Path) -> None:
    server = serve(
        "http_server_config:\n  http2: true\n  headers:\n    X-Content-Type-Options: nosniff\n"
        "    Strict-Transport-Security: max-age=60\n",
        config_dir=tmp_path,
    )
    for path in ("/metrics", "/healthz", "/nope"):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.getheader("X-Content-Type-Options") == "nosniff"
        assert resp.getheader("Strict-Transport-Security") == "max-age=60"
        conn.close()


def test_rate_limit_answers_429(serve: ServeFactory, tmp_path: Path) -> None:
    server = serve("rate_limit: {interval: 1h, burst: 2}\n", config_dir=tmp_path)
    statuses: list[Any] = []
    for _ in range(4):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/healthz")
        statuses.append(conn.getresponse().status)
        conn.close()
    assert statuses == [200, 200, 429, 429]
