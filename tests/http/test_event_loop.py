"""The event loop answers what is ready in memory and writes every response without blocking.

A cached /metrics, /healthz and a cached basic-auth success are answered by the
loop thread itself; a slow reader holds neither the loop nor a worker. Real
servers on 127.0.0.1 and real sockets.
"""

from __future__ import annotations

import gzip
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.server import BasicAuth, HttpServer, Limits, Request, Response
from tests.http.certs import Pki, bcrypt_hash
from tests.http.conftest import ServeFactory
from tests.http.test_tls_auth import basic, client_context, counting_checkpw, tls_config
from tests.support.wait import wait_until


def get(
    port: int, path: str = "/metrics", headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def read_responses(
    sock: socket.socket, heads: list[bool]
) -> list[tuple[bytes, dict[str, str], bytes]]:
    """Responses read off ``sock`` until it closes (``heads``: which requests were HEAD)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    out = []
    for head_only in heads:
        head, _, data = data.partition(b"\r\n\r\n")
        status, *fields = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
        length = 0 if head_only else int(headers["content-length"])
        out.append((status.encode(), headers, data[:length]))
        data = data[length:]
    assert data == b""
    return out


class BlockedWorkers:
    """A /readyz check that holds the worker answering it until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> tuple[bool, str]:
        self.entered.set()
        self.release.wait(10)
        return True, "ready"

    def occupy(self, port: int, sockets: list[socket.socket]) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sockets.append(sock)
        sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert self.entered.wait(5), "the worker took /readyz"
        return sock


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def test_cached_scrapes_are_answered_while_every_worker_is_busy(
    serve: ServeFactory, sockets: list[socket.socket]
) -> None:
    blocked = BlockedWorkers()
    server = serve(cached=True, limits=Limits(workers=1), ready_check=blocked)
    try:
        # the first request of each variant renders it (in the worker)
        _, _, plain = get(server.port)
        _, _, packed = get(server.port, headers={"Accept-Encoding": "gzip"})
        readyz = blocked.occupy(server.port, sockets)
        # the only worker is held: the loop answers from memory
        for _ in range(3):
            status, headers, body = get(server.port)
            assert (status, body) == (200, plain)
            assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        status, headers, body = get(server.port, headers={"Accept-Encoding": "gzip"})
        assert (status, headers["content-encoding"], body) == (200, "gzip", packed)
        assert gzip.decompress(body) == plain
        status, headers, body = get(server.port, method="HEAD")
        assert (status, headers["content-length"], body) == (200, str(len(plain)), b"")
        assert get(server.port, "/healthz")[::2] == (200, b"ok\n")
        assert get(server.port, "/nope")[0] == 404
        assert get(server.port, "/metrics", method="POST")[0] == 405
    finally:
        blocked.release.set()
    assert readyz.recv(4096).startswith(b"HTTP/1.1 200 OK")


def test_pipelined_scrapes_on_the_loop_are_answered_in_order(serve: ServeFactory) -> None:
    server = serve(cached=True)
    _, _, plain = get(server.port)
    _, _, packed = get(server.port, headers={"Accept-Encoding": "gzip"})
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
            b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n"
        )
        responses = read_responses(sock, [False, True, False, False])
    assert [r[0] for r in responses] == [b"HTTP/1.1 200 OK"] * 4
    assert [r[1]["connection"] for r in responses] == ["keep-alive"] * 3 + ["close"]
    assert responses[0][2] == plain
    assert responses[1][1]["content-length"] == str(len(plain))
    assert responses[2][2] == b"ok\n"
    assert responses[3][1]["content-encoding"] == "gzip"
    assert responses[3][2] == packed


def test_keep_alive_scrapes_on_the_loop_reuse_one_connection(serve: ServeFactory) -> None:
    server = serve(cached=True)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    bodies = []
    for _ in range(5):
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        assert resp.getheader("Connection") == "keep-alive"
        bodies.append(resp.read())
    assert server.open_connections == 1
    assert len(set(bodies)) == 1
    assert b"gecko_test_padding" in bodies[0]
    conn.close()


