"""The PgBouncer URL is a secret like the database DSN (issue 11 §2).

Delivered as ``GECKO_PGBOUNCER_URL``, ``GECKO_PGBOUNCER_URL_FILE`` and the YAML
``pgbouncer_url_file`` / ``pgbouncer_url``, in every DSN form of
tests/integration/test_secrets.py: its password never shows in ``check-config``,
the masked settings, error lines, and (with a real PgBouncer, the right and a
wrong password) the exporter's logs at debug level, ``/``, ``/metrics``,
``/readyz`` or its command line.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.settings import load_config
from tests.conftest import GeckoDatabase, require_tool
from tests.integration.test_secrets import FORMS, _passwords, assert_absent, make_dsn
from tests.support.exporter_proc import ExporterProcess
from tests.support.inprocess import environment, run_inprocess
from tests.support.pgbouncer import STATS_USER, PgBouncer

pytestmark = pytest.mark.integration

DELIVERIES = ("env", "secret-file", "yaml-file", "yaml-inline")
UNREACHABLE = ("127.0.0.1", 1)


def deliver(url: str, how: str, workdir: Path) -> dict[str, str]:
    if how == "env":
        return {"GECKO_PGBOUNCER_URL": url}
    secret = workdir / "pgbouncer-url"
    secret.write_text(url, encoding="utf-8")
    if how == "secret-file":
        return {"GECKO_PGBOUNCER_URL_FILE": str(secret)}
    cfg = workdir / "config.yaml"
    key, value = (
        ("pgbouncer_url_file", str(secret)) if how == "yaml-file" else ("pgbouncer_url", url)
    )
    cfg.write_text(json.dumps({key: value}), encoding="utf-8")  # JSON is YAML
    return {"GECKO_CONFIG": str(cfg)}


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="gecko-pgb-secrets-") as tmp:
        yield Path(tmp)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    parts=_passwords,
    form=st.sampled_from(FORMS),
    how=st.sampled_from(DELIVERIES),
    dbname=st.sampled_from(["pgbouncer", "privacy"]),
)
def test_pgbouncer_password_in_no_inprocess_output(
    parts: tuple[str, str, str], form: str, how: str, dbname: str, workdir: Path
) -> None:
    before, marker, after = parts
    password = f"Pw{before}{marker}{after}Z9"
    url = make_dsn(form, password, *UNREACHABLE, dbname, STATS_USER)
    env = {
        "GECKO_DATABASE_URL": "postgresql://mon@127.0.0.1:1/privacy",
        **deliver(url, how, workdir),
    }
    res = run_inprocess(["check-config"], env)
    assert res.code in (0, 2), res
    if res.code == 2:
        assert res.stderr.count("\n") == 1 and "pgbouncer_url" in res.stderr, res.stderr
        assert "Traceback" not in res.stderr
    texts = {"check-config stdout": res.stdout, "check-config stderr": res.stderr}
    if res.code == 0:
        with environment(env):
            loaded = load_config()
            assert loaded.pgbouncer_dsn() is not None
        texts["settings_loaded"] = json.dumps(loaded.masked())
        texts["repr"] = repr(loaded)
    assert_absent(texts, password, marker, form)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgresql://u:Sup3r0badf00d@127.0.0.1:6432/privacy", "'pgbouncer'"),
        ("postgresql://u:Sup3r0badf00d@127.0.0.1:6432/pgbouncer?options=-c%20x%3D1", "options"),
        ("postgresql://u:Sup3r0badf00d/x@127.0.0.1:6432/pgbouncer", "ambiguous"),
    ],
)
@pytest.mark.parametrize("how", ["env", "secret-file"])
def test_bad_pgbouncer_url_one_line_exit_2(url: str, problem: str, how: str, workdir: Path) -> None:
    env = {
        "GECKO_DATABASE_URL": "postgresql://mon@127.0.0.1:1/privacy",
        **deliver(url, how, workdir),
    }
    for argv in (["check-config"], ["run"]):
        res = run_inprocess(argv, env)
        assert res.code == 2, res
        line = res.stderr.strip()
        assert "\n" not in line and line.startswith("gecko-exporter: error: pgbouncer_url")
        assert problem in line
        assert "0badf00d" not in res.stdout + res.stderr and "Sup3r" not in res.stderr


def test_both_url_and_file_rejected(workdir: Path) -> None:
    secret = workdir / "both"
    secret.write_text("postgresql://u:pw@127.0.0.1:6432/pgbouncer")
    res = run_inprocess(
        ["check-config"],
        {
            "GECKO_DATABASE_URL": "postgresql://mon@127.0.0.1:1/privacy",
            "GECKO_PGBOUNCER_URL": "postgresql://u:Sup3r0badf00d@127.0.0.1:6432/pgbouncer",
            "GECKO_PGBOUNCER_URL_FILE": str(secret),
        },
    )
    assert res.code == 2 and "set only one of pgbouncer_url and pgbouncer_url_file" in res.stderr
    assert "0badf00d" not in res.stderr


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


@pytest.mark.parametrize("wrong", [False, True], ids=["right-password", "wrong-password"])
def test_real_pgbouncer_password_in_no_process_output(
    gecko_db: GeckoDatabase, wrong: bool, workdir: Path
) -> None:
    tool = require_tool("pgbouncer", "/usr/sbin/pgbouncer")
    cluster = gecko_db.require_cluster()
    with PgBouncer(
        tool,
        backend_port=cluster.port,
        dbname=gecko_db.dbname,
        users={"postgres": cluster.password},
    ) as bouncer:
        password = "Wr0ng" + "0badf00d" + "Pw" if wrong else bouncer.stats_password
        env = {
            **deliver(bouncer.admin_url(password), "secret-file", workdir),
            "GECKO_LOG_LEVEL": "debug",
        }
        with ExporterProcess(gecko_db.monitor_dsn, env=env) as exp:
            assert exp.proc is not None
            exp.wait_ready()
            expected = 0 if wrong else 1
            exp.wait_value("gecko_pgbouncer_up", lambda v: v == expected, timeout=20)
            if wrong:
                event = exp.wait_event("db_connect_failed", timeout=20)
                assert event["lane"] == "pgbouncer" and event["reason"] == "auth"
            assert exp.value("gecko_up") == 1
            texts = {path: exp.get(path)[1] for path in ("/", "/metrics", "/readyz")}
            texts["cmdline"] = _cmdline(exp.proc.pid)
        texts["log"] = exp.logs_text()
    assert "settings_loaded" in texts["log"]
    assert_absent(texts, password, "0badf00d" if wrong else password, "uri-encoded")
