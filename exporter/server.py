"""HTTP: /metrics, /healthz, /readyz and a landing page, with optional TLS and basic auth.

Shape (standard library only: ``selectors``, ``ssl``, ``concurrent.futures``):

- one event-loop thread accepts connections, completes TLS handshakes, reads
  request heads and writes responses, all without blocking. A connection costs a
  file descriptor, not a thread, so slow or idle clients (slowloris, keep-alive
  connections between scrapes, a scraper that reads slowly) cannot occupy a thread;
- the loop answers what is ready in memory itself (a ``/metrics`` rendered by the
  exposition cache, ``/healthz``, errors, basic auth whose success is cached): a
  scrape is one ``recv``, a short parse and one ``sendmsg``, with no hand-off
  between threads. A fixed pool of ``workers`` threads answers the rest (a first
  rendering, ``name[]`` filters, ``/readyz``, a bcrypt check) and hands the
  response back to the loop to write;
- a response is written within ``write_timeout`` of its start, or the connection
  is closed;
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
import os
import queue
import re
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import gzip_accepted
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.metrics import ExpositionCache, negotiate
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
_VARY = ("Vary", "Accept, Accept-Encoding")


@dataclass(frozen=True)
class Limits:
    """Bounds that keep slow, idle or numerous clients from exhausting the server."""

    workers: int = 4
    max_connections: int = 128
    header_timeout: float = 10.0
    idle_timeout: float = 120.0
    write_timeout: float = 10.0
    max_head_bytes: int = 16384


class Headers:
    """A request's header fields by case-insensitive name (the first of repeated ones)."""

    __slots__ = ("_fields",)

    def __init__(self, fields: Mapping[str, str]) -> None:
        self._fields = {name.lower(): value for name, value in fields.items()}

    def get(self, name: str, default: str = "") -> str:
        return self._fields.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Headers
    version: str


