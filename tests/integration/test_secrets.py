"""A password never appears in any output (issue #9 item 4).

Passwords are generated over every printable character and whitespace, written
into the DSN as a URI (percent-encoded, and raw) and as key=value (quoted,
backslash-escaped, and raw), and delivered through ``GECKO_DATABASE_URL``, a
secret file (``GECKO_DATABASE_URL_FILE``) and the YAML config
(``database_url_file`` / ``database_url``).

* In-process (many examples): ``check-config``, the masked settings (what the
  debug event ``settings_loaded`` logs), the target shown on ``/`` and in logs,
  and every error line.
* A real exporter process (a bounded number of examples plus one regression
  example per bullet of the issue): against an unreachable server and against
  a real PostgreSQL with a wrong password for ``gecko_monitor``, at debug log
  level: stdout/stderr, ``/``, ``/metrics``, ``/readyz``, ``/proc/<pid>/cmdline``.

Each password is at least 8 characters with a unique marker, so that finding
it somewhere is never a coincidence.
"""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict

from exporter.db.dsn import describe_target, validate_dsn
from exporter.settings import load_config
from tests.conftest import MONITOR_ROLE, GeckoDatabase
from tests.support.exporter_proc import ExporterProcess
from tests.support.inprocess import environment, run_inprocess
from tests.support.wait import free_port

UNREACHABLE = ("127.0.0.1", 1, "privacy")
FORMS = ("uri-encoded", "uri-raw", "kv-quoted", "kv-escaped", "kv-raw")
#: forms whose text libpq parses back to exactly the password
WELL_FORMED = ("uri-encoded", "kv-quoted", "kv-escaped")
DELIVERIES = ("env", "secret-file", "yaml-file", "yaml-inline")


def make_dsn(form: str, password: str, host: str, port: int, dbname: str, user: str) -> str:
    if form == "uri-encoded":
        return f"postgresql://{user}:{quote(password, safe='')}@{host}:{port}/{dbname}"
    if form == "uri-raw":
        return f"postgresql://{user}:{password}@{host}:{port}/{dbname}"
    base = f"host={host} port={port} dbname={dbname} user={user}"
    if form == "kv-quoted":
        return base + " password='" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if form == "kv-escaped":
        escaped = "".join("\\" + c if c.isspace() or c in "\\'" else c for c in password)
        return f"{base} password={escaped}"
    return f"{base} password={password}"


def needles(password: str, marker: str, form: str) -> set[str]:
    """Every way the password could be rendered: raw, JSON, HTML, repr, URI-encoded."""
    out = {
        password,
        json.dumps(password)[1:-1],
        json.dumps(password, ensure_ascii=False)[1:-1],
        html.escape(password),
        repr(password)[1:-1],
        quote(password, safe=""),
    }
    if form in WELL_FORMED:
        out.add(marker)  # libpq reads exactly the password: no piece of it may show
    return out


def assert_absent(texts: dict[str, str], password: str, marker: str, form: str) -> None:
    for where, text in texts.items():
        for needle in needles(password, marker, form):
            assert needle not in text, f"password ({needle!r}) found in {where}"


@dataclass
class Delivered:
    env: dict[str, str]
    argv: list[str]


def deliver(dsn: str, how: str, workdir: Path) -> Delivered:
    if how == "env":
        return Delivered({"GECKO_DATABASE_URL": dsn}, [])
    secret = workdir / "dsn"
    secret.write_text(dsn, encoding="utf-8")
    if how == "secret-file":
        return Delivered({"GECKO_DATABASE_URL_FILE": str(secret)}, [])
    cfg = workdir / "config.yaml"
    key, value = ("database_url_file", str(secret)) if how == "yaml-file" else ("database_url", dsn)
    cfg.write_text(json.dumps({key: value}), encoding="utf-8")  # JSON is YAML
    return Delivered({"GECKO_CONFIG": str(cfg)}, [])


_alphabet = st.characters(codec="utf-8", exclude_characters="\x00")
_passwords = st.tuples(
    st.text(_alphabet, min_size=0, max_size=12),
    # letters around the random hex: "00000000" alone turns up in float text (0.35000000000000003)
    st.binary(min_size=4, max_size=4).map(lambda b: f"Mk{b.hex()}q"),
    st.text(_alphabet, min_size=0, max_size=12),
)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="gecko-secrets-") as tmp:
        yield Path(tmp)


# -- in-process: many examples -----------------------------------------------------


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(parts=_passwords, form=st.sampled_from(FORMS), how=st.sampled_from(DELIVERIES))
@example(parts=("Sup3r/", "0badf00d", "x"), form="uri-raw", how="env")
@example(parts=("Sup3r?", "0badf00d", "#x"), form="uri-raw", how="secret-file")
@example(parts=("Sup3r ", "0badf00d", " tail"), form="kv-raw", how="yaml-inline")
@example(parts=("a@b", "0badf00d", "/c"), form="uri-raw", how="yaml-file")
def test_password_in_no_inprocess_output(
    parts: tuple[str, str, str], form: str, how: str, workdir: Path
) -> None:
    before, marker, after = parts
    password = f"Pw{before}{marker}{after}Z9"
    dsn = make_dsn(form, password, *UNREACHABLE, "mon")
    delivered = deliver(dsn, how, workdir)
    texts: dict[str, str] = {}
    res = run_inprocess(["check-config", *delivered.argv], delivered.env)
    assert res.code in (0, 2), res
    texts["check-config stdout"] = res.stdout
    texts["check-config stderr"] = res.stderr
    if res.code == 0:
        with environment(delivered.env):
            loaded = load_config()
            effective = loaded.dsn()
        texts["settings_loaded"] = json.dumps(loaded.masked())
        texts["repr"] = repr(loaded)
        texts["target"] = describe_target(effective)
    assert_absent(texts, password, marker, form)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u:Sup3r0badf00d/x@127.0.0.1:1/db",  # '/': libpq reads Sup3r as the port
        "postgresql://u:Sup3r0badf00d?x@127.0.0.1:1/db",  # raw ?
        "postgresql://u:Sup3r0badf00d#x@127.0.0.1:1/db",  # raw #
        "postgresql://u@127.0.0.1:1/db?pass%77ord=Sup3r0badf00d",  # percent-encoded key
        "host=127.0.0.1 port=1 password=Sup3r0badf00d and more0badf00d",  # unquoted space
    ],
)
def test_issue_reproductions_inprocess(dsn: str) -> None:
    res = run_inprocess(["check-config"], {"GECKO_DATABASE_URL": dsn})
    assert res.code in (0, 2)
    assert "0badf00d" not in res.stdout + res.stderr
    assert "Sup3r" not in res.stdout + res.stderr


