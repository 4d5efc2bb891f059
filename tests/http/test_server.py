"""The HTTP layer over plain HTTP: routes, keep-alive, gzip, name[] and the limits.

Real servers on 127.0.0.1 and real sockets; slow and idle clients are real
connections that the test holds open.
"""

from __future__ import annotations

import gzip
import http.client
import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from exporter.metrics import negotiate
from exporter.server import HttpServer, Limits, Request, Response, make_app
from tests.http.conftest import ServeFactory, sample_registry
from tests.support.wait import wait_until


def get(
    port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def names(body: bytes) -> set[str]:
    return {f.name for f in text_string_to_metric_families(body.decode())}


def test_routes_and_their_semantics(serve: ServeFactory) -> None:
    server = serve()
    status, headers, body = get(server.port, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=")
    assert {"gecko_up", "gecko_probe_success"} <= names(body)
    assert get(server.port, "/healthz")[::2] == (200, b"ok\n")
    assert get(server.port, "/readyz")[::2] == (200, b"ready\n")
    status, headers, body = get(server.port, "/")
    assert status == 200
    assert b"db.example:5432/gecko" in body
    assert headers["content-type"].startswith("text/html")
    assert get(server.port, "/nope")[0] == 404


def test_readyz_is_503_when_not_ready(serve: ServeFactory) -> None:
    server = serve(ready=False)
    assert get(server.port, "/readyz")[::2] == (503, b"database not reachable\n")
    assert get(server.port, "/healthz")[0] == 200


def test_openmetrics_when_asked(serve: ServeFactory) -> None:
    server = serve()
    status, headers, body = get(
        server.port, "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


@pytest.mark.parametrize("cached", [False, True])
def test_openmetrics_content_type_names_the_version_written(
    serve: ServeFactory, cached: bool
) -> None:
    """A scraper asking for another OpenMetrics version is told the one it gets (1.0.0)."""
    server = serve(cached=cached)
    for accept in (
        "application/openmetrics-text;version=2.0.0",
        "application/openmetrics-text; version=1.1.0; escaping=underscores",
    ):
        for _ in range(2):  # rendered, then (cached) from memory
            status, headers, body = get(server.port, "/metrics", {"Accept": accept})
            assert status == 200
            assert headers["content-type"] == (
                "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores"
            )
            assert body.endswith(b"# EOF\n")
    # prometheus_client's default when no version is named
    _, headers, _ = get(server.port, "/metrics", {"Accept": "application/openmetrics-text"})
    assert headers["content-type"] == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    # a version that is not a number is passed over, not a 500
    status, headers, body = get(
        server.port, "/metrics", {"Accept": "application/openmetrics-text;version=x,text/plain"}
    )
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert b"gecko_up" in body


@pytest.mark.parametrize(
    "accept",
    [
        "",
        "*/*",
        "application/openmetrics-text",
        "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3",
        "application/openmetrics-text;version=0.0.1,text/plain;version=1.0.0",
        "application/openmetrics-text; version=1.0.0; escaping=allow-utf-8",
        "application/openmetrics-text;version=2.0.0;escaping=dots",
        "text/plain;version=1.0.0;escaping=values",
        "text/plain;version=1.0.0;escaping=nonsense",
        "text/plain",
    ],
)
def test_negotiation_is_prometheus_clients_with_the_version_written(accept: str) -> None:
    registry = sample_registry()
    encoder, content_type = negotiate(accept)
    theirs, their_type = choose_encoder(accept)
    assert encoder(registry) == theirs(registry)
    # choose_encoder names the OpenMetrics version asked for; 1.0.0 is what it writes
    if their_type.startswith("application/openmetrics-text"):
        their_type = re.sub(r"version=[^;]+", "version=1.0.0", their_type)
    assert content_type == their_type


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
def test_other_methods_are_405(serve: ServeFactory, method: str) -> None:
    server = serve()
    status, headers, _ = get(server.port, "/metrics", method=method)
    assert status == 405
    assert headers["allow"] == "GET, HEAD"


def test_head_has_length_but_no_body(serve: ServeFactory) -> None:
    server = serve()
    _, _, full = get(server.port, "/healthz")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("HEAD", "/healthz")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Length") == str(len(full))
    assert resp.read() == b""
    conn.close()


def test_keep_alive_two_requests_on_one_connection(serve: ServeFactory) -> None:
    server = serve()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/metrics")
    first = conn.getresponse()
    assert first.getheader("Connection") == "keep-alive"
    first.read()
    sock = conn.sock
    local = sock.getsockname()
    conn.request("GET", "/healthz")
    second = conn.getresponse()
    assert second.read() == b"ok\n"
    assert conn.sock is sock
    assert conn.sock.getsockname() == local  # the same TCP connection served both
    conn.close()


def test_connection_close_is_honoured(serve: ServeFactory) -> None:
    server = serve()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close\r\n" in data
    assert data.endswith(b"ok\n")


def test_pipelined_requests_are_answered_in_order(serve: ServeFactory) -> None:
    server = serve()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert data.index(b"ok\n") < data.index(b"ready\n")


def test_gzip_when_asked_and_not_otherwise(serve: ServeFactory) -> None:
    server = serve()
    status, headers, plain = get(server.port, "/metrics")
    assert status == 200
    assert "content-encoding" not in headers
    status, headers, packed = get(server.port, "/metrics", {"Accept-Encoding": "gzip, deflate"})
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert len(packed) < len(plain) / 3
    assert gzip.decompress(packed) == plain
    # identity only: no compression
    _, headers, body = get(server.port, "/metrics", {"Accept-Encoding": "identity"})
    assert "content-encoding" not in headers
    assert body == plain


def test_name_filtering(serve: ServeFactory) -> None:
    server = serve()
    _, _, body = get(server.port, "/metrics?name[]=gecko_up")
    assert names(body) == {"gecko_up"}
    _, _, body = get(server.port, "/metrics?name[]=gecko_up&name[]=gecko_probe_success")
    assert names(body) == {"gecko_up", "gecko_probe_success"}
    _, headers, packed = get(
        server.port, "/metrics?name%5B%5D=gecko_up", {"Accept-Encoding": "gzip"}
    )
    assert headers["content-encoding"] == "gzip"
    assert names(gzip.decompress(packed)) == {"gecko_up"}


def test_oversized_head_is_431(serve: ServeFactory) -> None:
    server = serve(limits=Limits(max_head_bytes=1024))
    status, _, _ = get(server.port, "/metrics", {"X-Big": "a" * 4000})
    assert status == 431


def test_malformed_request_line_is_400(serve: ServeFactory) -> None:
    server = serve()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"NONSENSE\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 400 ")


def test_ipv6_listen_address(serve: ServeFactory) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        server = serve(host="::1")
    except OSError:
        pytest.skip("::1 is not configured")
    conn = http.client.HTTPConnection("::1", server.port, timeout=5)
    conn.request("GET", "/healthz")
    assert conn.getresponse().read() == b"ok\n"
    conn.close()


# -- slow and idle clients -------------------------------------------------------------
@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def _closed_by_server(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_slowloris_does_not_block_scrapes_and_is_cut_off(
    serve: ServeFactory, sockets: list[socket.socket]
) -> None:
    limits = Limits(workers=2, header_timeout=1.5)
    server = serve(limits=limits)
    # more slow clients than workers, each sending its head byte by byte, never finishing
    stop = threading.Event()
    head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
    for _ in range(limits.workers * 3):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sockets.append(sock)

    def drip() -> None:
        for i in range(len(head)):
            for sock in sockets:
                try:
                    sock.send(head[i : i + 1])
                except OSError:
                    pass
            if stop.wait(0.05):
                return

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        # while the slow heads trickle in, scrapes answer at once
        for _ in range(5):
            started = time.monotonic()
            status, _, body = get(server.port, "/metrics")
            assert status == 200
            assert b"gecko_up" in body
            assert time.monotonic() - started < 1.0
        # still sending bytes, yet cut off at the head deadline
        for sock in sockets:
            assert _closed_by_server(sock, limits.header_timeout + 3)
    finally:
        stop.set()
        dripper.join(5)
    assert get(server.port, "/healthz")[0] == 200


def test_idle_connections_past_the_limit_do_not_lock_out_a_scrape(
    serve: ServeFactory, sockets: list[socket.socket]
) -> None:
    limits = Limits(workers=2, max_connections=8, idle_timeout=60, header_timeout=60)
    server = serve(limits=limits)
    sockets.extend(  # up to and far past the limit
        socket.create_connection(("127.0.0.1", server.port), timeout=5)
        for _ in range(limits.max_connections * 3)
    )
    wait_until(
        lambda: server.open_connections == limits.max_connections,
        timeout=5,
        message="server at its connection limit",
    )
    for _ in range(3):
        status, _, body = get(server.port, "/metrics")
        assert status == 200
        assert b"gecko_up" in body
    assert server.open_connections <= limits.max_connections
    # the oldest idle connections were the ones closed
    assert _closed_by_server(sockets[0], 2)


def test_idle_keep_alive_connection_is_closed_after_idle_timeout(serve: ServeFactory) -> None:
    server = serve(limits=Limits(idle_timeout=0.5))
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while not data.endswith(b"ok\n"):
            data += sock.recv(4096)
        started = time.monotonic()
        assert _closed_by_server(sock, 5)
        assert time.monotonic() - started < 3


def test_failing_collector_is_a_500_and_the_server_goes_on(serve: ServeFactory) -> None:
    class Broken(Collector):
        def collect(self) -> Iterator[Metric]:
            raise RuntimeError("boom")

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Broken())
    server = HttpServer("127.0.0.1", 0, make_app(registry, lambda: (True, "ready"), "t"))
    server.start()
    try:
        assert get(server.port, "/metrics")[0] == 500
        assert get(server.port, "/healthz")[0] == 200
    finally:
        server.stop()


def test_a_client_that_never_reads_is_cut_off_at_the_write_timeout(
    sockets: list[socket.socket],
) -> None:
    big = b"x" * (64 << 20)  # far more than the socket buffers hold

    def app(req: Request) -> Response:
        return Response(
            200, [("Content-Type", "text/plain")], big if req.path == "/big" else b"ok\n"
        )

    server = HttpServer("127.0.0.1", 0, app, limits=Limits(workers=1, write_timeout=0.5))
    server.start()
    try:
        stuck = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sockets.append(stuck)
        stuck.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")  # and never read
        # the only worker is freed by the write deadline: the next request is answered
        started = time.monotonic()
        assert get(server.port, "/small")[::2] == (200, b"ok\n")
        assert time.monotonic() - started < 4
        wait_until(lambda: server.open_connections == 0, timeout=5, message="stuck one closed")
    finally:
        server.stop()


def test_when_every_connection_is_busy_a_new_one_gets_503(sockets: list[socket.socket]) -> None:
    release = threading.Event()

    def app(req: Request) -> Response:
        if req.path == "/slow":
            release.wait(10)
        return Response(200, [("Content-Type", "text/plain")], b"done\n")

    server = HttpServer("127.0.0.1", 0, app, limits=Limits(workers=1, max_connections=2))
    server.start()
    try:
        for _ in range(2):  # one in the worker, one queued for it: both have a request in progress
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            sockets.append(sock)
        wait_until(lambda: server.open_connections == 2, timeout=5, message="two busy")
        status, headers, _ = get(server.port, "/healthz")
        assert status == 503
        assert headers["retry-after"] == "1"
        release.set()
        for sock in sockets:
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
        assert get(server.port, "/healthz")[0] == 200
    finally:
        release.set()
        server.stop()
