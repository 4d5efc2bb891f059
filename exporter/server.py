"""HTTP: /metrics, /healthz, /readyz and a landing page, on a threaded WSGI server."""

from __future__ import annotations

import html
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import ThreadingWSGIServer, choose_encoder

from exporter import __version__
from exporter.metrics import ExpositionCache

ReadyCheck = Callable[[], tuple[bool, str]]
StartResponse = Callable[..., Any]

LANDING = """<!doctype html>
<html><head><meta charset="utf-8"><title>gecko-exporter</title></head>
<body><h1>gecko-exporter {version}</h1>
<p>Prometheus exporter for the Gecko Advisor PostgreSQL database ({target}).</p>
<ul>
<li><a href="metrics">/metrics</a> &mdash; sampled metrics</li>
<li><a href="healthz">/healthz</a> &mdash; process alive</li>
<li><a href="readyz">/readyz</a> &mdash; database reachable and samples fresh</li>
</ul></body></html>
"""


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Access logs are not emitted (scrapes every few seconds would flood logs)."""


class _IPv6Server(ThreadingWSGIServer):
    address_family = socket.AF_INET6


def make_wsgi_app(
    registry: CollectorRegistry,
    ready: ReadyCheck,
    target: str,
    cache: ExpositionCache | None = None,
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    landing = LANDING.format(version=__version__, target=html.escape(target)).encode()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b"method not allowed\n"]
        if path == "/metrics":
            encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
            if cache is None:
                body = encoder(registry)
            else:
                body = cache.render(content_type, lambda: encoder(registry))
            start_response("200 OK", [("Content-Type", content_type)])
            return [body]
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok\n"]
        if path == "/readyz":
            ok, reason = ready()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
            return [(reason + "\n").encode()]
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [landing]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found\n"]

    return app


class HttpServer:
    """The exporter's HTTP endpoint in a background thread."""

    def __init__(self, host: str, port: int, app: Callable[..., Iterable[bytes]]) -> None:
        server_class = _IPv6Server if ":" in host else ThreadingWSGIServer
        self._httpd = make_server(host, port, app, server_class, handler_class=_QuietHandler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="gecko-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