# -- a real exporter process: bounded --------------------------------------------------


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def exporter_outputs(delivered: Delivered, *, expect_event: str) -> dict[str, str]:
    """Run the exporter at debug level until ``expect_event``; every output it made."""
    env = {**delivered.env, "GECKO_LOG_LEVEL": "debug"}
    exporter = ExporterProcess(None, env=env)
    texts: dict[str, str] = {}
    try:
        exporter.start(timeout=30)
        assert exporter.proc is not None
        texts["cmdline"] = _cmdline(exporter.proc.pid)
        exporter.wait_event(expect_event, timeout=30)
        for path in ("/", "/metrics", "/readyz"):
            texts[path] = exporter.get(path)[1]
    finally:
        exporter.stop()
    texts["log"] = exporter.logs_text()
    assert "settings_loaded" in texts["log"]
    return texts


def rejected_outputs(delivered: Delivered) -> dict[str, str]:
    """``run`` and ``check-config`` with a DSN rejected at start: exit 2, one line each."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("GECKO_")}
    env = {**base, **delivered.env, "GECKO_LISTEN_ADDRESS": f"127.0.0.1:{free_port()}"}
    texts = {}
    for command in ("run", "check-config"):
        res = subprocess.run([sys.executable, "-m", "exporter", command, *delivered.argv],
                             env=env, capture_output=True, text=True, timeout=60,
                             check=False)  # fmt: skip
        assert res.returncode == 2, res
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        texts[command] = res.stdout + res.stderr
    return texts


def check_config_subprocess(delivered: Delivered) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GECKO_")}
    res = subprocess.run([sys.executable, "-m", "exporter", "check-config", *delivered.argv],
                         env={**base, **delivered.env}, capture_output=True, text=True,
                         timeout=60, check=False)  # fmt: skip
    assert res.returncode == 0, res
    return {"check-config": res.stdout + res.stderr}


def _real_case(
    parts: tuple[str, str, str], form: str, how: str, server: str, db: GeckoDatabase, tmp: Path
) -> None:
    before, marker, after = parts
    password = f"Pw{before}{marker}{after}Z9"
    if server == "unreachable":
        host, port, dbname = UNREACHABLE
    else:
        params = conninfo_to_dict(db.monitor_dsn)
        host, port, dbname = str(params["host"]), int(str(params["port"])), db.dbname
    dsn = make_dsn(form, password, host, port, dbname, MONITOR_ROLE)
    delivered = deliver(dsn, how, tmp)
    try:
        validate_dsn(dsn)
    except ValueError:
        texts = rejected_outputs(delivered)
    else:
        texts = exporter_outputs(delivered, expect_event="db_connect_failed")
        texts.update(check_config_subprocess(delivered))
        if server == "auth" and form in WELL_FORMED:
            assert "password authentication failed" in texts["log"]
    assert_absent(texts, password, marker, form)


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    parts=_passwords,
    form=st.sampled_from(FORMS),
    how=st.sampled_from(DELIVERIES),
    server=st.sampled_from(["unreachable", "auth"]),
)
@example(parts=("Sup3r/", "0badf00d", "x"), form="uri-raw", how="env", server="unreachable")
@example(parts=("Sup3r?", "0badf00d", "#x"), form="uri-raw", how="secret-file", server="auth")
@example(parts=("Sup3r", "0badf00d", "#x"), form="uri-encoded", how="yaml-file", server="auth")
@example(parts=("Sup3r ", "0badf00d", " x"), form="kv-raw", how="env", server="auth")
@example(parts=("Sup3r ", "0badf00d", " 'x"), form="kv-quoted", how="yaml-inline", server="auth")
def test_password_in_no_process_output(
    parts: tuple[str, str, str], form: str, how: str, server: str, gecko_db: GeckoDatabase
) -> None:
    with tempfile.TemporaryDirectory(prefix="gecko-secrets-") as tmp:
        _real_case(parts, form, how, server, gecko_db, Path(tmp))


def test_percent_encoded_key_reaches_the_server_masked(gecko_db: GeckoDatabase) -> None:
    """``?pass%77ord=`` is libpq's password: a wrong one fails auth, and is never shown."""
    params = conninfo_to_dict(gecko_db.monitor_dsn)
    dsn = (
        f"postgresql://{MONITOR_ROLE}@{params['host']}:{params['port']}/{gecko_db.dbname}"
        "?pass%77ord=Sup3r0badf00d"
    )
    with tempfile.TemporaryDirectory(prefix="gecko-secrets-") as tmp:
        texts = exporter_outputs(deliver(dsn, "env", Path(tmp)), expect_event="db_connect_failed")
    assert "password authentication failed" in texts["log"]
    for where, text in texts.items():
        assert "0badf00d" not in text, where
