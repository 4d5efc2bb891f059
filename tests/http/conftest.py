"""Fixtures: a test PKI and a factory of real HTTP servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge

from exporter.db.session import Health
from exporter.metrics import ExpositionCache, StoreCollector
from exporter.server import HttpServer, Limits, ReadyCheck, make_app
from exporter.store import ResultStore
from exporter.web_config import load_web_config
from tests.conftest import require_tool
from tests.http.certs import Pki, make_pki

ServeFactory = Callable[..., HttpServer]


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    require_tool("openssl")
    return make_pki(tmp_path_factory.mktemp("pki"))


def sample_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    Gauge("gecko_up", "Database answers.", registry=registry).set(1)
    Gauge("gecko_probe_success", "Probe ok.", ["probe"], registry=registry).labels("server").set(1)
    big = Gauge("gecko_test_padding", "Makes the body worth compressing.", ["i"], registry=registry)
    for i in range(200):
        big.labels(str(i)).set(i)
    return registry


def padding_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    big = Gauge("gecko_test_padding", "Makes the body worth compressing.", ["i"], registry=registry)
    for i in range(200):
        big.labels(str(i)).set(i)
    return registry


def exposition_cache() -> ExpositionCache:
    """The exporter's exposition cache (its own families and the padding), not started:
    a variant is rendered by its first request, then served from memory."""
    health = Health()
    health.reached()
    collector = StoreCollector(ResultStore(), health, up_stale_seconds=60)
    return ExpositionCache(collector.store, collector, [padding_registry()])


@pytest.fixture
def serve() -> Iterator[ServeFactory]:
    """``serve(web_config_text=None, config_dir=None, limits=None, ready=..., cached=False,
    ready_check=None)`` -> started server; ``cached``: /metrics from an exposition cache (the
    exporter's set-up, answered on the event loop once rendered)."""
    started: list[HttpServer] = []

    def factory(
        web_config_text: str | None = None,
        *,
        config_dir: Path | None = None,
        limits: Limits | None = None,
        ready: bool = True,
        host: str = "127.0.0.1",
        cached: bool = False,
        ready_check: ReadyCheck | None = None,
    ) -> HttpServer:
        web = None
        if web_config_text is not None:
            assert config_dir is not None
            path = config_dir / "web-config.yml"
            path.write_text(web_config_text)
            web = load_web_config(path)
        reason = "ready" if ready else "database not reachable"
        app = make_app(
            sample_registry(),
            ready_check or (lambda: (ready, reason)),
            "db.example:5432/gecko",
            exposition_cache() if cached else None,
        )
        server = HttpServer(host, 0, app, web_config=web, limits=limits)
        server.start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
