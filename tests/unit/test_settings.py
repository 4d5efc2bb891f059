"""Configuration precedence and one-line validation errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter.config import split_host_port
from exporter.errors import SettingsError
from exporter.settings import load_config

DSN = "postgresql://mon:s3cret-pw@db.example:5432/privacy"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("GECKO_"):
            monkeypatch.delenv(key)


def test_defaults() -> None:
    s = load_config()
    assert s.listen() == ("0.0.0.0", 8187)
    assert s.log_format == "json"
    assert s.slow_query_threshold_seconds == 5
    probes = s.probe_settings()
    assert probes["slow_queries"].interval_seconds == 1
    # statement_timeout always below the probe's own timeout
    assert all(p.statement_timeout_seconds < p.timeout_seconds for p in probes.values())


def test_precedence_flags_over_env_over_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "listen_address: 127.0.0.1:1111\nlog_level: debug\nslow_query_threshold_seconds: 3\n"
        "probes:\n  report:\n    interval_seconds: 30\n"
    )
    monkeypatch.setenv("GECKO_LISTEN_ADDRESS", "127.0.0.1:2222")
    monkeypatch.setenv("GECKO_PROBES__SCAN_LOOKUP__INTERVAL_SECONDS", "7")
    s = load_config(config_file=cfg, overrides={"slow_query_threshold_seconds": 9})
    assert s.listen_address == "127.0.0.1:2222"  # env beats file
    assert s.log_level == "debug"  # file beats default
    assert s.slow_query_threshold_seconds == 9  # flag beats file
    probes = s.probe_settings()
    assert probes["report"].interval_seconds == 30
    assert probes["report"].timeout_seconds == 10  # defaults kept for unset fields
    assert probes["scan_lookup"].interval_seconds == 7


def test_config_file_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pools:\n  - {name: backend, application_name: api, size: 11}\n")
    monkeypatch.setenv("GECKO_CONFIG", str(cfg))
    s = load_config()
    assert s.pools[0].size == 11


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"GECKO_LISTEN_ADDRESS": "localhost"}, "listen_address: "),
        ({"GECKO_LISTEN_ADDRESS": "x:99999"}, "listen_address: "),
        ({"GECKO_LOG_FORMAT": "xml"}, "log_format: "),
        ({"GECKO_SLOW_QUERY_THRESHOLD_SECONDS": "-1"}, "slow_query_threshold_seconds: "),
        ({"GECKO_PROBES__REPORT__INTERVAL_SECONDS": "0"}, "probes.report.interval_seconds: "),
        ({"GECKO_PROBES__NOPE__INTERVAL_SECONDS": "1"}, "probes: unknown probe 'nope'"),
        ({"GECKO_DATABASE_URL": "host=db port"}, "database_url: "),
    ],
)
def test_bad_env_names_the_field(
    env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SettingsError) as err:
        load_config()
    message = str(err.value)
    assert message.startswith(expected), message
    assert "\n" not in message
    assert "(from environment GECKO_" in message


def test_bad_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("listen_adress: 1\n")
    with pytest.raises(SettingsError, match="unknown field 'listen_adress'"):
        load_config(config_file=cfg)
    cfg.write_text("pools: [{name: Bad Name, size: 1, application_name: x}]\n")
    with pytest.raises(SettingsError, match=r"^pools\.0\.name: .*\(from config file\)$"):
        load_config(config_file=cfg)
    cfg.write_text("pools: [{name: api, size: 3}]\n")
    with pytest.raises(SettingsError, match="needs application_name and/or usename"):
        load_config(config_file=cfg)
    cfg.write_text("a: [\n")
    with pytest.raises(SettingsError, match="config file .*line"):
        load_config(config_file=cfg)
    with pytest.raises(SettingsError, match="cannot read"):
        load_config(config_file=tmp_path / "missing.yaml")


def test_dsn_sources_and_masking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="^database_url: not set"):
        load_config().dsn()
    monkeypatch.setenv("GECKO_DATABASE_URL", DSN)
    s = load_config()
    assert s.dsn() == DSN
    masked = s.masked()
    assert "s3cret-pw" not in str(masked)
    assert (
        masked["database_url"] == "user=mon password=**** dbname=privacy host=db.example port=5432"
    )
    assert "s3cret-pw" not in repr(s)
    secret = tmp_path / "dsn"
    secret.write_text(DSN + "\n")
    monkeypatch.delenv("GECKO_DATABASE_URL")
    monkeypatch.setenv("GECKO_DATABASE_URL_FILE", str(secret))
    assert load_config().dsn() == DSN
    monkeypatch.setenv("GECKO_DATABASE_URL", DSN)
    with pytest.raises(SettingsError, match="only one of"):
        load_config()


def test_lock_timeout_must_stay_below_probe_timeouts() -> None:
    with pytest.raises(SettingsError, match="lock_timeout_seconds"):
        load_config(overrides={"lock_timeout_seconds": 5})


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.0.0.0:8187", ("0.0.0.0", 8187)), (":9", ("0.0.0.0", 9)), ("[::1]:80", ("::1", 80))],
)
def test_split_host_port(text: str, expected: tuple[str, int]) -> None:
    assert split_host_port(text) == expected


def test_json_config_with_an_escaped_character_beyond_the_bmp(tmp_path: Path) -> None:
    """JSON is YAML: a writer escapes U+98BA5 as a surrogate pair, read back as one character."""
    password = "pw\U00098ba5x"
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"database_url": f"postgresql://mon:{password}@db:5432/privacy"}))
    assert "\\ud" in cfg.read_text()  # ensure_ascii: the pair is escaped
    assert password in load_config(config_file=cfg).dsn()
    cfg.write_text(json.dumps({"database_url": "postgresql://mon:pw\ud800@db:5432/privacy"}))
    with pytest.raises(SettingsError, match=r"^database_url: is not UTF-8 text \(from config"):
        load_config(config_file=cfg)