def test_pipelined_cached_scrapes_over_tls(serve: ServeFactory, pki: Pki) -> None:
    """Several requests in one TLS record: the loop answers what TLS already decrypted."""
    server = serve(tls_config(pki), config_dir=pki.directory, cached=True)
    ctx = client_context(pki)
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=5, context=ctx)
    conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
    packed = conn.getresponse().read()
    conn.request("GET", "/metrics")
    plain = conn.getresponse().read()
    assert gzip.decompress(packed) == plain
    conn.close()
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        sock.sendall(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n" * 3
            + b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        responses = read_responses(sock, [False] * 4)
    assert [r[2] for r in responses] == [packed] * 3 + [plain]


def test_a_slow_reader_holds_up_no_other_scrape(sockets: list[socket.socket]) -> None:
    big = b"x" * (64 << 20)  # far more than the socket buffers hold

    def app(req: Request) -> Response:
        return Response(
            200, [("Content-Type", "text/plain")], big if req.path == "/big" else b"ok\n"
        )

    # one worker and a write deadline far beyond the test: only a write that does not
    # block anything lets the other requests through
    server = HttpServer("127.0.0.1", 0, app, limits=Limits(workers=1, write_timeout=60))
    server.start()
    try:
        stuck = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sockets.append(stuck)
        stuck.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")  # and never read
        assert stuck.recv(64).startswith(b"HTTP/1.1 200 OK")  # the response is under way
        for _ in range(5):
            started = time.monotonic()
            assert get(server.port, "/small")[::2] == (200, b"ok\n")
            assert time.monotonic() - started < 2
        wait_until(  # the others closed; the slow one is still being written to
            lambda: server.open_connections == 1, timeout=5, message="only the slow reader open"
        )
    finally:
        server.stop()


def test_cached_credentials_answer_on_the_loop_and_a_wrong_password_is_still_refused(
    serve: ServeFactory,
    tmp_path: Path,
    sockets: list[socket.socket],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = counting_checkpw(monkeypatch)
    blocked = BlockedWorkers()
    server = serve(
        f"basic_auth_users:\n  a: '{bcrypt_hash('pw')}'\n",
        config_dir=tmp_path,
        cached=True,
        limits=Limits(workers=2),
        ready_check=blocked,
    )
    assert get(server.port, headers=basic("a", "pw"))[0] == 200  # bcrypt, rendered
    assert get(server.port, headers=basic("a", "wrong"))[0] == 401
    assert get(server.port, headers=basic("a", "pw"))[0] == 200
    assert get(server.port, headers=basic("a", "pwx"))[0] == 401
    assert get(server.port, headers=basic("b", "pw"))[0] == 401
    assert get(server.port, headers={"Authorization": "Basic !!!"})[0] == 401
    assert get(server.port)[0] == 401
    assert len(calls) == 4  # one success cached, every failure paid in full
    blocked.occupy(server.port, sockets)
    second = threading.Thread(target=get, args=(server.port, "/readyz"), daemon=True)
    try:  # the other worker is held too: a cached success is answered by the loop
        second.start()
        wait_until(lambda: server.open_connections == 2, timeout=5, message="both workers held")
        assert get(server.port, headers=basic("a", "pw"))[0] == 200
        assert len(calls) == 4
    finally:
        blocked.release.set()
        # answered once released: joined here, so its request ends before the server stops
        # (a thread cut off by the teardown raised into whichever test ran next)
        if second.ident is not None:
            second.join(timeout=10)


def test_a_worker_answer_takes_one_rate_limit_token(serve: ServeFactory, tmp_path: Path) -> None:
    server = serve("rate_limit: {interval: 1h, burst: 3}\n", config_dir=tmp_path, cached=True)
    statuses = [
        get(server.port, path)[0] for path in ("/readyz", "/metrics", "/healthz", "/readyz")
    ]
    assert statuses == [200, 200, 200, 429]


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\nNo-Colon\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/1.1\r\nHost: x\nX-Smuggled: y\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/1.1\r\nHost: x\rX-Smuggled: y\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", b"431"),
        (b"GET /metrics HTTP/2.0\r\nHost: x\r\n\r\n", b"505"),
    ],
)
def test_malformed_heads_are_refused_and_closed(
    serve: ServeFactory, head: bytes, status: bytes
) -> None:
    server = serve(cached=True)
    get(server.port)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(head)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 " + status + b" ")
    assert b"Connection: close\r\n" in data


def test_header_names_are_case_insensitive(serve: ServeFactory) -> None:
    server = serve(cached=True)
    _, _, packed = get(server.port, headers={"accept-encoding": "gzip"})
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nACCEPT-ENCODING: gzip\r\nconnection: CLOSE\r\n\r\n")
        ((status, headers, body),) = read_responses(sock, [False])
    assert status == b"HTTP/1.1 200 OK"
    assert headers["connection"] == "close"
    assert body == packed


def test_bcrypt_is_not_used_by_the_loop_for_unknown_users(monkeypatch: pytest.MonkeyPatch) -> None:
    """check_cached never runs bcrypt: an unknown user or a new password goes to a worker."""
    auth = BasicAuth({"a": bcrypt_hash("pw", cost=4).encode()})
    calls = counting_checkpw(monkeypatch)
    header = basic("a", "pw")["Authorization"]
    assert auth.check_cached(header) is None
    assert auth.check_header(header)
    assert auth.check_cached(header) is True
    assert auth.check_cached(basic("a", "other")["Authorization"]) is None
    assert auth.check_cached(basic("ghost", "pw")["Authorization"]) is None
    assert auth.check_cached("Bearer x") is False
    assert auth.check_cached("") is False
    assert len(calls) == 1
