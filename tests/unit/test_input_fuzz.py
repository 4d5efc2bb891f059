"""Bad input (YAML, environment, flags) is one line naming the field, exit 2, never a traceback.

The CLI runs in-process (``cli.main`` with the environment and streams
swapped) so that hypothesis can try many inputs; a few subprocess runs prove
the same end to end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from exporter.settings import Settings
from tests.support.inprocess import Outcome, run_inprocess
from tests.support.wait import free_port

DSN = "postgresql://mon:fuzz-secret-pw@127.0.0.1:1/privacy"
NOT_UTF8 = b"listen_address: \xff\xfe\xfa\x80 \xc3\x28\n"


def run_subprocess(argv: Sequence[str], env: Mapping[str, str]) -> Outcome:
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("GECKO_")}
    base.update(env)
    res = subprocess.run([sys.executable, "-m", "exporter", *argv], capture_output=True,
                         text=True, env=base, timeout=60, check=False)  # fmt: skip
    return Outcome(res.returncode, res.stdout, res.stderr)


def assert_rejected(res: Outcome, needle: str) -> None:
    assert res.code == 2, res
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert needle in lines[0], lines[0]


def _case(tmp: Path, kind: str, payload: Any) -> tuple[list[str], dict[str, str]]:
    """argv and environment for one bad input (check-config validates everything)."""
    env = {"GECKO_DATABASE_URL": DSN}
    argv = ["check-config"]
    if kind == "yaml":
        cfg = tmp / "config.yaml"
        cfg.write_bytes(payload if isinstance(payload, bytes) else str(payload).encode())
        argv += ["--config", str(cfg)]
    elif kind == "config-path":
        argv += ["--config", str(payload)]
    elif kind == "dsn-file":
        secret = tmp / "dsn"
        secret.write_bytes(payload)
        del env["GECKO_DATABASE_URL"]
        env["GECKO_DATABASE_URL_FILE"] = str(secret)
    elif kind == "dsn-path":
        del env["GECKO_DATABASE_URL"]
        env["GECKO_DATABASE_URL_FILE"] = str(payload)
    else:
        env.update(payload)
    return argv, env


# (kind, payload, what the one line must name) — issue #9 item 5, one by one
BAD_INPUTS: list[tuple[str, Any, str]] = [
    ("yaml", "probes: {report: 30}\n", "probes"),
    ("env", {"GECKO_PROBES__REPORT": "30"}, "probes"),
    ("env", {"GECKO_PROBES": '{"report":5}'}, "probes"),
    ("env", {"GECKO_PROBES": "{bad"}, "probes"),
    ("env", {"GECKO_POOLS": "notjson"}, "pools"),
    ("env", {"GECKO_SCAN_LOOKUP__INPUTS": "a,b"}, "scan_lookup"),
    ("yaml", NOT_UTF8, "config file"),
    ("dsn-file", b"postgresql://u:\xff\xfe@127.0.0.1:1/db\n", "database_url_file"),
    ("yaml", f"slow_query_text_max_length: {'9' * 5000}\n", "slow_query_text_max_length"),
    ("yaml", f"slow_query_threshold_seconds: {'9' * 5000}\n", "slow_query_threshold_seconds"),
    ("env", {"GECKO_SLOW_QUERY_TEXT_MAX_LENGTH": "9" * 5000}, "slow_query_text_max_length"),
    ("env", {"GECKO_UP_STALE_SECONDS": "9" * 5000}, "up_stale_seconds"),
    ("config-path", "/dev/zero", "config file"),
    ("dsn-path", "/dev/zero", "database_url_file"),
    ("env", {"GECKO_DATABASE_URL": "postgresql://u@127.0.0.1:1/db?sslmode=bogus"}, "sslmode"),
    ("env", {"GECKO_DATABASE_URL": "host=127.0.0.1 port=99999 dbname=db"}, "port"),
    ("dsn-file", b"postgresql://u@127.0.0.1:99999/db", "port"),
    ("env", {"GECKO_LISTEN_ADRESS": "127.0.0.1:1"}, "GECKO_LISTEN_ADRESS"),
    ("env", {"GECKO_POOLS": "[" * 20000 + "]" * 20000}, "pools: nested too deeply"),
    ("env", {"GECKO_PROBES": '{"a":' * 20000 + "1" + "}" * 20000}, "probes: nested too deeply"),
    ("env", {"GECKO_PROBES__REPORT__TIMEOUT": "3"}, "probes.report.timeout"),
    ("yaml", "log_level: info\nlog_level: debug\n", "duplicate key 'log_level'"),
    (
        "yaml",
        "probes:\n  report: {interval_seconds: 5}\n  report: {timeout_seconds: 1}\n",
        "duplicate key 'report'",
    ),  # fmt: skip
]


@pytest.mark.parametrize(
    ("kind", "payload", "needle"), BAD_INPUTS, ids=[f"{k}-{n}" for k, _, n in BAD_INPUTS]
)
def test_each_bad_input_is_one_line_exit_2(
    kind: str, payload: Any, needle: str, tmp_path: Path
) -> None:
    argv, env = _case(tmp_path, kind, payload)
    assert_rejected(run_inprocess(argv, env), needle)


@pytest.mark.parametrize(
    ("kind", "payload", "needle"),
    [BAD_INPUTS[i] for i in (0, 3, 6, 12, 13, 14, 15)],
    ids=[
        "yaml-probe",
        "env-json",
        "not-utf8",
        "dev-zero-config",
        "dev-zero-dsn",
        "sslmode",
        "port",
    ],
)
@pytest.mark.parametrize("command", ["check-config", "run"])
def test_bad_input_end_to_end(
    command: str, kind: str, payload: Any, needle: str, tmp_path: Path
) -> None:
    argv, env = _case(tmp_path, kind, payload)
    env["GECKO_LISTEN_ADDRESS"] = f"127.0.0.1:{free_port()}"
    assert_rejected(run_subprocess([command, *argv[1:]], env), needle)


def test_allowed_environment_is_not_rejected(tmp_path: Path) -> None:
    env = {"GECKO_DATABASE_URL": DSN, "GECKO_TEST_DSN": "x", "GECKO_PROMETHEUS_BIN": "/x"}
    # Kubernetes service links of Services named gecko-* in the same namespace
    env.update(
        {
            "GECKO_ADVISOR_BACKEND_SERVICE_HOST": "10.0.0.7",
            "GECKO_ADVISOR_BACKEND_SERVICE_PORT": "8080",
            "GECKO_ADVISOR_BACKEND_SERVICE_PORT_HTTP": "8080",
            "GECKO_ADVISOR_BACKEND_PORT": "tcp://10.0.0.7:8080",
            "GECKO_ADVISOR_BACKEND_PORT_8080_TCP": "tcp://10.0.0.7:8080",
            "GECKO_ADVISOR_BACKEND_PORT_8080_TCP_PROTO": "tcp",
            "GECKO_ADVISOR_BACKEND_PORT_8080_TCP_PORT": "8080",
            "GECKO_ADVISOR_BACKEND_PORT_8080_TCP_ADDR": "10.0.0.7",
        }
    )
    res = run_inprocess(["check-config"], env)
    assert res.code == 0, res.stderr
    for typo in ("GECKO_LISTEN_PORT", "GECKO_LOG_LEVELS", "GECKO_SERVICE_HOST"):
        assert_rejected(run_inprocess(["check-config"], {**env, typo: "1"}), typo)


# -- fuzzing ------------------------------------------------------------------------

FIELDS = sorted(Settings.model_fields)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["json", "debug", "127.0.0.1:0", "report", "5", "-1", "{", "[a]"])
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from([*FIELDS, "report", "interval_seconds", "x"]), inner, max_size=3
        )
    ),  # fmt: skip
    max_leaves=8,
)
_documents = st.dictionaries(
    st.sampled_from(FIELDS) | st.text(max_size=8), _values, max_size=4
).map(lambda d: yaml.safe_dump(d, allow_unicode=True))
_raw_yaml = st.text(max_size=80) | st.sampled_from(
    [
        "a: [\n",
        "!!python/object:os.system x",
        "x: &a [*a]",
        "- 1\n",
        "a: 1\na: 2\n",
        "{",
        "\t",
        f"bloat: {{pgstattuple_max_table_bytes: {'9' * 5000}}}\n",
        f"{'9' * 5000}: 1\n",
        f"probes: {{{'9' * 5000}: {{}}}}\n",
        "[" * 5000,
    ]  # fmt: skip
)
_env_names = st.sampled_from(
    [f"GECKO_{f.upper()}" for f in FIELDS]
    + [
        "GECKO_PROBES__REPORT",
        "GECKO_PROBES__REPORT__INTERVAL_SECONDS",
        "GECKO_TABLES__NOPE",
        "GECKO_LISTEN_ADDRESS__X",
        "GECKO_",
        "GECKO_X",
        "GECKO_SCAN_LOOKUP__INPUTS",
    ]  # fmt: skip
)
_env_values = (
    st.text(st.characters(exclude_characters="\x00", codec="utf-8"), max_size=30)
    | st.sampled_from(['{"report": {"interval_seconds": 2}}', "[]", "{}", "null", "9" * 5000])
    | _values.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip())
)
_flags = st.lists(
    st.sampled_from(
        [
            "--listen-address",
            "--log-format",
            "--log-level",
            "--slow-query-threshold",
            "--database-url",
            "--database-url-file",
            "--config",
            "--version",
            "-h",
        ]  # fmt: skip
    )
    | st.text(st.characters(exclude_characters="\x00", codec="utf-8"), max_size=12),
    max_size=4,
)


@pytest.fixture(scope="module")
def fuzz_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="gecko-fuzz-") as tmp:
        yield Path(tmp)


def _check(res: Outcome) -> None:
    assert res.code in (0, 2), res
    assert "Traceback" not in res.stderr + res.stdout
    if res.code == 2:
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    document=_documents | _raw_yaml,
    env=st.dictionaries(_env_names, _env_values, max_size=3),
    flags=_flags,
)
@example(document="probes: {report: 30}\n", env={}, flags=[])
@example(document="", env={"GECKO_PROBES": "{bad"}, flags=[])
@example(document="", env={}, flags=["--database-url", DSN])
def test_fuzz_config_env_flags(
    document: str, env: dict[str, str], flags: list[str], fuzz_dir: Path
) -> None:
    cfg = fuzz_dir / "fuzz.yaml"
    cfg.write_text(document, encoding="utf-8", errors="surrogatepass")
    full_env = {"GECKO_DATABASE_URL": DSN, **env}
    res = run_inprocess(["check-config", "--config", str(cfg), *flags], full_env)
    _check(res)
    assert "fuzz-secret-pw" not in res.stdout + res.stderr


@settings(max_examples=100, deadline=None)
@given(argv=st.lists(st.text(st.characters(exclude_characters="\x00", codec="utf-8"),
                             max_size=20), min_size=1, max_size=4))  # fmt: skip
def test_fuzz_top_level_arguments(argv: list[str]) -> None:
    assume(argv[0] not in ("run", "demo"))  # those would start a server
    res = run_inprocess(argv, {"GECKO_DATABASE_URL": DSN})
    _check(res)
