"""DSN masking, description and validation follow libpq's own parse, never the text."""

from __future__ import annotations

import psycopg
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict

from exporter.db.dsn import (
    HIDDEN,
    describe_target,
    mask_dsn,
    redact,
    validate_dsn,
)


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        ("postgresql://u:pw@h:5/d", "user=u password=**** dbname=d host=h port=5"),
        ("postgres://u@h/d", "user=u dbname=d host=h"),
        ("host=h user=u password=pw dbname=d", "user=u password=**** dbname=d host=h"),
        ("host=h password='p w' dbname=d", "password=**** dbname=d host=h"),
        # the reproductions: raw ?, # and a percent-encoded key
        ("postgresql://u:Sup3r?x@127.0.0.1:1/db", "user=u password=**** dbname=db host=127.0.0.1 port=1"),
        ("postgresql://u:Sup3r#x@127.0.0.1:1/db", "user=u password=**** dbname=db host=127.0.0.1 port=1"),
        ("postgresql://u@127.0.0.1:1/db?pass%77ord=Sup3rX", "user=u password=**** dbname=db host=127.0.0.1 port=1"),
        ("host=h sslpassword=Sup3rX", "host=h sslpassword=****"),
    ],
)  # fmt: skip
def test_mask_rebuilds_from_libpq_parameters(dsn: str, masked: str) -> None:
    assert mask_dsn(dsn) == masked
    # the masked string is a valid DSN for the same server, with the secrets masked
    assert {k: v for k, v in conninfo_to_dict(mask_dsn(dsn)).items() if v != "****"} == {
        k: v for k, v in conninfo_to_dict(dsn).items() if k not in ("password", "sslpassword")
    }


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u:Sup3r/x@127.0.0.1:1/db",  # libpq reads 'Sup3r' as the port
        "postgresql://u:123/Sup3r@127.0.0.1:1/db",  # ...and '123' as a valid one
        "postgresql://u:a@Sup3r@127.0.0.1:1/db",  # libpq reads 'Sup3r@127.0.0.1' as the host
        "postgresql://u:1/a?host=Sup3r@h/db",
        "host=h password=Sup3r and more",  # unquoted space: libpq quotes 'more'
        "host=h password=Sup3r x=y",
        "postgresql://u:Sup3r%zz@h/db",  # bad percent-encoding: libpq quotes the token
    ],
)
def test_unusable_dsn_shows_nothing_of_the_password(dsn: str) -> None:
    assert mask_dsn(dsn) == HIDDEN
    assert "Sup3r" not in describe_target(dsn)
    assert "123" not in describe_target(dsn)
    with pytest.raises(ValueError) as err:
        validate_dsn(dsn)
    message = str(err.value)
    assert "Sup3r" not in message
    assert "more" not in message
    assert "\n" not in message


def test_describe_target_shows_host_port_db_and_user_only() -> None:
    assert describe_target("postgresql://u:pw@db:6432/privacy") == "u@db:6432/privacy"
    assert describe_target("host=db dbname=privacy password=pw") == "db:5432/privacy"
    assert describe_target("postgresql://h1:1,h2:2/db") == "h1,h2:1,2/db"
    # a port libpq would reject is not echoed
    assert describe_target("host=db port=Sup3r dbname=x") == "db:5432/x"


@pytest.mark.parametrize(
    ("dsn", "field"),
    [
        ("postgresql://u@h/db?sslmode=bogus", "sslmode"),
        ("host=h port=99999", "port"),
        ("host=h port=0", "port"),
        ("host=h,i port=1,2,3", "port"),
        ("host=h connect_timeout=soon", "connect_timeout"),
        ("host=h target_session_attrs=primary-ish", "target_session_attrs"),
        ("host=h gssencmode=always", "gssencmode"),
        ("host=h channel_binding=yes", "channel_binding"),
        ("host=h require_auth=scram-sha-256,!md5", "require_auth"),
        ("host=h keepalives_idle=1e3", "keepalives_idle"),
        ("host=h ssl_min_protocol_version=TLSv9", "ssl_min_protocol_version"),
        ("", "empty"),
    ],
)
def test_validate_rejects_what_libpq_rejects_at_connect(dsn: str, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        validate_dsn(dsn)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u:pw@h:5432/db?sslmode=verify-full&target_session_attrs=read-write",
        "host=h port=5432 connect_timeout=5 keepalives=1 keepalives_idle=30 tcp_user_timeout=9",
        "host=h,i port=1,2 require_auth=!md5,!password ssl_min_protocol_version=tlsv1.2",
        "host=/var/run/postgresql dbname=x",
        "postgresql://%2Fvar%2Frun%2Fpostgresql/db",
        "postgresql://u:p%40ss%2Fword@h/db?application_name=a%40b",
    ],
)
def test_validate_accepts_valid_dsns(dsn: str) -> None:
    validate_dsn(dsn)