@dataclass(slots=True)
class Response:
    """A response; handlers may return shared instances, so the server never changes one."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


Handler = Callable[[Request], Response]


def _text(status: int, body: str, *headers: tuple[str, str]) -> Response:
    return Response(status, [("Content-Type", _TEXT), *headers], body.encode())


# -- the application ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Negotiated:
    """The exposition variant an ``Accept`` and ``Accept-Encoding`` pair asks for."""

    encoder: Callable[[Collector], bytes]
    content_type: str
    gz: bool
    headers: list[tuple[str, str]]


class Routes:
    """The exporter's routes: /metrics, /healthz, /readyz and the landing page.

    :meth:`quick` answers from memory what is ready there (the server's event loop
    calls it); calling the instance answers anything (in a worker thread).
    """

    #: distinct Accept / Accept-Encoding pairs remembered (scrapers send a handful)
    NEGOTIATED = 64

    def __init__(
        self,
        registry: CollectorRegistry,
        ready: ReadyCheck,
        target: str,
        cache: ExpositionCache | None = None,
    ) -> None:
        self._registry = registry
        self._ready = ready
        self._cache = cache
        landing = LANDING.format(version=__version__, target=html.escape(target)).encode()
        self._landing = Response(200, [("Content-Type", "text/html; charset=utf-8")], landing)
        self._healthz = _text(200, "ok\n")
        self._not_found = _text(404, "not found\n")
        self._not_allowed = _text(405, "method not allowed\n", ("Allow", "GET, HEAD"))
        self._negotiated: dict[tuple[str, str], _Negotiated] = {}

    def _negotiate(self, req: Request) -> _Negotiated:
        key = (req.headers.get("Accept"), req.headers.get("Accept-Encoding"))
        found = self._negotiated.get(key)
        if found is None:
            encoder, content_type = negotiate(key[0])
            gz = gzip_accepted(key[1])
            headers = [("Content-Type", content_type)]
            if gz:
                headers.append(("Content-Encoding", "gzip"))
            headers.append(_VARY)
            found = _Negotiated(encoder, content_type, gz, headers)
            if len(self._negotiated) >= self.NEGOTIATED:
                self._negotiated.clear()
            self._negotiated[key] = found
        return found

    def quick(self, req: Request) -> Response | None:
        """The response if it is ready in memory; ``None``: call the instance (may block)."""
        if req.method not in ("GET", "HEAD"):
            return self._not_allowed
        path = req.path
        if path == "/metrics":
            if req.query or self._cache is None:
                return None
            variant = self._negotiate(req)
            body = self._cache.ready(variant.content_type, variant.gz)
            return None if body is None else Response(200, variant.headers, body)
        if path == "/healthz":
            return self._healthz
        if path == "/":
            return self._landing
        if path == "/readyz":
            return None  # asks the database health and the store: a worker's job
        return self._not_found

    def __call__(self, req: Request) -> Response:
        if req.method not in ("GET", "HEAD"):
            return self._not_allowed
        if req.path == "/metrics":
            return self._metrics(req)
        if req.path == "/readyz":
            ok, reason = self._ready()
            return _text(200 if ok else 503, reason + "\n")
        quick = self.quick(req)
        return quick if quick is not None else self._not_found

    def _metrics(self, req: Request) -> Response:
        variant = self._negotiate(req)
        names = req.query.get("name[]")
        if self._cache is not None and not names:  # rendered off the request path
            body = self._cache.body(variant.content_type, variant.encoder, variant.gz)
            return Response(200, variant.headers, body)
        body = variant.encoder(
            self._registry.restricted_registry(names) if names else self._registry
        )
        if variant.gz:
            body = gzip.compress(body, compresslevel=6)
        return Response(200, variant.headers, body)


def make_app(
    registry: CollectorRegistry,
    ready: ReadyCheck,
    target: str,
    cache: ExpositionCache | None = None,
) -> Routes:
    """Routes of the exporter: /metrics, /healthz, /readyz and the landing page."""
    return Routes(registry, ready, target, cache)


# -- basic auth and rate limit ----------------------------------------------------------
def _credentials(value: str) -> tuple[bytes, bytes] | None:
    """User and password of a ``Basic`` Authorization header (``None``: not one)."""
    scheme, _, encoded = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else None


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
        import bcrypt  # noqa: PLC0415 - loaded only when basic auth users are configured

        self._bcrypt = bcrypt
        self._users = dict(users)
        cost = max((int(h.split(b"$")[2]) for h in self._users.values()), default=10)
        self._dummy = bcrypt.hashpw(os.urandom(16), bcrypt.gensalt(rounds=cost))
        self._cache: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._cache_lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()

    def _hash(self, user: bytes) -> bytes | None:
        try:
            return self._users.get(user.decode("utf-8"))
        except UnicodeDecodeError:
            return None

    def _cached(self, key: bytes) -> bool:
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return True
        return False

    def verify(self, user: bytes, password: bytes) -> bool:
        hashed = self._hash(user)
        target = hashed if hashed is not None else self._dummy
        key = hashlib.sha256(b"\0".join((user, target, password))).digest()
        if self._cached(key):
            return True
        with self._bcrypt_lock:
            try:
                ok = self._bcrypt.checkpw(password, target)
            except ValueError:  # e.g. longer than bcrypt's 72 bytes: as Go's bcrypt, a failure
                ok = False
        if not (ok and hashed is not None):
            return False
        with self._cache_lock:
            self._cache[key] = None
            while len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        return True

    def check_header(self, value: str | None) -> bool:
        credentials = _credentials(value) if value else None
        return credentials is not None and self.verify(*credentials)

    def check_cached(self, value: str) -> bool | None:
        """Without bcrypt: ``True`` for a cached success, ``False`` for no Basic
        credentials at all, ``None`` when only :meth:`check_header` can tell."""
        credentials = _credentials(value) if value else None
        if credentials is None:
            return False
        user, password = credentials
        hashed = self._hash(user)
        if hashed is None:
            return None  # an unknown user costs a bcrypt like any other
        return (
            True
            if self._cached(hashlib.sha256(b"\0".join((user, hashed, password))).digest())
            else None
        )


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


# -- request parsing and response heads --------------------------------------------------
class _BadRequest(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


#: header fields in one request (http.client's limit)
MAX_FIELDS = 100
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def parse_head(head: bytes) -> Request:
    """A request head (request line and header fields, ending in CRLF CRLF) as a :class:`Request`.

    Strict where it matters for smuggling: a bare CR or LF, a field without a colon,
    a field name that is not a token (whitespace before the colon) or a folded line
    is a 400; more than :data:`MAX_FIELDS` fields a 431.
    """
    text = head.decode("latin-1")
    lines = text.split("\r\n")
    if lines[-2:] != ["", ""]:
        raise _BadRequest(400)
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise _BadRequest(400)
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise _BadRequest(505)
    if not method.isalpha() or not target.startswith("/"):
        raise _BadRequest(400)
    if "\r" in text.replace("\r\n", "") or text.count("\n") != text.count("\r\n"):
        raise _BadRequest(400)
    if len(lines) - 3 > MAX_FIELDS:
        raise _BadRequest(431)
    fields: dict[str, str] = {}
    for line in lines[1:-2]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            raise _BadRequest(400)
        fields.setdefault(name.lower(), value.strip(" \t"))
    if "?" in target or "#" in target:
        url = urlsplit(target)
        path, query = url.path, parse_qs(url.query)
    else:
        path, query = target, {}
    headers = Headers.__new__(Headers)
    headers._fields = fields  # already lower-case
    return Request(method, path, query, headers, version)


def _keep_alive(req: Request) -> bool:
    value = req.headers.get("Connection")
    if not value:
        return req.version == "HTTP/1.1"
    tokens = {t.strip().lower() for t in value.split(",")}
    if req.version == "HTTP/1.1":
        return "close" not in tokens
    return "keep-alive" in tokens


def _has_body(req: Request) -> bool:
    length = req.headers.get("Content-Length", "0").strip() or "0"
    return "Transfer-Encoding" in req.headers or length != "0"


_REASONS = {s.value: s.phrase for s in HTTPStatus}


class _Date:
    """The ``Date`` header value, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def __call__(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._value = email.utils.formatdate(now, usegmt=True)
            self._second = now
        return self._value


_date = _Date()


def render_head(resp: Response, *, keep_alive: bool, extra: str = "") -> bytes:
    """Status line and header fields of ``resp`` (``extra``: configured fields, CRLF-terminated)."""
    fields = "".join([f"{name}: {value}\r\n" for name, value in resp.headers])
    connection = "keep-alive" if keep_alive else "close"
    return (
        f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, '')}\r\n{fields}{extra}"
        f"Content-Length: {len(resp.body)}\r\nDate: {_date()}\r\nConnection: {connection}\r\n\r\n"
    ).encode("latin-1")


