"""The chart's web config (TLS, basic auth) and the image's HEALTHCHECK with TLS on.

The rendered file is read back with the exporter's own parser and served by the real
HTTP layer from a directory laid out as the projected volume would be, then probed
the way the kubelet's HTTPS probe and Docker's HEALTHCHECK do.
"""

from __future__ import annotations

import base64
import http.client
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.server import HttpServer, make_app
from exporter.web_config import load_web_config, parse_web_config
from tests.conftest import require_tool
from tests.deploy.dockerfile import healthcheck_command, parse
from tests.deploy.tools import (
    CHART,
    MONITORING_APIS,
    NAMESPACE,
    HelmError,
    helm_template,
    kubernetes_validate,
    run,
)
from tests.http.certs import Pki, bcrypt_hash, make_pki
from tests.http.conftest import sample_registry

VALUES = Path(__file__).with_name("web-config-values.yaml")
FULLNAME = "gecko-gecko-exporter"
WEB_DIR = "/etc/gecko-exporter/web"


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return containers[0]


def volumes(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    return {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}


def endpoint(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor"]
    first: dict[str, Any] = monitor["spec"]["endpoints"][0]
    return first


def render(*sets: str, values: Path | None = VALUES) -> list[dict[str, Any]]:
    rendered = helm_template(
        CHART, values=[values] if values else [], sets=sets, api_versions=MONITORING_APIS
    )
    return list(rendered.docs)


def test_helm_lint_strict_with_the_web_config(helm: str, chart: Path) -> None:
    proc = run(
        [helm, "lint", "--strict", str(chart), "--namespace", NAMESPACE, "--values", str(VALUES)]
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_off_by_default() -> None:
    docs = render(values=None)
    c = container(docs)
    assert c["args"] == ["run"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert "web-config" not in volumes(docs)
    assert endpoint(docs)["scheme"] == "http"
    assert "basicAuth" not in endpoint(docs)
    assert not [
        d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-web-config")
    ]


def test_inline_config_renders_secret_mount_flag_https_probes_and_scrape_auth(
    tmp_path: Path,
) -> None:
    docs = render()
    c = container(docs)
    assert c["args"] == ["run", "--web.config.file", f"{WEB_DIR}/web-config.yml"]
    (web_mount,) = [m for m in c["volumeMounts"] if m["name"] == "web-config"]
    assert web_mount == {"name": "web-config", "mountPath": WEB_DIR, "readOnly": True}
    sources = volumes(docs)["web-config"]["projected"]["sources"]
    assert [s["secret"]["name"] for s in sources] == [
        f"{FULLNAME}-web-config",
        "gecko-exporter-tls",
    ]
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert c[probe]["httpGet"] == {"path": path, "port": "http", "scheme": "HTTPS"}
    ep = endpoint(docs)
    assert ep["scheme"] == "https"
    assert ep["basicAuth"]["password"] == {"name": "gecko-exporter-scrape", "key": "password"}
    assert ep["tlsConfig"]["serverName"] == "gecko-gecko-exporter.monitoring.svc"
    # the file the exporter reads, with paths resolved inside the mount
    (secret,) = [
        d
        for d in docs
        if d["kind"] == "Secret" and d["metadata"]["name"] == f"{FULLNAME}-web-config"
    ]
    cfg = parse_web_config(secret["stringData"]["web-config.yml"], Path(WEB_DIR) / "web-config.yml")
    assert cfg.tls is not None
    assert cfg.tls.cert_file == Path(WEB_DIR) / "tls.crt"
    assert cfg.tls.key_file == Path(WEB_DIR) / "tls.key"
    assert list(cfg.basic_auth_users) == ["prometheus"]
    # the config change rolls the pod
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    assert "checksum/web-config" in deployment["spec"]["template"]["metadata"]["annotations"]
    builtin = [d for d in docs if d["kind"] not in ("ServiceMonitor", "PrometheusRule")]
    proc = kubernetes_validate(builtin, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_required_client_certificates_switch_probes_to_tcp() -> None:
    docs = render(
        "webConfig.config.tls_server_config.client_auth_type=RequireAndVerifyClientCert",
        "webConfig.config.tls_server_config.client_ca_file=ca.crt",
    )
    c = container(docs)
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["tcpSocket"] == {"port": "http"}
        assert "httpGet" not in c[probe]
    assert endpoint(docs)["scheme"] == "https"


def test_existing_secret_with_explicit_tls() -> None:
    docs = render(
        "webConfig.enabled=true", "webConfig.existingSecret=my-web-config", "webConfig.tls=true",
        values=None,
    )  # fmt: skip
    sources = volumes(docs)["web-config"]["projected"]["sources"]
    assert sources == [{"secret": {"name": "my-web-config"}}]
    assert not [d for d in docs if d["kind"] == "Secret" and "web-config" in d["metadata"]["name"]]
    assert container(docs)["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert endpoint(docs)["scheme"] == "https"
    # without tls=true the chart cannot know: plain probes
    docs = render("webConfig.enabled=true", "webConfig.existingSecret=my-web-config", values=None)
    assert "scheme" not in container(docs)["livenessProbe"]["httpGet"]


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        (("webConfig.enabled=true",), "set webConfig.existingSecret"),
        (("webConfig.config.basic_auth_users.prometheus=plain-password",), "basic_auth_users"),
        (("webConfig.tlsSecrets=x",), "tlsSecrets"),
        (("webConfig.config.tls_serverconfig.cert_file=x",), "tls_serverconfig"),
    ],
)
def test_bad_web_config_values_are_refused(sets: tuple[str, ...], needle: str) -> None:
    with pytest.raises(HelmError, match=needle):
        render(*sets, values=VALUES if "enabled" not in sets[0] else None)


# -- the rendered file served by the real HTTP layer -----------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    require_tool("openssl")
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def projected(pki: Pki, tmp_path: Path) -> Iterator[HttpServer]:
    """The chart's projected volume laid out in a directory, served by HttpServer."""
    docs = render()
    (secret,) = [
        d
        for d in docs
        if d["kind"] == "Secret" and d["metadata"]["name"] == f"{FULLNAME}-web-config"
    ]
    text = secret["stringData"]["web-config.yml"]
    data = yaml.safe_load(text)
    data["basic_auth_users"] = {"prometheus": bcrypt_hash("scrape-pass")}
    (tmp_path / "web-config.yml").write_text(yaml.safe_dump(data))
    shutil.copy(pki.server_cert, tmp_path / "tls.crt")  # kubernetes.io/tls keys
    shutil.copy(pki.server_key, tmp_path / "tls.key")
    app = make_app(sample_registry(), lambda: (True, "ready"), "t")
    server = HttpServer(
        "127.0.0.1", 0, app, web_config=load_web_config(tmp_path / "web-config.yml")
    )
    server.start()
    yield server
    server.stop()


def test_kubelet_style_https_probe_and_prometheus_scrape(projected: HttpServer, pki: Pki) -> None:
    # the kubelet's HTTPS probe: no certificate verification, no credentials
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    for path in ("/healthz", "/readyz"):
        conn = http.client.HTTPSConnection("127.0.0.1", projected.port, timeout=5, context=insecure)
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("X-Content-Type-Options") == "nosniff"
        conn.close()
    # Prometheus: verifies the server, sends basic auth
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    token = base64.b64encode(b"prometheus:scrape-pass").decode()
    conn = http.client.HTTPSConnection("127.0.0.1", projected.port, timeout=5, context=ctx)
    conn.request("GET", "/metrics", headers={"Authorization": f"Basic {token}"})
    assert conn.getresponse().status == 200
    conn.close()
    conn = http.client.HTTPSConnection("127.0.0.1", projected.port, timeout=5, context=ctx)
    conn.request("GET", "/metrics")
    assert conn.getresponse().status == 401
    conn.close()


def _docker_healthcheck(port: int) -> int:
    command = healthcheck_command(parse()[-1])
    assert command[0] == "python"
    proc = subprocess.run(
        [sys.executable, *command[1:]],
        env={"GECKO_LISTEN_ADDRESS": f"0.0.0.0:{port}", "PATH": os.environ.get("PATH", "")},
        capture_output=True,
        timeout=30,
        check=False,
    )
    return proc.returncode


def test_docker_healthcheck_works_with_tls_on(projected: HttpServer) -> None:
    assert _docker_healthcheck(projected.port) == 0


def test_docker_healthcheck_still_works_over_plain_http() -> None:
    app = make_app(sample_registry(), lambda: (True, "ready"), "t")
    server = HttpServer("127.0.0.1", 0, app)
    server.start()
    try:
        assert _docker_healthcheck(server.port) == 0
    finally:
        server.stop()
