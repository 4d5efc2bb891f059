"""``gecko-exporter run`` validates its configuration in a child process (issue 12 §3).

The daemon must not import pydantic (13-17 MiB of resident memory); bad input is
still one line and exit 2, the child's arguments never hold a secret, and a child
that dies for another reason is one line too (never a traceback).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.config import Config, PoolSettings, Secret
from exporter.config_process import LoaderFailed, load_in_child
from exporter.errors import SettingsError
from tests.support.inprocess import environment, run_inprocess

PASSWORD = "Zq7-child-secret-Xw"
DSN = f"postgresql://mon:{PASSWORD}@127.0.0.1:1/privacy"


def run(
    *args: str, env: dict[str, str] | None = None, extra_path: Path | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GECKO_")}
    if extra_path is not None:
        base["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(extra_path), base.get("PYTHONPATH", "")) if p
        )
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True,
                          text=True, env=base, timeout=60, check=False)  # fmt: skip


def test_cli_and_app_import_no_pydantic() -> None:
    code = (
        "import sys, exporter.cli, exporter.app, exporter.config_process;"
        "print(sorted(m for m in sys.modules if 'pydantic' in m or m == 'exporter.settings'))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)  # fmt: skip
    assert res.stdout.strip() == "[]"


def test_child_returns_the_validated_config(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pools: [{name: backend, application_name: 'api*', size: 9}]\n")
    with environment({"GECKO_DATABASE_URL": DSN, "GECKO_TABLES__SCHEMAS": '["a", "b"]'}):
        config = load_in_child(config_file=cfg, overrides={"slow_query_threshold_seconds": 2.5})
    assert isinstance(config, Config)
    assert config.pools == [PoolSettings(name="backend", application_name="api*", size=9)]
    assert config.tables.schemas == ["a", "b"]
    assert config.slow_query_threshold_seconds == 2.5
    assert config.config == cfg
    assert config.database_url == Secret(DSN)
    assert PASSWORD not in repr(config)


@pytest.mark.parametrize(
    ("yaml_text", "env", "needle"),
    [
        ("pools: [1\n", {}, "config file"),  # not YAML
        ("listen_adress: x\n", {}, "unknown field 'listen_adress'"),
        ("tables: {schemas: [a], foo: 1}\n", {}, "tables.foo: unknown field (from config file)"),
        ("", {"GECKO_LISTEN_ADRESS": "x"}, "GECKO_LISTEN_ADRESS: unknown setting"),
        ("", {"GECKO_DATABASE_URL_FILE": "{dsn_file}"}, "database_url_file: DSN"),
        ("", {"GECKO_PROBES__REPORT__TIMEOUT_SECONDS": "0"}, "probes.report.timeout_seconds"),
        ("", {"GECKO_LOCK_TIMEOUT_SECONDS": "10"}, "settings: lock_timeout_seconds must be"),
    ],
)
def test_run_bad_config_is_one_line_exit_2(
    tmp_path: Path, yaml_text: str, env: dict[str, str], needle: str
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(f"{DSN}\nsecond line with {PASSWORD}\n")  # a raw control character
    full = {"GECKO_CONFIG": str(cfg), "GECKO_LOG_LEVEL": "debug"}
    full.update({k: v.format(dsn_file=dsn_file) for k, v in env.items()})
    if "GECKO_DATABASE_URL_FILE" not in full:
        full["GECKO_DATABASE_URL"] = DSN
    res = run("run", env=full)
    assert res.returncode == 2, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert needle in lines[0]
    assert lines[0].startswith("gecko-exporter: error: ")
    assert "Traceback" not in res.stderr
    assert PASSWORD not in res.stderr + res.stdout


def test_child_arguments_hold_no_secret(tmp_path: Path) -> None:
    """Every process `run` starts records its command line: the DSN is in none of them."""
    hook = tmp_path / "hook"
    hook.mkdir()
    log = tmp_path / "cmdlines"
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        "with open(os.environ['CMDLINE_LOG'], 'ab') as f:\n"
        "    f.write(open('/proc/self/cmdline', 'rb').read() + b'\\n')\n"
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text("listen_address: 'nope'\n")  # rejected: `run` ends after loading
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(DSN)
    res = run("run", "--database-url-file", str(dsn_file), "--config", str(cfg),
              env={"CMDLINE_LOG": str(log), "GECKO_PGBOUNCER_URL":
                   f"postgresql://pgbouncer:{PASSWORD}@127.0.0.1:1/pgbouncer"},
              extra_path=hook)  # fmt: skip
    assert res.returncode == 2, res
    assert "listen_address" in res.stderr
    cmdlines = [line.split(b"\0") for line in log.read_bytes().splitlines()]
    assert [b"-m", b"exporter.config_process"] in [c[1:3] for c in cmdlines], cmdlines
    assert not any(PASSWORD.encode() in part for c in cmdlines for part in c)


def test_run_when_the_child_fails_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loader that exits or is killed without an error line: one line, exit 1."""
    exits = tmp_path / "exits"
    exits.write_text("#!/bin/sh\necho 'Traceback (most recent call last):' >&2\nexit 3\n")
    killed = tmp_path / "killed"
    killed.write_text("#!/bin/sh\nkill -KILL $$\n")
    for script in (exits, killed):
        script.chmod(0o755)
    env = {"GECKO_DATABASE_URL": DSN}
    monkeypatch.setattr(sys, "executable", str(exits))
    res = run_inprocess(["run"], env)
    assert (res.code, res.stderr) == (
        1,
        "gecko-exporter: error: configuration loader exited with status 3\n",
    )
    monkeypatch.setattr(sys, "executable", str(killed))
    res = run_inprocess(["run"], env)
    assert (res.code, res.stderr) == (
        1,
        "gecko-exporter: error: configuration loader killed by SIGKILL\n",
    )


def test_a_child_that_hangs_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sleeper = tmp_path / "sleeper"
    sleeper.write_text("#!/bin/sh\nexec sleep 30\n")
    sleeper.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(sleeper))
    with pytest.raises(LoaderFailed, match=r"^did not finish within 0\.2 s$"):
        load_in_child(timeout=0.2)


def test_child_error_line_is_relayed_as_settings_error() -> None:
    env = {"GECKO_DATABASE_URL": DSN, "GECKO_LOG_FORMAT": "xml"}
    with environment(env), pytest.raises(SettingsError) as info:
        load_in_child()
    assert str(info.value) == (
        "log_format: Input should be 'json' or 'console' (from environment GECKO_LOG_FORMAT)"
    )