# -- connections and the event loop -----------------------------------------------------
_HANDSHAKE, _HEAD, _IDLE, _BUSY, _WRITE, _CLOSED = (
    "handshake", "head", "idle", "busy", "write", "closed"
)  # fmt: skip
_R, _W = selectors.EVENT_READ, selectors.EVENT_WRITE


class _Conn:
    __slots__ = ("buf", "deadline", "keep", "mask", "out", "since", "sock", "state", "tls")

    def __init__(self, sock: socket.socket, state: str, deadline: float, now: float) -> None:
        self.sock = sock
        self.tls = isinstance(sock, ssl.SSLSocket)
        self.state = state
        self.deadline = deadline
        self.since = now
        self.buf = bytearray()
        #: what the selector watches for (0: not registered)
        self.mask = 0
        #: the response still to write, and whether the connection stays open after it
        self.out: list[memoryview] = []
        self.keep = False


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
        self._quick = app.quick if isinstance(app, Routes) else None
        self._tls = (
            ReloadingContext(web_config.tls)
            if web_config is not None and web_config.tls is not None
            else None
        )
        self._sans = self._tls.cfg.client_allowed_sans if self._tls is not None else None
        headers = list(web_config.headers) if web_config is not None else []
        self._extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
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
        #: responses from the workers: (connection, head and body, keep it open)
        self._returned: queue.SimpleQueue[tuple[_Conn, list[bytes], bool]] = queue.SimpleQueue()
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
        self._sel.register(self._listener, _R, "listen")
        self._sel.register(self._wake_r, _R, "wake")
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
            for key, _mask in events:
                data = key.data
                if data == "listen":
                    self._accept()
                elif data == "wake":
                    self._drain_wake()
                elif data.state == _WRITE:
                    if self._flush(data):
                        self._continue(data)
                elif data.state == _HANDSHAKE:
                    self._handshake(data)
                elif data.state in (_HEAD, _IDLE):
                    self._read(data)
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
                conn, data, keep = self._returned.get_nowait()
            except queue.Empty:
                return
            if conn.state == _BUSY and self._send(conn, data, keep):
                self._continue(conn)

    def _sweep(self, now: float) -> None:
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            self._sel.register(self._listener, _R, "listen")
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
            self._watch(conn, _R)

    def _evict_idle(self) -> bool:
        """Close the connection waiting longest without a request in progress."""
        candidates = [c for c in self._conns.values() if c.state not in (_BUSY, _WRITE)]
        if not candidates:
            return False
        self._close(min(candidates, key=lambda c: c.since))
        return True

    def _refuse(self, sock: socket.socket) -> None:
        if self._tls is None:
            resp = _text(503, "too many connections\n", ("Retry-After", "1"))
            try:
                sock.setblocking(False)
                sock.send(render_head(resp, keep_alive=False) + resp.body)
            except OSError:
                pass
        sock.close()

    def _watch(self, conn: _Conn, mask: int) -> None:
        """Have the selector watch ``conn`` for ``mask`` (0: not at all)."""
        if mask == conn.mask:
            return
        try:
            if not conn.mask:
                self._sel.register(conn.sock, mask, conn)
            elif not mask:
                self._sel.unregister(conn.sock)
            else:
                self._sel.modify(conn.sock, mask, conn)
        except (KeyError, ValueError, OSError):
            conn.mask = 0
            self._close(conn)
            return
        conn.mask = mask

    def _close(self, conn: _Conn, *, shutdown: bool = False) -> None:
        self._conns.pop(id(conn), None)
        conn.state = _CLOSED
        if conn.mask:
            conn.mask = 0
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._sel.unregister(conn.sock)
        if shutdown:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _handshake(self, conn: _Conn) -> None:
        sock = conn.sock
        if not isinstance(sock, ssl.SSLSocket):  # pragma: no cover - handshake only with TLS
            return
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(conn, _R)
            return
        except ssl.SSLWantWriteError:
            self._watch(conn, _W)
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
        self._watch(conn, _R)
        if sock.pending():
            self._read(conn)

    # -- reading and answering ---------------------------------------------------------
    def _read(self, conn: _Conn) -> None:
        """Read what arrived, answer the complete heads; TLS may hold more decrypted bytes."""
        while self._receive(conn):
            self._dispatch(conn)
            if not (conn.state in (_HEAD, _IDLE) and _pending(conn.sock)):
                return

    def _receive(self, conn: _Conn) -> bool:
        """Append what can be read now to the buffer; ``False``: nothing (or closed)."""
        sock = conn.sock
        got = False
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return got
            except OSError:
                self._close(conn)
                return False
            if not data:
                self._close(conn)
                return False
            got = True
            if conn.state == _IDLE:
                conn.state, conn.deadline = _HEAD, time.monotonic() + self.limits.header_timeout
            buf = conn.buf
            buf += data
            if len(buf) > self.limits.max_head_bytes + 4 or b"\r\n\r\n" in buf:
                return True
            if not _pending(sock):
                return True

    def _dispatch(self, conn: _Conn) -> None:
        """Answer the complete request heads in the buffer, in order (pipelining)."""
        limit = self.limits.max_head_bytes
        while True:
            buf = conn.buf
            while buf[:2] == b"\r\n":  # stray CRLF between requests (RFC 9112 2.2)
                del buf[:2]
            end = buf.find(b"\r\n\r\n")
            if end < 0 and len(buf) <= limit:
                if buf and conn.state == _IDLE:
                    conn.state = _HEAD
                    conn.deadline = time.monotonic() + self.limits.header_timeout
                return
            if end < 0 or end + 4 > limit:
                buf.clear()
                resp = _text(431, "request header fields too large\n")
                self._send(conn, self._encode(resp, head_only=False, keep_alive=False), False)
                return
            head = bytes(buf[: end + 4])
            del buf[: end + 4]
            if not self._answer(conn, head):
                return

    def _answer(self, conn: _Conn, head: bytes) -> bool:
        """Answer one request; ``True`` when it is written and the connection open and idle."""
        try:
            req = parse_head(head)
        except _BadRequest as exc:
            bad = _text(exc.status, HTTPStatus(exc.status).phrase + "\n")
            return self._send(conn, self._encode(bad, head_only=False, keep_alive=False), False)
        keep = _keep_alive(req) and not _has_body(req)
        try:
            resp = self._front(req)
        except Exception as exc:  # noqa: BLE001 - a failing handler: 500, the loop goes on
            log.error("http_handler_failed", path=req.path, error=type(exc).__name__)  # noqa: TRY400
            resp = _text(500, "internal server error\n")
        if resp is None:  # may block: a worker answers, the loop writes its response
            self._watch(conn, 0)
            if conn.state == _CLOSED:
                return False
            conn.state = _BUSY
            self._pool.submit(self._work, conn, req, keep)
            return False
        keep = keep and not self._stopping.is_set()
        return self._send(conn, self._encode(resp, req.method == "HEAD", keep), keep)

    def _front(self, req: Request) -> Response | None:
        """What the loop can answer without blocking; ``None``: a worker's job.

        The rate limit's token is taken here, once per request.
        """
        if self._bucket is not None and not self._bucket.take():
            return _text(429, "too many requests\n")
        if self._auth is not None and req.path not in OPEN_PATHS:
            known = self._auth.check_cached(req.headers.get("Authorization"))
            if known is None:
                return None  # bcrypt: in a worker
            if not known:
                return _unauthorized()
        return self._quick(req) if self._quick is not None else None

    def _encode(self, resp: Response, head_only: bool, keep_alive: bool) -> list[bytes]:
        head = render_head(resp, keep_alive=keep_alive, extra=self._extra)
        return [head] if head_only or not resp.body else [head, resp.body]

    def _send(self, conn: _Conn, data: list[bytes], keep: bool) -> bool:
        """Start writing a response; ``True`` when it is written and the connection idle again."""
        conn.out = [memoryview(b) for b in data]
        conn.keep = keep
        conn.state = _WRITE
        conn.deadline = time.monotonic() + self.limits.write_timeout
        return self._flush(conn)

    def _flush(self, conn: _Conn) -> bool:
        """Write on; ``True`` when the response is out and the connection open and idle."""
        sock, out = conn.sock, conn.out
        try:
            while out:
                # SSLSocket has no sendmsg
                sent = sock.send(out[0]) if conn.tls else sock.sendmsg(out)
                while sent:
                    first = out[0]
                    if sent >= len(first):
                        sent -= len(first)
                        del out[0]
                    else:
                        out[0] = first[sent:]
                        sent = 0
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
            self._watch(conn, _W)
            return False
        except ssl.SSLWantReadError:
            self._watch(conn, _R)
            return False
        except (OSError, ValueError):  # client gone
            self._close(conn)
            return False
        if not conn.keep or self._stopping.is_set():
            self._close(conn, shutdown=True)
            return False
        now = time.monotonic()
        conn.state, conn.since, conn.deadline = _IDLE, now, now + self.limits.idle_timeout
        self._watch(conn, _R)
        return conn.state == _IDLE

    def _continue(self, conn: _Conn) -> None:
        """After a response written later than at once: what the client sent meanwhile."""
        if conn.buf:
            self._dispatch(conn)
            if conn.state not in (_HEAD, _IDLE):
                return
        if _pending(conn.sock):
            self._read(conn)

    # -- workers --------------------------------------------------------------------------
    def _work(self, conn: _Conn, req: Request, keep: bool) -> None:
        try:
            resp = self._respond(req)
        except Exception as exc:  # noqa: BLE001 - a failing collector: 500, the loop goes on
            # the type only: a traceback's locals could carry query text
            log.error("http_handler_failed", path=req.path, error=type(exc).__name__)  # noqa: TRY400
            resp = _text(500, "internal server error\n")
        keep = keep and not self._stopping.is_set()
        self._returned.put((conn, self._encode(resp, req.method == "HEAD", keep), keep))
        self._wake()

    def _respond(self, req: Request) -> Response:
        """Basic auth (bcrypt) and the application (the rate limit was applied by the loop)."""
        if (
            self._auth is not None
            and req.path not in OPEN_PATHS
            and not self._auth.check_header(req.headers.get("Authorization"))
        ):
            return _unauthorized()
        return self._app(req)


def _pending(sock: socket.socket) -> bool:
    """Decrypted bytes that TLS holds (the selector cannot see them)."""
    return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0


def _unauthorized() -> Response:
    return _text(
        401,
        "unauthorized\n",
        ("WWW-Authenticate", 'Basic realm="gecko-exporter", charset="UTF-8"'),
    )
