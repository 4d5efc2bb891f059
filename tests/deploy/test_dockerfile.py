"""The Dockerfile: hadolint, structure, the healthcheck one-liner, .dockerignore, docs/deploy.md."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.deploy.dockerfile import DOCKERFILE, Stage, healthcheck_command, parse
from tests.deploy.tools import CHART, REPO, hadolint_binary, run
from tests.support.wait import free_port

DOCS = REPO / "docs" / "deploy.md"


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse()


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_hadolint_passes() -> None:
    proc = run([hadolint_binary(), "--config", str(REPO / ".hadolint.yaml"), str(DOCKERFILE)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_config_fails_on_findings(tmp_path: Path) -> None:
    """The config's threshold is strict enough to fail an unpinned base and a root user."""
    bad = tmp_path / "Dockerfile"
    text = DOCKERFILE.read_text(encoding="utf-8")
    bad.write_text(
        re.sub(r"^FROM python:\S+", "FROM python:latest", text, flags=re.M) + "USER root\n"
    )
    proc = run([hadolint_binary(), "--config", str(REPO / ".hadolint.yaml"), str(bad)])
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout
    assert "DL3002" in proc.stdout


def test_multi_stage_on_one_pinned_slim_base(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    assert stages[0].name, "the build stage is named"
    bases = {s.image for s in stages}
    # the runtime reuses the builder's interpreter path through the copied virtualenv
    assert len(bases) == 1, bases
    (base,) = bases
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base), base


def test_runs_as_the_chart_numeric_non_root_user(final: Stage) -> None:
    user = final.last("USER").value
    assert re.fullmatch(r"\d+:\d+", user), f"USER must be numeric uid:gid, got {user!r}"
    uid, gid = (int(part) for part in user.split(":"))
    assert uid != 0
    assert gid != 0
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert values["podSecurityContext"]["runAsUser"] == uid
    assert values["podSecurityContext"]["runAsGroup"] == gid


def test_exec_form_entrypoint_under_tini(final: Stage) -> None:
    entrypoint = final.last("ENTRYPOINT").exec_form()
    assert entrypoint[:2] == ["/usr/bin/tini", "--"]
    assert entrypoint[2] == "gecko-exporter"
    assert final.last("CMD").exec_form() == ["run"]
    installs = " ".join(i.value for i in final.all("RUN"))
    assert re.search(r"apt-get install [^&]*\btini=", installs), "tini comes from Debian, pinned"


def test_port_is_exposed_and_matches_listen_address_and_chart(final: Stage) -> None:
    exposed = {int(p.split("/")[0]) for i in final.all("EXPOSE") for p in i.value.split()}
    env = " ".join(i.value for i in final.all("ENV"))
    match = re.search(r"GECKO_LISTEN_ADDRESS=\S*:(\d+)", env)
    assert match, "the image sets GECKO_LISTEN_ADDRESS"
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert exposed == {int(match.group(1))} == {values["containerPort"]} == {8187}


def test_final_stage_has_no_build_tools_or_caches(stages: list[Stage], final: Stage) -> None:
    for run_ in final.all("RUN"):
        if "apt-get install" in run_.value:
            assert "--no-install-recommends" in run_.value
            assert "rm -rf /var/lib/apt/lists/*" in run_.value, (
                "apt lists removed in the same layer"
            )
        assert not re.search(r"\b(gcc|g\+\+|make|build-essential|-dev\b)", run_.value), run_.value
        assert "pip install" not in run_.value, "the runtime stage installs no Python packages"
    for stage in stages:
        for run_ in stage.all("RUN"):
            if "pip install" in run_.value:
                assert "--no-cache-dir" in run_.value
    copies = [i.value for i in final.all("COPY")]
    assert copies == [f"--from={stages[0].name} /opt/venv /opt/venv"], copies


def test_pip_install_line_is_the_documented_one(stages: list[Stage]) -> None:
    installs = [i.value for s in stages for i in s.all("RUN") if "pip install" in i.value]
    assert len(installs) == 1, installs
    assert f"\n   {installs[0]}\n" in DOCS.read_text(encoding="utf-8"), (
        f"docs/deploy.md must show the Dockerfile's install step verbatim: {installs[0]}"
    )


# ---- .dockerignore -------------------------------------------------------------------------


def _dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.removeprefix("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        rules.append((negate, re.compile(regex)))
    return rules


def _ignored(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for negate, regex in _dockerignore_rules():
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            verdict = not negate
    return verdict


def _copied_sources(stages: list[Stage]) -> list[str]:
    return [
        src
        for stage in stages
        for i in stage.all("COPY")
        if not i.value.startswith("--from")
        for src in i.value.split()[:-1]
    ]


def test_copied_sources_exist(stages: list[Stage]) -> None:
    sources = _copied_sources(stages)
    assert sources, "the builder copies the package sources"
    for src in sources:
        assert (REPO / src).exists(), f"the Dockerfile copies {src}, which is not in the repo"


def test_dockerignore_sends_sources_only(stages: list[Stage]) -> None:
    sources = _copied_sources(stages)
    for src in sources:
        for path in [
            src.rstrip("/"),
            *(
                str(p.relative_to(REPO))
                for p in (REPO / src).rglob("*.py")
                if "__pycache__" not in p.parts
            ),
        ]:
            assert not _ignored(path), f"{path} is needed by the build but ignored"
    for path in [
        ".git/HEAD",
        "tests/deploy/test_dockerfile.py",
        "venv/bin/python",
        ".venv/x",
        "helm/gecko-exporter/values.yaml",
        "tools/bin/helm",
        "exporter/__pycache__/x.pyc",
        ".ci/run",
    ]:
        assert _ignored(path), f"{path} should not be in the build context"


# ---- HEALTHCHECK -----------------------------------------------------------------------------


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path == "/healthz" else 404
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"ok\n" if code == 200 else b"no\n")

    def log_message(self, format: str, *args: object) -> None:
        del format, args


@pytest.fixture
def health_server() -> Iterator[tuple[ThreadingHTTPServer, type[_Health]]]:
    handler = type("Handler", (_Health,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _run_healthcheck(final: Stage, listen: str) -> int:
    command = healthcheck_command(final)
    assert command[0] == "python", "slim images have no curl: the check is a python one-liner"
    proc = subprocess.run(
        [sys.executable, *command[1:]],
        env={"GECKO_LISTEN_ADDRESS": listen, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=30,
        check=False,
    )
    return proc.returncode


def test_healthcheck_passes_on_healthz_200(
    final: Stage, health_server: tuple[ThreadingHTTPServer, type[_Health]]
) -> None:
    server, _ = health_server
    assert _run_healthcheck(final, f"0.0.0.0:{server.server_address[1]}") == 0


def test_healthcheck_fails_on_healthz_error(
    final: Stage, health_server: tuple[ThreadingHTTPServer, type[_Health]]
) -> None:
    server, handler = health_server
    handler.status = 503
    assert _run_healthcheck(final, f"0.0.0.0:{server.server_address[1]}") != 0


def test_healthcheck_fails_when_nothing_listens(final: Stage) -> None:
    assert _run_healthcheck(final, f"127.0.0.1:{free_port()}") != 0
