"""A URI with a raw control character (a second line of a secret file) is rejected, not shown."""

from __future__ import annotations

import pytest

from exporter.db.dsn import describe_target, parse_dsn


@pytest.mark.parametrize(
    "dsn",
    [
        # a DSN file with a second line: libpq reads it into dbname, which logs and / show
        "postgresql://gecko_monitor@db:5432/privacy\nS3cretOnLine2",
        "postgresql://gecko_monitor@db:5432/privacy\r\nS3cretOnLine2",
        "postgresql://gecko_monitor@db:5432/priv\tS3cretOnLine2",
    ],
)
def test_uri_with_a_raw_control_character_is_rejected_and_hidden(dsn: str) -> None:
    with pytest.raises(ValueError, match="control character") as err:
        parse_dsn(dsn)
    assert "S3cret" not in str(err.value)
    assert "S3cret" not in describe_target(dsn)


def test_key_value_form_may_span_lines() -> None:
    # libpq separates key=value pairs by any whitespace, newlines included
    assert parse_dsn("host=db\nport=5432\nuser=u")["port"] == "5432"
    assert parse_dsn("postgresql://u:p%0Aq@db/privacy")["password"] == "p\nq"


def test_dsn_that_is_not_utf8_is_rejected_without_quoting_it() -> None:
    # Python reads a non-UTF-8 byte of an environment variable as a lone surrogate; the
    # encoder's own message quoted that character of the password
    with pytest.raises(ValueError) as err:
        parse_dsn("postgresql://u:pw\udcffS3cret@db/privacy")
    assert str(err.value) == "is not UTF-8 text"
    assert "S3cret" not in describe_target("postgresql://u:pw\udcffS3cret@db/privacy")
