"""Run the real exporter (``python -m exporter run``) as a child process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.wait import free_port, wait_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def fast_probe_env(**intervals: float) -> dict[str, str]:
    """Env vars setting probe intervals (timeouts stay at their defaults unless given)."""
    env: dict[str, str] = {}
    for key, value in intervals.items():
        probe, _, field = key.partition("__")
        env[f"GECKO_PROBES__{probe.upper()}__{(field or 'interval_seconds').upper()}"] = str(value)
    return env


def parse_metrics(text: str) -> Samples:
    """Exposition text -> {(sample name, sorted labels): value}."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


class ExporterProcess:
    """``gecko-exporter run`` on 127.0.0.1 and a free port; stopped on exit."""

    def __init__(
        self,
        dsn: str | None,
        *,
        env: Mapping[str, str] | None = None,
        config: Mapping[str, Any] | None = None,
        port: int | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="gecko-exporter-test-"))
        self.log_path = self.workdir / f"exporter-{self.port}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("GECKO_")}
        full_env.update(
            {
                "GECKO_LISTEN_ADDRESS": f"127.0.0.1:{self.port}",
                "GECKO_LOG_FORMAT": "json",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if dsn is not None:
            full_env["GECKO_DATABASE_URL"] = dsn
        if config is not None:
            cfg = self.workdir / f"config-{self.port}.yaml"
            cfg.write_text(json.dumps(dict(config)))  # JSON is valid YAML
            full_env["GECKO_CONFIG"] = str(cfg)
        full_env.update(env or {})
        self.env = full_env
        self.proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle ------------------------------------------------------------
    def start(self, *, wait_ready: bool = False, timeout: float = 30) -> ExporterProcess:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "run"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until(lambda: self._status("/healthz") == 200, timeout=timeout, message="/healthz")
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        wait_until(lambda: self._status("/readyz") == 200, timeout=timeout, message="/readyz")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise
        return int(self.proc.returncode)

    def __enter__(self) -> ExporterProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        except subprocess.TimeoutExpired:
            pass

    # -- HTTP -----------------------------------------------------------------
    def _status(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return int(err.code)
        except OSError:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"exporter exited: {self.logs_text()[-2000:]}") from None
            return 0

    def get(self, path: str, timeout: float = 5) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as err:
            return int(err.code), err.read().decode()

    def metrics_text(self) -> str:
        status, body = self.get("/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return body

    def metrics(self) -> Samples:
        return parse_metrics(self.metrics_text())

    def value(self, name: str, **labels: str) -> float | None:
        """The value of one sample, or None when it is not exposed."""
        key = (name, tuple(sorted(labels.items())))
        return self.metrics().get(key)

    def wait_value(
        self, name: str, predicate: Any, *, timeout: float, labels: Mapping[str, str] | None = None
    ) -> float:
        def check() -> bool:
            v = self.value(name, **dict(labels or {}))
            return v is not None and bool(predicate(v))

        wait_until(check, timeout=timeout, interval=0.2, message=f"{name} {labels or ''}")
        result = self.value(name, **dict(labels or {}))
        if result is None:  # pragma: no cover - checked just above
            raise AssertionError(name)
        return result

    # -- logs -------------------------------------------------------------------
    def logs_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.logs_text().splitlines():
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(item, dict):
                out.append(item)
        return out

    def wait_event(self, event: str, timeout: float) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            return next((e for e in self.events() if e.get("event") == event), None)

        return wait_until(check, timeout=timeout, interval=0.2, message=f"log event {event}")