# What the option table says must agree with libpq itself: connect to a closed port
# (127.0.0.1:1) and see whether libpq complains about the option or about the server.
_CONFORMANCE = [
    ("sslmode=require", True),
    ("sslmode=verify-full", True),
    ("sslmode=bogus", False),
    ("port=99999", False),
    ("port=0", False),
    ("port=abc", False),
    ("connect_timeout=abc", False),
    ("connect_timeout=5", True),
    ("target_session_attrs=prefer-standby", True),
    ("target_session_attrs=bogus", False),
    ("channel_binding=bogus", False),
    ("load_balance_hosts=random", True),
    ("load_balance_hosts=bogus", False),
    ("keepalives_idle=x", False),
    ("tcp_user_timeout=10", True),
    ("require_auth=bogus", False),
    ("require_auth=!md5,!password", True),
    ("require_auth=md5,!password", False),
    ("ssl_min_protocol_version=TLSv1.2", True),
    ("ssl_min_protocol_version=TLSv9", False),
    ("sslnegotiation=bogus", False),
    ("sslcertmode=bogus", False),
]


@pytest.mark.parametrize(("option", "valid"), _CONFORMANCE)
def test_option_table_agrees_with_libpq(option: str, valid: bool) -> None:
    dsn = f"host=127.0.0.1 port=1 dbname=x user=x connect_timeout=2 {option}"
    if option.startswith("port=") or option.startswith("connect_timeout="):
        dsn = f"host=127.0.0.1 dbname=x user=x {option}" + (
            "" if option.startswith("port=") else " port=1"
        )
    ours: bool
    try:
        validate_dsn(dsn)
        ours = True
    except ValueError:
        ours = False
    with pytest.raises(psycopg.Error) as err:
        psycopg.connect(dsn).close()
    message = str(err.value)
    libpq_accepts = "Connection refused" in message and "invalid" not in message
    assert libpq_accepts == valid, message
    assert ours == valid


_printable = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1)


def _uri_encoded(pw: str) -> str:
    from urllib.parse import quote  # noqa: PLC0415

    return f"postgresql://mon:{quote(pw, safe='')}@127.0.0.1:1/privacy"


def _kv_quoted(pw: str) -> str:
    escaped = pw.replace("\\", "\\\\").replace("'", "\\'")
    return f"host=127.0.0.1 port=1 user=mon password='{escaped}' dbname=privacy"


@settings(max_examples=200, deadline=None)
@given(body=_printable)
@example(body="Sup3r/x")
@example(body="a b ' \\ ? # @ % = &")
def test_well_formed_passwords_never_shown(body: str) -> None:
    password = f"Pw{body}Z9"
    for dsn in (_uri_encoded(password), _kv_quoted(password)):
        assert conninfo_to_dict(dsn)["password"] == password
        validate_dsn(dsn)
        for shown in (mask_dsn(dsn), describe_target(dsn)):
            assert password not in shown
        assert describe_target(dsn) == "mon@127.0.0.1:1/privacy"
        assert password not in redact(f"failed: {password} {dsn}", dsn)


@settings(max_examples=200, deadline=None)
@given(body=_printable)
@example(body="/x")
@example(body="@x")
@example(body=" x")
def test_raw_passwords_never_shown(body: str) -> None:
    """Unencoded / unquoted passwords: whatever libpq makes of them, nothing of it shows."""
    password = f"Pw{body}Z9"
    for dsn in (
        f"postgresql://mon:{password}@127.0.0.1:1/privacy",
        f"host=127.0.0.1 port=1 user=mon password={password} dbname=privacy",
    ):
        outputs = [mask_dsn(dsn), describe_target(dsn)]
        try:
            validate_dsn(dsn)
        except ValueError as exc:
            outputs.append(str(exc))
        for shown in outputs:
            assert password not in shown


@settings(max_examples=200, deadline=None)
@given(
    user=_printable,
    password=_printable,
    dbname=_printable,
    base=st.sampled_from(
        ["postgresql://postgres:x@127.0.0.1:6543/postgres?sslmode=disable", "host=h port=5 user=x"]
    ),
)
def test_dsn_replace_is_what_libpq_reads(user: str, password: str, dbname: str, base: str) -> None:
    from gecko_demo.admin import dsn_replace, dsn_without_password  # noqa: PLC0415

    out = dsn_replace(base, user=user, password=password, dbname=dbname)
    expected = {**conninfo_to_dict(base), "user": user, "password": password, "dbname": dbname}
    assert conninfo_to_dict(out) == expected
    assert "password" not in conninfo_to_dict(dsn_without_password(out))
