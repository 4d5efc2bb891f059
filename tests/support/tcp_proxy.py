"""A loopback TCP proxy that can play a network partition.

``blackhole()`` makes chosen connections (and, by default, every new one)
silent: their bytes are accepted and discarded in both directions, nothing is
forwarded and nothing is closed, exactly like a middlebox that keeps
acknowledging after it lost its other side. No RST, no FIN, no error: only
deadlines can tell. ``heal()`` forwards new connections again; connections that
were blackholed stay silent (their bytes are lost for good).

Every accepted connection is a :class:`Link` that records the proxy's own port
towards the server (``upstream_port``, what ``pg_stat_activity.client_port``
shows), so a test can partition one particular backend's connection.
"""

from __future__ import annotations

import contextlib
import itertools
import selectors
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from gecko_demo import admin

_CHUNK = 65536


def _tcp_target(dsn: str) -> tuple[str, int]:
    params = admin.dsn_params(dsn)
    host, port = params.get("host", ""), params.get("port", "5432")
    if not host or host.startswith("/") or "," in host or not port.isdigit():
        raise ValueError("the DSN does not name one TCP host and port")
    return host, int(port)


@dataclass
class Link:
    """One client connection through the proxy."""

    id: int
    client: socket.socket
    upstream: socket.socket | None
    #: local port of the proxy's connection to the server (``pg_stat_activity.client_port``)
    upstream_port: int | None
    blackholed: bool = False
    forwarded_bytes: int = 0
    discarded_bytes: int = 0
    threads: list[threading.Thread] = field(default_factory=list)

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.client, self.upstream) if s is not None]


class TcpProxy:
    """``127.0.0.1:<port>`` forwarding to ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._links: list[Link] = []
        self._ids = itertools.count(1)
        self._blackhole_new = False
        self._stop = threading.Event()
        self._acceptor = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self.accepted = 0

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> TcpProxy:
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._acceptor.join(5)
        self._listener.close()
        with self._lock:
            links = list(self._links)
        for link in links:
            for sock in link.sockets():
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for link in links:
            for thread in link.threads:
                thread.join(5)
            for sock in link.sockets():
                sock.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------
    @classmethod
    def for_dsn(cls, dsn: str) -> TcpProxy:
        """A proxy in front of the DSN's host and port (a single TCP host)."""
        host, port = _tcp_target(dsn)
        return cls(host, port)

    def proxied(self, dsn: str) -> str:
        """The DSN (URI or key=value) with its host and port replaced by the proxy's."""
        if _tcp_target(dsn) != self.target:
            raise ValueError("the DSN does not point at the proxy's target")
        return admin.dsn_replace(dsn, host="127.0.0.1", hostaddr=None, port=str(self.port))

    # -- partition -----------------------------------------------------------------
    def links(self) -> list[Link]:
        with self._lock:
            return list(self._links)

    def blackhole(self, which: Callable[[Link], bool] | None = None, *, new: bool = True) -> int:
        """Silence existing connections (all, or those ``which`` selects) and, with ``new``,
        every connection accepted from now on. Returns how many existing ones were silenced."""
        with self._lock:
            self._blackhole_new = self._blackhole_new or new
            chosen = [link for link in self._links if which is None or which(link)]
            for link in chosen:
                link.blackholed = True
        return len(chosen)

    def heal(self) -> None:
        """Forward new connections again (blackholed ones stay silent)."""
        with self._lock:
            self._blackhole_new = False

    # -- plumbing --------------------------------------------------------------------
    def _accept_loop(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ)
        try:
            while not self._stop.is_set():
                if not sel.select(timeout=0.1):
                    continue
                try:
                    client, _ = self._listener.accept()
                except OSError:
                    continue
                self._admit(client)
        finally:
            sel.close()

    def _admit(self, client: socket.socket) -> None:
        with self._lock:
            silent = self._blackhole_new
        self.accepted += 1
        upstream: socket.socket | None = None
        if not silent:
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()  # the server refused: so does the proxy
                return
        link = Link(
            id=next(self._ids),
            client=client,
            upstream=upstream,
            upstream_port=int(upstream.getsockname()[1]) if upstream is not None else None,
            blackholed=silent,
        )
        if upstream is None:
            link.threads.append(self._thread(self._drain, link, client))
        else:
            link.threads.append(self._thread(self._pump, link, client, upstream))
            link.threads.append(self._thread(self._pump, link, upstream, client))
        with self._lock:
            self._links.append(link)
        for thread in link.threads:
            thread.start()

    @staticmethod
    def _thread(target: Callable[..., None], *args: object) -> threading.Thread:
        return threading.Thread(target=target, args=args, daemon=True)

    def _drain(self, link: Link, src: socket.socket) -> None:
        """Read and discard (a connection accepted during the partition)."""
        with contextlib.suppress(OSError):
            while data := src.recv(_CHUNK):
                link.discarded_bytes += len(data)

    def _pump(self, link: Link, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(_CHUNK):
                if link.blackholed:
                    link.discarded_bytes += len(data)
                    continue
                dst.sendall(data)
                link.forwarded_bytes += len(data)
        except OSError:
            return
        if not link.blackholed:  # pass the end of stream on; a partition swallows it
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
