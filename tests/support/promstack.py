"""Real Prometheus and Alertmanager servers (and a webhook sink) for tests.

Every server listens on 127.0.0.1 on a free port, keeps its files under a
caller-supplied work directory, and is stopped when its ``with`` block ends.
Binaries come from ``$PATH`` (Debian names first: ``prometheus``,
``prometheus-alertmanager``); override with ``GECKO_PROMETHEUS_BIN`` /
``GECKO_ALERTMANAGER_BIN``.

    with PrometheusServer(tmp, ["127.0.0.1:8187"], [rules]) as prom:
        wait_until(lambda: prom.query('up{job="gecko-exporter"} == 1'), timeout=30)
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from tests.support.wait import free_port, wait_until

DEFAULT_JOB = "gecko-exporter"
_STARTUP_ATTEMPTS = 3


class ToolNotFoundError(RuntimeError):
    """A server binary is not installed."""


class ServerError(RuntimeError):
    """A server failed to start, or answered an API call with an error."""


def find_binary(env_var: str, *names: str) -> str | None:
    """Path of the first of ``names`` on ``$PATH`` (``env_var`` overrides)."""
    override = os.environ.get(env_var)
    if override:
        return override if Path(override).exists() else shutil.which(override)
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def prometheus_binary() -> str | None:
    return find_binary("GECKO_PROMETHEUS_BIN", "prometheus")


def alertmanager_binary() -> str | None:
    return find_binary("GECKO_ALERTMANAGER_BIN", "prometheus-alertmanager", "alertmanager")


def _http_json(
    url: str, *, data: bytes | None = None, timeout: float = 5.0, method: str | None = None
) -> Any:
    headers = {"Content-Type": "application/json"} if data is not None else {}
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise ServerError(f"{method or 'GET'} {url}: HTTP {exc.code}: {detail}") from exc
    return json.loads(body) if body else None


class _ServerProcess:
    """A child process with a log file, readiness polling and a clean stop."""

    name = "server"

    def __init__(self, workdir: Path, *, startup_timeout: float = 30.0) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.startup_timeout = startup_timeout
        self.port = 0
        self.log_path = self.workdir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- hooks ------------------------------------------------------------
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Write configuration files (called before every start attempt)."""

    # -- public -----------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def start(self) -> None:
        last_error = ""
        for _attempt in range(_STARTUP_ATTEMPTS):
            self.port = free_port()
            self._prepare()
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    self._command(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self.workdir,
                )
            try:
                wait_until(
                    self._ready_or_dead,
                    timeout=self.startup_timeout,
                    interval=0.05,
                    message=f"{self.name} on {self.url} to become ready",
                )
            except TimeoutError as exc:
                self.stop()
                raise ServerError(f"{self.name} did not become ready:\n{self.log_tail()}") from exc
            if self._proc.poll() is None:
                return
            # Died during startup; most likely the free port was taken meanwhile.
            last_error = self.log_tail()
            self._proc = None
        raise ServerError(f"{self.name} exited during startup:\n{last_error}")

    def _ready_or_dead(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            return True
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class PrometheusServer(_ServerProcess):
    """A Prometheus server scraping ``scrape_targets`` (``host:port``) as one job.

    ``rule_files`` are loaded as given; alerts go to ``alertmanager_url`` when set
    (:meth:`start` returns once Prometheus has discovered it). Firing alerts are
    re-sent every ``alert_resend_delay`` (Prometheus defaults to 1m; tests want less).
    """

    name = "prometheus"

    def __init__(
        self,
        workdir: Path,
        scrape_targets: list[str],
        rule_files: Sequence[Path] = (),
        alertmanager_url: str | None = None,
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
        *,
        job: str = DEFAULT_JOB,
        metrics_path: str = "/metrics",
        scrape_timeout: str | None = None,
        alert_resend_delay: str = "1s",
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
    ) -> None:
        super().__init__(workdir, startup_timeout=startup_timeout)
        binary = prometheus_binary()
        if binary is None:
            raise ToolNotFoundError(
                "prometheus is not installed "
                "(apt-get install prometheus, or set GECKO_PROMETHEUS_BIN)"
            )
        self.binary = binary
        self.scrape_targets = list(scrape_targets)
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.alertmanager_url = alertmanager_url
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.job = job
        self.metrics_path = metrics_path
        self.scrape_timeout = scrape_timeout
        self.alert_resend_delay = alert_resend_delay
        self.extra_args = list(extra_args)
        self.config_path = self.workdir / "prometheus.yml"

    def config(self) -> dict[str, Any]:
        scrape: dict[str, Any] = {
            "job_name": self.job,
            "metrics_path": self.metrics_path,
            "static_configs": [{"targets": self.scrape_targets}],
        }
        if self.scrape_timeout is not None:
            scrape["scrape_timeout"] = self.scrape_timeout
        cfg: dict[str, Any] = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.evaluation_interval,
            },
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [scrape],
        }
        if self.alertmanager_url:
            parsed = urllib.parse.urlsplit(self.alertmanager_url)
            am: dict[str, Any] = {
                "scheme": parsed.scheme or "http",
                "static_configs": [{"targets": [parsed.netloc]}],
                "api_version": "v2",
            }
            if parsed.path.strip("/"):
                am["path_prefix"] = parsed.path
            cfg["alerting"] = {"alertmanagers": [am]}
        return cfg

    def _prepare(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        (self.workdir / "data").mkdir(exist_ok=True)

    def _command(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=info",
            f"--rules.alert.resend-delay={self.alert_resend_delay}",
            *self.extra_args,
        ]

    def start(self) -> None:
        super().start()
        if self.alertmanager_url:
            # The notifier discovers Alertmanagers a few seconds after startup; alerts
            # that fire before that are only re-sent after the resend delay.
            try:
                wait_until(
                    lambda: self.api("alertmanagers")["activeAlertmanagers"],
                    timeout=self.startup_timeout,
                    interval=0.1,
                    message=f"prometheus to discover {self.alertmanager_url}",
                )
            except TimeoutError as exc:
                self.stop()
                raise ServerError(f"alertmanager not discovered:\n{self.log_tail()}") from exc

    # -- HTTP API ---------------------------------------------------------
    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data`` field."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        body = _http_json(f"{self.url}/api/v1/{path}{query}")
        if body.get("status") != "success":
            raise ServerError(f"/api/v1/{path}: {body}")
        return body["data"]

    def query(self, expr: str, time: float | None = None) -> list[dict[str, Any]]:
        """Instant query; the ``result`` list (vector results: ``{metric, value}``)."""
        params = {"query": expr}
        if time is not None:
            params["time"] = f"{time:.3f}"
        data = self.api("query", **params)
        result = data["result"]
        if data["resultType"] != "vector":
            return [{"metric": {}, "value": result}]
        return list(result)

    def alerts(self) -> list[dict[str, Any]]:
        """Active (pending and firing) alerts."""
        return list(self.api("alerts")["alerts"])

    def rule_groups(self) -> list[dict[str, Any]]:
        return list(self.api("rules")["groups"])

    def targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets")["activeTargets"])

    def reload(self) -> None:
        """Rewrite the configuration and ask the server to reload it."""
        self._prepare()
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass


class AlertmanagerServer(_ServerProcess):
    """An Alertmanager with gossip disabled, reading ``config_path``."""

    name = "alertmanager"

    def __init__(
        self,
        workdir: Path,
        config_path: Path,
        *,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
    ) -> None:
        super().__init__(workdir, startup_timeout=startup_timeout)
        binary = alertmanager_binary()
        if binary is None:
            raise ToolNotFoundError(
                "prometheus-alertmanager is not installed "
                "(apt-get install prometheus-alertmanager, or set GECKO_ALERTMANAGER_BIN)"
            )
        self.binary = binary
        self.config_path = Path(config_path).resolve()
        self.extra_args = list(extra_args)

    def _prepare(self) -> None:
        (self.workdir / "data").mkdir(exist_ok=True)

    def _command(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
            "--log.level=info",
            *self.extra_args,
        ]

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts``; ``filters`` become ``filter=name="value"`` matchers."""
        params = [("filter", f'{k}="{v}"') for k, v in filters.items()]
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return list(_http_json(f"{self.url}/api/v2/alerts{query}"))

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """``POST /api/v2/alerts`` (what Prometheus does)."""
        _http_json(f"{self.url}/api/v2/alerts", data=json.dumps(alerts).encode(), method="POST")


@dataclass(frozen=True)
class Delivery:
    """One POST received by :class:`WebhookReceiver`."""

    path: str
    payload: dict[str, Any]
    received_monotonic: float
    received_wall: float
    headers: dict[str, str] = field(default_factory=dict)


class WebhookReceiver:
    """An HTTP server in a thread that records every JSON POST it gets.

    Point Alertmanager ``webhook_configs`` at :meth:`url_for` (one path per receiver).
    """

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self._deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("WebhookReceiver is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_for(self, path: str) -> str:
        return f"{self.url}/{path.lstrip('/')}"

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    payload = json.loads(raw)
                except ValueError:
                    payload = {"_raw": raw.decode(errors="replace")}
                receiver._record(
                    Delivery(
                        path=self.path,
                        payload=payload,
                        received_monotonic=time.monotonic(),
                        received_wall=time.time(),
                        headers=dict(self.headers.items()),
                    )
                )
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler

    def _record(self, delivery: Delivery) -> None:
        with self._lock:
            self._deliveries.append(delivery)

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    @property
    def payloads(self) -> list[dict[str, Any]]:
        return [d.payload for d in self.deliveries]

    def clear(self) -> None:
        with self._lock:
            self._deliveries.clear()

    def wait_for(
        self, predicate: Callable[[Delivery], bool], *, timeout: float, message: str = "webhook"
    ) -> Delivery:
        """The first delivery (received so far or later) matching ``predicate``."""

        def find() -> Delivery | None:
            return next((d for d in self.deliveries if predicate(d)), None)

        return wait_until(find, timeout=timeout, interval=0.05, message=message)

    def start(self) -> None:
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webhook-receiver", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
