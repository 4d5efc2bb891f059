from __future__ import annotations

import pytest

from exporter.db.dsn import describe_target, mask_dsn, validate_dsn


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        ("postgresql://u:pw@h:5/d", "postgresql://u:****@h:5/d"),
        ("postgres://u@h/d", "postgres://u@h/d"),
        ("host=h user=u password=pw dbname=d", "host=h user=u password=**** dbname=d"),
        ("host=h password='p w' dbname=d", "host=h password=**** dbname=d"),
    ],
)
def test_mask(dsn: str, masked: str) -> None:
    assert mask_dsn(dsn) == masked


def test_validate_does_not_echo_secret() -> None:
    with pytest.raises(ValueError) as err:
        validate_dsn("host=h password=topsecret bogus")
    assert "topsecret" not in str(err.value)


def test_describe_target() -> None:
    assert describe_target("postgresql://u:pw@db:6432/privacy") == "db:6432/privacy"
