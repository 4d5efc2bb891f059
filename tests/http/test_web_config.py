"""Parsing the web configuration file: strict, one line naming the field, no secrets echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.errors import SettingsError
from exporter.web_config import MAX_FILE_BYTES, load_web_config, parse_duration
from tests.http.certs import bcrypt_hash

HASH = "$2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "web.yml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(SettingsError) as info:
        load_web_config(write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_full_file_parses_with_paths_relative_to_its_directory(tmp_path: Path) -> None:
    cfg = load_web_config(
        write(
            tmp_path,
            f"""
tls_server_config:
  cert_file: tls/server.crt
  key_file: /abs/server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.crt
  client_allowed_sans: [prometheus.monitoring.svc]
  min_version: TLS13
  max_version: TLS13
  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]
  prefer_server_cipher_suites: false
http_server_config:
  http2: false
  headers:
    X-Frame-Options: deny
    Strict-Transport-Security: max-age=31536000
basic_auth_users:
  prometheus: '{HASH}'
rate_limit:
  interval: 1m30s
  burst: 5
""",
        )
    )
    assert cfg.tls is not None
    assert cfg.tls.cert_file == tmp_path / "tls/server.crt"
    assert cfg.tls.key_file == Path("/abs/server.key")
    assert cfg.tls.client_ca_file == tmp_path / "ca.crt"
    assert cfg.tls.client_allowed_sans == ("prometheus.monitoring.svc",)
    assert cfg.tls.openssl_ciphers == ("ECDHE-RSA-AES128-GCM-SHA256",)
    assert cfg.tls.prefer_server_cipher_suites is False
    assert cfg.http2 is False
    assert dict(cfg.headers)["X-Frame-Options"] == "deny"
    assert cfg.basic_auth_users == {"prometheus": HASH.encode()}
    assert cfg.rate_limit is not None
    assert cfg.rate_limit.interval_seconds == 90
    summary = cfg.summary()
    assert summary["basic_auth_users"] == ["prometheus"]
    assert HASH not in repr(summary)
    assert HASH not in repr(cfg)


def test_empty_file_and_empty_sections_mean_plain_http(tmp_path: Path) -> None:
    cfg = load_web_config(write(tmp_path, ""))
    assert cfg.tls is None
    assert not cfg.basic_auth_users
    cfg = load_web_config(
        write(tmp_path, "tls_server_config:\nhttp_server_config:\nbasic_auth_users:\n")
    )
    assert cfg.tls is None
    assert cfg.rate_limit is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tls_serverconfig: {}", "tls_serverconfig: unknown field"),
        (
            "tls_server_config: {cert_file: a, key_file: b, ciphers: []}",
            "tls_server_config.ciphers: unknown field",
        ),
        ("http_server_config: {gzip: true}", "http_server_config.gzip: unknown field"),
        ("rate_limit: {interval: 1s, burst: 1, period: 2}", "rate_limit.period: unknown field"),
        ("- a\n- b", "top level must be a mapping"),
        ("tls_server_config: [a]", "tls_server_config: must be a mapping"),
        ("tls_server_config: {cert_file: a}", "tls_server_config.key_file: missing"),
        ("tls_server_config: {key_file: a}", "tls_server_config.cert_file: missing"),
        ("tls_server_config: {client_auth_type: RequireAndVerifyClientCert}", "cert_file: missing"),
        (
            "tls_server_config: {cert_file: a, key_file: b, client_auth_type: Sometimes}",
            "tls_server_config.client_auth_type: unknown value 'Sometimes'",
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, client_auth_type: RequireAnyClientCert, client_ca_file: c}",
            "tls_server_config.client_auth_type: RequireAnyClientCert",
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, client_ca_file: c}",
            "tls_server_config.client_auth_type: client CAs are configured without a client auth policy",
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, client_auth_type: RequireAndVerifyClientCert}",
            "tls_server_config.client_ca_file: required by client_auth_type",
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, client_auth_type: VerifyClientCertIfGiven, client_ca_file: c, client_allowed_sans: [x]}",
            "tls_server_config.client_allowed_sans: requires client_auth_type RequireAndVerifyClientCert",
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, min_version: TLS14}",
            "tls_server_config.min_version: unknown TLS version 'TLS14'",
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, min_version: TLS13, max_version: TLS12}",
            "tls_server_config.min_version: is above max_version",
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]}",
            "tls_server_config.cipher_suites[0]: unknown cipher suite 'TLS_RSA_WITH_RC4_128_SHA'",
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, curve_preferences: [X25519]}",
            "tls_server_config.curve_preferences: not supported",
        ),
        (
            "tls_server_config: {cert: PEM, key_file: b}",
            "tls_server_config.cert: inline PEM is not supported",
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b, prefer_server_cipher_suites: maybe}",
            "tls_server_config.prefer_server_cipher_suites: must be true or false",
        ),
        ("http_server_config: {http2: 1}", "http_server_config.http2: must be true or false"),
        (
            "http_server_config: {headers: {Server: x}}",
            "http_server_config.headers.Server: can not be configured",
        ),
        (
            "http_server_config: {headers: {X-Frame-Options: allow}}",
            "http_server_config.headers.X-Frame-Options: must be one of deny, sameorigin",
        ),
        ("basic_auth_users: [a]", "basic_auth_users: must be a mapping"),
        ("basic_auth_users: {'a:b': x}", "basic_auth_users.a:b: a user name must be non-empty"),
        ("rate_limit: {interval: fast, burst: 1}", "rate_limit.interval: 'fast' is not a duration"),
        ("rate_limit: {interval: 1s}", "rate_limit.burst: must be at least 1"),
        (
            "rate_limit: {interval: 1s, burst: -1}",
            "rate_limit.burst: must be a non-negative integer",
        ),
        ("tls_server_config: {cert_file: [a", "at line"),
    ],
)
def test_invalid_file_is_one_line_naming_the_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    message = error_of(tmp_path, text)
    assert message.startswith(f"web_config_file {tmp_path / 'web.yml'}: ")
    assert expected in message


def test_a_password_where_a_hash_belongs_is_not_echoed(tmp_path: Path) -> None:
    message = error_of(tmp_path, "basic_auth_users:\n  prometheus: hunter2-plaintext\n")
    assert "basic_auth_users.prometheus: is not a bcrypt hash" in message
    assert "hunter2" not in message


def test_hashes_of_every_bcrypt_flavour_are_accepted(tmp_path: Path) -> None:
    made = bcrypt_hash("pw")  # $2b$
    text = (
        f"basic_auth_users:\n  a: '{made}'\n  b: '{HASH}'\n  c: '{made.replace('$2b$', '$2a$')}'\n"
    )
    assert set(load_web_config(write(tmp_path, text)).basic_auth_users) == {"a", "b", "c"}


def test_missing_unreadable_and_oversized_files(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"cannot read \(No such file"):
        load_web_config(tmp_path / "absent.yml")
    big = tmp_path / "big.yml"
    big.write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    with pytest.raises(SettingsError, match="larger than"):
        load_web_config(big)
    binary = tmp_path / "bin.yml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SettingsError, match="not UTF-8"):
        load_web_config(binary)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("100ms", 0.1),
        ("1m30s", 90.0),
        ("2h", 7200.0),
        ("1.5s", 1.5),
        ("250us", 0.00025),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "s", "1x", "-1s", "1s "])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # exporter-toolkit reads the file strictly: a repeated user (or key) is an error there too
        (
            f"basic_auth_users:\n  prom: '{HASH}'\n  prom: '{HASH}'\n",
            "duplicate key 'prom' at line 3",
        ),
        ("[" * 100_000 + "\n", "nested too deeply"),
        ("rate_limit: {interval: 1s, burst: " + "9" * 5000 + "}\n", "rate_limit.burst:"),
    ],
)
def test_hostile_yaml_is_one_line_not_a_traceback(tmp_path: Path, text: str, expected: str) -> None:
    message = error_of(tmp_path, text)
    assert expected in message
    assert "9999999999" not in message
