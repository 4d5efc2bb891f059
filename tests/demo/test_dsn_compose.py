"""Connection strings composed from parts (psycopg's conninfo helpers, never by hand).

``admin.dsn_replace``, ``admin.make_dsn`` and ``LocalCluster.dsn`` must give libpq
exactly the parameters they were asked for, whatever the characters: the
passwords below log in to a real server, and the wrong one does not.
"""

from __future__ import annotations

import secrets

import pytest

from exporter.db.dsn import describe_target, mask_dsn
from gecko_demo import admin
from gecko_demo.cluster import LocalCluster

PASSWORDS = [
    "with space",
    " leading and trailing ",
    "single'quote",
    'double"quote',
    "back\\slash\\",
    "at@sign",
    "slash/and:colon",
    "percent%41%zz",
    "query?a=b&c#frag",
    "equals=sign",
    "unicode-é-ß-密码-🦎",
    "''\\' '@/%",
]

BASES = [
    "postgresql://postgres:x@127.0.0.1:6543/postgres?sslmode=disable",
    "postgres://u@127.0.0.1/db",
    "host=h port=5 user=x dbname='a b'",
    # an IPv6 link-local address with its zone: libpq decodes %25 to '%'
    "postgresql://u@[fe80::1%25eth0]:5432/db",
    "postgresql://u@h1:1,h2:2/db?target_session_attrs=read-write",
    "postgresql:///db?host=/tmp/socket%20dir&options=-c%20statement_timeout%3D5",
    "",
]


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("password", PASSWORDS)
def test_dsn_replace_gives_libpq_exactly_the_new_parameters(base: str, password: str) -> None:
    out = admin.dsn_replace(base, user="gecko monitor", password=password, dbname="privacy/é")
    expected = {
        **admin.dsn_params(base),
        "user": "gecko monitor",
        "password": password,
        "dbname": "privacy/é",
    }
    assert admin.dsn_params(out) == expected
    without = admin.dsn_without_password(out)
    assert "password" not in admin.dsn_params(without)
    assert admin.dsn_params(without) == {k: v for k, v in expected.items() if k != "password"}


def test_dsn_replace_removes_and_keeps() -> None:
    base = "postgresql://u:pw@127.0.0.1:5432/db?sslmode=require&application_name=x"
    out = admin.dsn_replace(base, application_name=None, port="6432")
    assert admin.dsn_params(out) == {
        "user": "u",
        "password": "pw",
        "dbname": "db",
        "host": "127.0.0.1",
        "port": "6432",
        "sslmode": "require",
    }
    back = admin.dsn_replace(out, application_name="x", port="5432")
    assert admin.dsn_params(back) == admin.dsn_params(base)


def test_make_dsn_leaves_out_none_and_quotes() -> None:
    dsn = admin.make_dsn(host="127.0.0.1", port=5432, user="a b", password="it's\\", dbname=None)
    assert admin.dsn_params(dsn) == {
        "host": "127.0.0.1",
        "port": "5432",
        "user": "a b",
        "password": "it's\\",
    }
    assert admin.make_dsn() == ""


@pytest.mark.parametrize("password", ["Sup3r with space", "Sup3r'quote", "Sup3r\\", "Sup3r-é"])
def test_masking_hides_composed_passwords(password: str) -> None:
    """The exporter's masking works on what the demo composes (key=value)."""
    dsn = admin.dsn_replace("postgresql://mon@127.0.0.1:5432/privacy", password=password)
    masked = mask_dsn(dsn)
    assert "password=****" in masked
    for shown in (masked, describe_target(dsn), admin.dsn_without_password(dsn)):
        assert "Sup3r" not in shown
    assert describe_target(dsn) == "mon@127.0.0.1:5432/privacy"


def test_special_passwords_log_in_to_a_real_server(demo_server: LocalCluster) -> None:
    role = f"gecko_dsn_{secrets.token_hex(3)}"
    with admin.connect(demo_server.dsn(), application_name="gecko-tests") as conn:
        conn.execute(f"CREATE ROLE {conn.ident(role)} LOGIN")
        try:
            for password in PASSWORDS:
                conn.execute(f"ALTER ROLE {conn.ident(role)} PASSWORD {conn.literal(password)}")
                for dsn in (
                    admin.dsn_replace(demo_server.dsn(), user=role, password=password),
                    demo_server.dsn(user=role, password=password),
                ):
                    with admin.connect(dsn, application_name="gecko-tests") as mine:
                        assert mine.fetchval("SELECT current_user") == role, password
                wrong = admin.dsn_replace(demo_server.dsn(), user=role, password=password + "x")
                with pytest.raises(admin.AdminError, match="password authentication failed"):
                    admin.connect(wrong, application_name="gecko-tests").close()
        finally:
            conn.execute(f"DROP ROLE {conn.ident(role)}")
