"""HTTP: /metrics, /healthz, /readyz and a landing page, with optional TLS and basic auth.

Shape (standard library only: ``selectors``, ``ssl``, ``concurrent.futures``):

- one event-loop thread accepts connections, completes TLS handshakes and reads
  request heads without blocking. A connection costs a file descriptor, not a
  thread, until its request head is complete, so slow or idle clients (slowloris,
  keep-alive connections between scrapes) cannot occupy the workers;
- a fixed pool of ``workers`` threads answers complete requests and writes the
  response with a total deadline (``write_timeout``), then hands a keep-alive
  connection back to the loop;
- at most ``max_connections`` connections are open. At the limit, a new connection
  closes the connection that has been idle longest (it would be closed by its idle
  timeout anyway); only when every open connection has a request in progress does
  the new one get ``503 Service Unavailable`` (plain HTTP) or is closed (TLS);
- a request head must arrive within ``header_timeout`` of the connection's accept
  or of its first byte after an idle keep-alive period (TLS handshake included),
  and within ``max_head_bytes``; an idle keep-alive connection is closed after
  ``idle_timeout``.

HTTP/1.1 with keep-alive; GET and HEAD only (405 otherwise); requests with a body
are answered and then closed. No access log (scrapes would flood it).

With a web config file: TLS from ``tls_server_config`` (certificates reloaded when
they change), response headers from ``http_server_config.headers``, a token-bucket
``rate_limit`` (429) and ``basic_auth_users``. Basic auth guards ``/metrics`` and the
landing page; ``/healthz`` and ``/readyz`` stay open (they say only "ok", "ready" or
why not) so that kubelet and Docker health checks need no password; TLS and client
certificates apply to every path.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import email.utils
import gzip
import hashlib
import html
import io
import os
import queue
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from http.client import HTTPException, HTTPMessage, parse_headers
from urllib.parse import parse_qs, urlsplit

import bcrypt
import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from exporter import __version__
from exporter.metrics import ExpositionCache
from exporter.tls import ReloadingContext, allowed_san
from exporter.web_config import RateLimit, WebConfig

log = structlog.get_logger("exporter.server")

ReadyCheck = Callable[[], tuple[bool, str]]

#: paths that basic auth does not guard (health checks carry no password)
OPEN_PATHS = frozenset({"/healthz", "/readyz"})

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

_TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Limits:
    """Bounds that keep slow, idle or numerous clients from exhausting the server."""

    workers: int = 4
    max_connections: int = 128
    header_timeout: float = 10.0
    idle_timeout: float = 120.0
    write_timeout: float = 10.0
    max_head_bytes: int = 16384


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: HTTPMessage
    version: str


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


Handler = Callable[[Request], Response]


def _text(status: int, body: str, *headers: tuple[str, str]) -> Response:
    return Response(status, [("Content-Type", _TEXT), *headers], body.encode())


# -- the application ------------------------------------------------------------------
def make_app(
    registry: CollectorRegistry,
    ready: ReadyCheck,
    target: str,
    cache: ExpositionCache | None = None,
) -> Handler:
    """Routes of the exporter: /metrics, /healthz, /readyz and the landing page."""
    landing = LANDING.format(version=__version__, target=html.escape(target)).encode()

    def metrics(req: Request) -> Response:
        encoder, content_type = choose_encoder(req.headers.get("Accept", ""))
        gz = gzip_accepted(req.headers.get("Accept-Encoding", ""))
        names = req.query.get("name[]")
        if names:
            body = encoder(registry.restricted_registry(names))
            if gz:
                body = gzip.compress(body, compresslevel=6)
        elif cache is not None:  # rendered off the request path: ready bytes
            body = cache.body(content_type, encoder, gz)
        else:
            body = encoder(registry)
            if gz:
                body = gzip.compress(body, compresslevel=6)
        headers = [("Content-Type", content_type)]
        if gz:
            headers.append(("Content-Encoding", "gzip"))
        headers.append(("Vary", "Accept, Accept-Encoding"))
        return Response(200, headers, body)

    def app(req: Request) -> Response:
        if req.method not in ("GET", "HEAD"):
            return _text(405, "method not allowed\n", ("Allow", "GET, HEAD"))
        if req.path == "/metrics":
            return metrics(req)
        if req.path == "/healthz":
            return _text(200, "ok\n")
        if req.path == "/readyz":
            ok, reason = ready()
            return _text(200 if ok else 503, reason + "\n")
        if req.path == "/":
            return Response(200, [("Content-Type", "text/html; charset=utf-8")], landing)
        return _text(404, "not found\n")

    return app


# -- basic auth and rate limit ----------------------------------------------------------
class BasicAuth:
    """bcrypt verification with the toolkit's safeguards.

    A user name that is not configured still costs one bcrypt check (against a
    hash of the same cost), so response times do not reveal which users exist.
    Successful checks are cached under a SHA-256 of user, hash and password, so a
    scrape every 15 s does not pay a bcrypt each time; failures are not cached.
    bcrypt runs one at a time (it is CPU-bound and holds no lock on the GIL's
    behalf for long), so guessing cannot starve the scrape of CPU.
    """

    CACHE_SIZE = 256

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = dict(users)
        cost = max((int(h.split(b"$")[2]) for h in self._users.values()), default=10)
        self._dummy = bcrypt.hashpw(os.urandom(16), bcrypt.gensalt(rounds=cost))
        self._cache: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._cache_lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()

    def verify(self, user: bytes, password: bytes) -> bool:
        try:
            hashed = self._users.get(user.decode("utf-8"))
        except UnicodeDecodeError:
            hashed = None
        known = hashed is not None
        target = hashed if hashed is not None else self._dummy
        key = hashlib.sha256(b"\0".join((user, target, password))).digest()
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return True
        with self._bcrypt_lock:
            try:
                ok = bcrypt.checkpw(password, target)
            except ValueError:  # e.g. longer than bcrypt's 72 bytes: as Go's bcrypt, a failure
                ok = False
        if not (ok and known):
            return False
        with self._cache_lock:
            self._cache[key] = None
            while len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        return True

    def check_header(self, value: str | None) -> bool:
        if not value:
            return False
        scheme, _, encoded = value.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, sep, password = decoded.partition(b":")
        return bool(sep) and self.verify(user, password)


class TokenBucket:
    """exporter-toolkit's ``rate_limit``: one token per interval, at most ``burst``."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = 1.0 / limit.interval_seconds
        self._burst = float(limit.burst)
        self._tokens = float(limit.burst)
        self._clock = clock
        self._last = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False


