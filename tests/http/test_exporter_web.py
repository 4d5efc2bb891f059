"""The real ``gecko-exporter`` process with a web config file: flags, env, check-config, logs.

The database is unreachable on purpose (the HTTP layer does not need it; a down
database is a state, not a crash).
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.http.certs import Pki, bcrypt_hash
from tests.support.exporter_proc import ExporterProcess
from tests.support.wait import free_port, wait_until

DSN = "postgresql://mon:hunter2-secret@127.0.0.1:1/privacy"
PASSWORD = "scrape-pass-7"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GECKO_")}
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        env=base,
        timeout=60,
        check=False,
    )


@pytest.fixture
def web_config(pki: Pki, tmp_path: Path) -> tuple[Path, str]:
    """A web config with TLS (relative paths to copies of the PKI files) and one user."""
    for src in (pki.server_cert, pki.server_key):
        (tmp_path / src.name).write_bytes(src.read_bytes())
    hashed = bcrypt_hash(PASSWORD)
    path = tmp_path / "web-config.yml"
    path.write_text(
        f"tls_server_config:\n  cert_file: {pki.server_cert.name}\n  key_file: {pki.server_key.name}\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n"
    )
    return path, hashed


def secrets_of(pki: Pki, hashed: str) -> list[str]:
    key_body = pki.server_key.read_text().splitlines()[1]  # a line of the private key
    return [hashed, hashed[7:], key_body, PASSWORD]


def test_check_config_validates_and_summarises_without_secrets(
    web_config: tuple[Path, str], pki: Pki
) -> None:
    path, hashed = web_config
    res = run_cli("check-config", "--web.config.file", str(path), env={"GECKO_DATABASE_URL": DSN})
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["web_config_file"] == str(path)
    assert out["web_config"]["basic_auth_users"] == ["prometheus"]
    assert out["web_config"]["tls"]["cert_file"] == str(path.parent / pki.server_cert.name)
    for secret in secrets_of(pki, hashed):
        assert secret not in res.stdout + res.stderr


@pytest.mark.parametrize("command", ["run", "check-config"])
@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("tls_server_config: {cert_file: a.crt}\n", "tls_server_config.key_file: missing"),
        ("basic_auth_users: {prometheus: plain-password}\n", "basic_auth_users.prometheus"),
        (
            "tls_server_config: {cert_file: a.crt, key_file: a.key}\n",
            "tls_server_config.cert_file: cannot read",
        ),
        ("bogus: 1\n", "bogus: unknown field"),
    ],
)
def test_invalid_web_config_is_one_line_exit_2(
    tmp_path: Path, command: str, text: str, needle: str
) -> None:
    path = tmp_path / "web.yml"
    path.write_text(text)
    res = run_cli(
        command,
        env={
            "GECKO_DATABASE_URL": DSN,
            "GECKO_WEB_CONFIG_FILE": str(path),
            "GECKO_LISTEN_ADDRESS": f"127.0.0.1:{free_port()}",
        },
    )
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert needle in lines[0]
    assert "plain-password" not in res.stderr
    assert "Traceback" not in res.stderr


def test_web_config_file_from_yaml_settings(web_config: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = web_config
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"web_config_file: {path}\n")
    res = run_cli("check-config", "--config", str(cfg), env={"GECKO_DATABASE_URL": DSN})
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["web_config"]["basic_auth_users"] == ["prometheus"]


class TlsExporter(ExporterProcess):
    """ExporterProcess speaking HTTPS with basic auth."""

    ctx: ssl.SSLContext
    auth: str

    def _status(self, path: str) -> int:
        try:
            return self.get(path, timeout=2)[0]
        except OSError:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"exporter exited: {self.logs_text()[-2000:]}") from None
            return 0

    def get(self, path: str, timeout: float = 5) -> tuple[int, str]:
        req = urllib.request.Request(self.url + path, headers={"Authorization": self.auth})
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ctx) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as err:
            return int(err.code), err.read().decode()


def test_running_exporter_serves_https_with_basic_auth(
    web_config: tuple[Path, str], pki: Pki
) -> None:
    path, hashed = web_config
    exporter = TlsExporter(
        DSN, env={"GECKO_WEB_CONFIG_FILE": str(path), "GECKO_LOG_LEVEL": "debug"}
    )
    exporter.url = f"https://127.0.0.1:{exporter.port}"
    exporter.ctx = ssl.create_default_context(cafile=str(pki.ca))
    exporter.auth = "Basic " + base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()
    with exporter:
        status, body = exporter.get("/metrics")
        assert status == 200
        assert "gecko_up 0.0" in body  # the database is down: a state, not a crash
        for _ in range(2):  # rendered, then from the exposition cache
            req = urllib.request.Request(
                exporter.url + "/metrics",
                headers={"Authorization": exporter.auth, "Accept-Encoding": "gzip"},
            )
            with urllib.request.urlopen(req, timeout=5, context=exporter.ctx) as resp:
                assert resp.headers["Content-Encoding"] == "gzip"
                assert b"gecko_up 0.0" in gzip.decompress(resp.read())
        exporter.auth = "Basic " + base64.b64encode(b"prometheus:wrong").decode()
        assert exporter.get("/metrics")[0] == 401
        assert exporter.get("/healthz")[0] == 200
        started = exporter.wait_event("exporter_started", timeout=10)
        assert started["tls"] is True
        assert started["basic_auth"] is True
        # plain HTTP on the TLS port gets no HTTP answer
        conn = http.client.HTTPConnection("127.0.0.1", exporter.port, timeout=5)
        conn.connect()
        conn.sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = conn.sock.recv(100)
        except ConnectionResetError:
            answer = b""
        conn.close()
        assert not answer.startswith(b"HTTP/")
    wait_until(lambda: exporter.proc is not None and exporter.proc.poll() is not None, timeout=10)
    assert exporter.proc is not None
    assert exporter.proc.returncode == 0
    logs = exporter.logs_text()
    assert "exporter_started" in logs
    for secret in secrets_of(pki, hashed):
        assert secret not in logs
