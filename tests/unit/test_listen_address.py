"""A listen address whose host cannot be encoded is bad input (exit 2), not a bind traceback."""

from __future__ import annotations

import pytest

from exporter.cli import main
from exporter.config import split_host_port


@pytest.mark.parametrize("host", ["\udcff", "a" * 64])  # a non-UTF-8 env byte; a label > 63
def test_unencodable_host_is_rejected(host: str) -> None:
    with pytest.raises(ValueError, match="host is not a valid host name or address"):
        split_host_port(f"{host}:8187")


@pytest.mark.parametrize("value", ["[::1]:8187", "127.0.0.1:8187", ":8187", "exämple.com:8187"])
def test_usual_addresses_pass(value: str) -> None:
    assert split_host_port(value)[1] == 8187


def test_run_with_an_unencodable_host_exits_2_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GECKO_DATABASE_URL", "host=127.0.0.1 port=1")
    monkeypatch.setenv("GECKO_LISTEN_ADDRESS", "\udcff:18999")  # as Python reads a byte 0xff
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "listen_address: host is not a valid host name or address" in err


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("postgresql://gecko:Pa55-quote@db/privacy", "port is not a number between 1 and 65535"),
        ("Pa55-quote", "not host:port"),
        ("[Pa55-quote]", "not host:port"),
        ("db:Pa55-quote", "port is not a number between 1 and 65535"),
    ],
)
def test_a_bad_listen_address_is_named_not_quoted(
    value: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A value pasted into the wrong flag (a DSN, a password) is never echoed back."""
    assert main(["check-config", "--listen-address", value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"listen_address: {reason}" in err
    assert "Pa55-quote" not in err