# -- request parsing and response writing ----------------------------------------------
class _BadRequest(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def parse_head(head: bytes) -> Request:
    """A request head (request line and headers, CRLF CRLF included) as a :class:`Request`."""
    line, _, rest = head.partition(b"\r\n")
    parts = line.decode("latin-1").split(" ")
    if len(parts) != 3:
        raise _BadRequest(400)
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise _BadRequest(505)
    if not method.isalpha() or not target.startswith("/"):
        raise _BadRequest(400)
    try:
        headers = parse_headers(io.BytesIO(rest))
    except HTTPException:
        raise _BadRequest(431) from None
    url = urlsplit(target)
    return Request(method, url.path, parse_qs(url.query), headers, version)


def _keep_alive(req: Request) -> bool:
    tokens = {t.strip().lower() for t in req.headers.get("Connection", "").split(",")}
    if req.version == "HTTP/1.1":
        return "close" not in tokens
    return "keep-alive" in tokens


def _has_body(req: Request) -> bool:
    length = req.headers.get("Content-Length", "0").strip() or "0"
    return "Transfer-Encoding" in req.headers or length != "0"


def render_response(resp: Response, *, head_only: bool, keep_alive: bool) -> bytes:
    reason = HTTPStatus(resp.status).phrase
    lines = [f"HTTP/1.1 {resp.status} {reason}"]
    lines.extend(f"{name}: {value}" for name, value in resp.headers)
    lines.append(f"Content-Length: {len(resp.body)}")
    lines.append(f"Date: {email.utils.formatdate(usegmt=True)}")
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return out if head_only else out + resp.body


def _send_all(sock: socket.socket, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    while view:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("write timeout")
        sock.settimeout(remaining)
        sent = sock.send(view)
        view = view[sent:]


# -- connections and the event loop -----------------------------------------------------
_HANDSHAKE, _HEAD, _IDLE, _BUSY = "handshake", "head", "idle", "busy"


class _Conn:
    __slots__ = ("buf", "deadline", "since", "sock", "state")

    def __init__(self, sock: socket.socket, state: str, deadline: float, now: float) -> None:
        self.sock = sock
        self.state = state
        self.deadline = deadline
        self.since = now
        self.buf = bytearray()


class HttpServer:
    """The exporter's HTTP endpoint: an event-loop thread and a fixed worker pool."""

    def __init__(
        self,
        host: str,
        port: int,
        app: Handler,
        *,
        web_config: WebConfig | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self._app = app
        self._tls = (
            ReloadingContext(web_config.tls)
            if web_config is not None and web_config.tls is not None
            else None
        )
        self._sans = self._tls.cfg.client_allowed_sans if self._tls is not None else None
        self._headers = list(web_config.headers) if web_config is not None else []
        users = web_config.basic_auth_users if web_config is not None else {}
        self._auth = BasicAuth(users) if users else None
        rate = web_config.rate_limit if web_config is not None else None
        self._bucket = TokenBucket(rate) if rate is not None else None
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        dualstack = host == "::" and socket.has_dualstack_ipv6()
        self._listener = socket.create_server(
            (host, port), family=family, backlog=128, dualstack_ipv6=dualstack
        )
        self._listener.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        #: connections back from the workers: (connection, keep it open)
        self._returned: queue.SimpleQueue[tuple[_Conn, bool]] = queue.SimpleQueue()
        self._conns: dict[int, _Conn] = {}
        self._pool = ThreadPoolExecutor(self.limits.workers, thread_name_prefix="gecko-http")
        self._stopping = threading.Event()
        self._accept_paused_until = 0.0
        self._thread = threading.Thread(target=self._loop, name="gecko-http-loop", daemon=True)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def scheme(self) -> str:
        return "https" if self._tls is not None else "http"

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def start(self) -> None:
        self._sel.register(self._listener, selectors.EVENT_READ, "listen")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake()
        if self._thread.is_alive():
            self._thread.join(5)
        self._pool.shutdown(wait=True, cancel_futures=True)
        for conn in list(self._conns.values()):
            self._close(conn)
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()
        self._sel.close()

    # -- loop ---------------------------------------------------------------------------
    def _wake(self) -> None:
        # a full buffer means the loop is awake anyway; closed at stop
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _select_timeout(self, next_sweep: float) -> float | None:
        """Until the next deadline to enforce (``None``: nothing to time, wait for an event).

        An idle exporter's loop sleeps until a scrape, a worker or stop() wakes it.
        """
        deadlines = [c.deadline for c in self._conns.values() if c.state != _BUSY]
        if self._accept_paused_until:
            deadlines.append(self._accept_paused_until)
        if not deadlines:
            return None
        return max(0.0, max(min(deadlines), next_sweep) - time.monotonic())

    def _loop(self) -> None:
        next_sweep = 0.0
        while not self._stopping.is_set():
            try:
                events = self._sel.select(self._select_timeout(next_sweep))
            except OSError:  # pragma: no cover - selector closed under us at stop
                return
            for key, mask in events:
                if key.data == "listen":
                    self._accept()
                elif key.data == "wake":
                    self._drain_wake()
                else:
                    conn: _Conn = key.data
                    self._on_ready(conn, mask)
            now = time.monotonic()
            if now >= next_sweep:
                self._sweep(now)
                next_sweep = now + 0.1

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while True:
            try:
                conn, keep = self._returned.get_nowait()
            except queue.Empty:
                return
            if not keep or self._stopping.is_set():
                self._close(conn)
                continue
            now = time.monotonic()
            conn.state, conn.since = _IDLE, now
            conn.deadline = now + self.limits.idle_timeout
            try:
                self._sel.register(conn.sock, selectors.EVENT_READ, conn)
            except (ValueError, OSError):
                self._close(conn)
                continue
            if conn.buf:  # pipelined request already read
                conn.state, conn.deadline = _HEAD, now + self.limits.header_timeout
                self._dispatch(conn)
            elif isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending():
                self._read(conn)

    def _sweep(self, now: float) -> None:
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            self._sel.register(self._listener, selectors.EVENT_READ, "listen")
        for conn in [c for c in self._conns.values() if c.state != _BUSY and c.deadline <= now]:
            self._close(conn)

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE: pause accepting rather than spin
                log.warning("http_accept_failed", error=exc.strerror or type(exc).__name__)
                self._sel.unregister(self._listener)
                self._accept_paused_until = time.monotonic() + 0.5
                return
            now = time.monotonic()
            if len(self._conns) >= self.limits.max_connections and not self._evict_idle():
                self._refuse(sock)
                continue
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            state = _HEAD
            if self._tls is not None:
                try:
                    sock = self._tls.context().wrap_socket(
                        sock, server_side=True, do_handshake_on_connect=False
                    )
                except (ssl.SSLError, OSError):
                    sock.close()
                    continue
                state = _HANDSHAKE
            conn = _Conn(sock, state, now + self.limits.header_timeout, now)
            self._conns[id(conn)] = conn
            self._sel.register(sock, selectors.EVENT_READ, conn)

    def _evict_idle(self) -> bool:
        """Close the connection waiting longest without a request in progress."""
        candidates = [c for c in self._conns.values() if c.state != _BUSY]
        if not candidates:
            return False
        self._close(min(candidates, key=lambda c: c.since))
        return True

    def _refuse(self, sock: socket.socket) -> None:
        if self._tls is None:
            resp = _text(503, "too many connections\n", ("Retry-After", "1"))
            try:
                sock.setblocking(False)
                sock.send(render_response(resp, head_only=False, keep_alive=False))
            except OSError:
                pass
        sock.close()

    def _close(self, conn: _Conn) -> None:
        self._conns.pop(id(conn), None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._sel.unregister(conn.sock)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _on_ready(self, conn: _Conn, mask: int) -> None:
        del mask
        if conn.state == _HANDSHAKE:
            self._handshake(conn)
        elif conn.state in (_HEAD, _IDLE):
            self._read(conn)

    def _handshake(self, conn: _Conn) -> None:
        sock = conn.sock
        if not isinstance(sock, ssl.SSLSocket):  # pragma: no cover - handshake only with TLS
            return
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._sel.modify(sock, selectors.EVENT_READ, conn)
            return
        except ssl.SSLWantWriteError:
            self._sel.modify(sock, selectors.EVENT_WRITE, conn)
            return
        except (ssl.SSLError, OSError) as exc:
            log.debug("http_tls_handshake_failed", reason=getattr(exc, "reason", None))
            self._close(conn)
            return
        if self._sans is not None and not allowed_san(sock.getpeercert() or {}, self._sans):
            log.debug("http_client_san_rejected")
            self._close(conn)
            return
        conn.state = _HEAD
        self._sel.modify(sock, selectors.EVENT_READ, conn)
        if sock.pending():
            self._read(conn)

    def _read(self, conn: _Conn) -> None:
        sock = conn.sock
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                break
            except ssl.SSLWantWriteError:
                break
            except OSError:
                self._close(conn)
                return
            if not data:
                self._close(conn)
                return
            if conn.state == _IDLE:
                now = time.monotonic()
                conn.state, conn.deadline = _HEAD, now + self.limits.header_timeout
            conn.buf += data
            if len(conn.buf) > self.limits.max_head_bytes + 4 or b"\r\n\r\n" in conn.buf:
                break
            if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                break
        self._dispatch(conn)

    def _dispatch(self, conn: _Conn) -> None:
        while conn.buf[:2] == b"\r\n":  # stray CRLF between requests (RFC 9112 2.2)
            del conn.buf[:2]
        end = conn.buf.find(b"\r\n\r\n")
        if end < 0 and len(conn.buf) <= self.limits.max_head_bytes:
            return
        self._sel.unregister(conn.sock)
        conn.state = _BUSY
        if end < 0 or end + 4 > self.limits.max_head_bytes:
            head = b""  # too large: answered with 431
            conn.buf.clear()
        else:
            head = bytes(conn.buf[: end + 4])
            del conn.buf[: end + 4]
        self._pool.submit(self._serve, conn, head)

    # -- workers --------------------------------------------------------------------------
    def _serve(self, conn: _Conn, head: bytes) -> None:
        keep_alive = False
        try:
            if not head:
                resp, req = _text(431, "request header fields too large\n"), None
            else:
                try:
                    req = parse_head(head)
                except _BadRequest as exc:
                    resp, req = _text(exc.status, HTTPStatus(exc.status).phrase + "\n"), None
                else:
                    resp = self._respond(req)
                    keep_alive = _keep_alive(req) and not _has_body(req)
            resp.headers.extend(self._headers)
            keep_alive = keep_alive and not self._stopping.is_set()
            data = render_response(
                resp, head_only=req is not None and req.method == "HEAD", keep_alive=keep_alive
            )
            _send_all(conn.sock, data, time.monotonic() + self.limits.write_timeout)
        except (OSError, ValueError):  # client gone, write timeout, closed at stop
            keep_alive = False
        if keep_alive:
            try:
                conn.sock.setblocking(False)
            except OSError:
                keep_alive = False
        if not keep_alive:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
            conn.sock.close()
        # only the loop thread touches the connection table
        self._returned.put((conn, keep_alive))
        self._wake()

    def _respond(self, req: Request) -> Response:
        if self._bucket is not None and not self._bucket.take():
            return _text(429, "too many requests\n")
        if (
            self._auth is not None
            and req.path not in OPEN_PATHS
            and not self._auth.check_header(req.headers.get("Authorization"))
        ):
            return _text(
                401,
                "unauthorized\n",
                ("WWW-Authenticate", 'Basic realm="gecko-exporter", charset="UTF-8"'),
            )
        try:
            return self._app(req)
        except Exception as exc:  # noqa: BLE001 - a failing collector: 500, the loop goes on
            # the type only: a traceback's locals could carry query text
            log.error("http_handler_failed", path=req.path, error=type(exc).__name__)  # noqa: TRY400
            return _text(500, "internal server error\n")
