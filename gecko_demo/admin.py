"""Plain connections for administrative and app-like database traffic.

The exporter's own sessions (timeouts, read-only, bounded work) live elsewhere in
this package. This module serves the demo and the test suite: creating roles,
databases and schemas, bulk-loading rows with COPY, and replaying the Gecko
Advisor app's statements with bind parameters. It is the only place outside the
exporter's session code that talks to psycopg, so callers see plain Python
values and :class:`AdminError`, never driver types.

SQL text is passed as ``str``: it comes from the package's own files or from
constants in the calling module. Identifiers and literals that are not
constants must go through :meth:`AdminConnection.ident` /
:meth:`AdminConnection.literal`.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, LiteralString, Self

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from exporter.errors import ExporterError

Row = tuple[Any, ...]
Params = Sequence[Any] | Mapping[str, Any]

# SQLSTATE classes that mean "the session is gone" rather than "the statement failed".
_CONNECTION_CLASSES = ("08", "57P")


class AdminError(ExporterError):
    """A statement or connection attempt failed.

    ``sqlstate`` is the server's error code when it answered (``None`` when it
    could not be reached); ``constraint`` names the violated constraint, if
    any; ``connection_lost`` tells the caller to reconnect before retrying.
    """

    def __init__(
        self,
        message: str,
        *,
        sqlstate: str | None = None,
        constraint: str | None = None,
        connection_lost: bool = False,
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.constraint = constraint
        self.connection_lost = connection_lost

    @property
    def is_unique_violation(self) -> bool:
        return self.sqlstate == "23505"


def _as_query(text: str) -> LiteralString:
    # The statement text is trusted (package files and module constants); see
    # the module docstring. psycopg's types ask for a LiteralString, which
    # mypy treats as plain str.
    return text


def _translate(exc: psycopg.Error, conn: psycopg.Connection[Row] | None) -> AdminError:
    sqlstate = exc.sqlstate
    diag_constraint = exc.diag.constraint_name
    lost = (
        isinstance(exc, psycopg.OperationalError) and (conn is None or conn.closed or conn.broken)
    ) or (sqlstate is not None and sqlstate.startswith(_CONNECTION_CLASSES))
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return AdminError(
        f"{type(exc).__name__}: {first_line}",
        sqlstate=sqlstate,
        constraint=diag_constraint,
        connection_lost=lost,
    )


class AdminConnection:
    """One psycopg connection with a small, typed surface.

    Autocommit by default: every statement is its own transaction unless it
    runs inside :meth:`transaction`.
    """

    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self._conn = conn

    # -- information ------------------------------------------------------
    @property
    def backend_pid(self) -> int:
        return int(self._conn.info.backend_pid)

    @property
    def server_version_num(self) -> int:
        """E.g. 180001 for 18.1, 150010 for 15.10."""
        return int(self._conn.info.server_version)

    @property
    def server_major(self) -> int:
        return self.server_version_num // 10000

    @property
    def closed(self) -> bool:
        return bool(self._conn.closed or self._conn.broken)

    # -- quoting ----------------------------------------------------------
    def ident(self, *names: str) -> str:
        """A (possibly schema-qualified) quoted identifier."""
        return sql.Identifier(*names).as_string(self._conn)

    def literal(self, value: object) -> str:
        """A quoted SQL literal, for utility statements that take no parameters."""
        return sql.Literal(value).as_string(self._conn)

    # -- statements -------------------------------------------------------
    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as exc:
            raise _translate(exc, self._conn) from exc

    def execute(
        self, statement: str, params: Params | None = None, *, prepare: bool | None = None
    ) -> int:
        """Run one statement; return its row count (-1 when not applicable)."""
        with self._errors(), self._conn.cursor() as cur:
            cur.execute(_as_query(statement), params, prepare=prepare)
            return int(cur.rowcount)

    def fetchall(
        self, statement: str, params: Params | None = None, *, prepare: bool | None = None
    ) -> list[Row]:
        with self._errors(), self._conn.cursor() as cur:
            cur.execute(_as_query(statement), params, prepare=prepare)
            return cur.fetchall()

    def fetchone(
        self, statement: str, params: Params | None = None, *, prepare: bool | None = None
    ) -> Row | None:
        with self._errors(), self._conn.cursor() as cur:
            cur.execute(_as_query(statement), params, prepare=prepare)
            return cur.fetchone()

    def fetchval(
        self, statement: str, params: Params | None = None, *, prepare: bool | None = None
    ) -> Any:
        """The first column of the first row (``None`` when there is no row)."""
        row = self.fetchone(statement, params, prepare=prepare)
        return None if row is None else row[0]

    def run_script(self, script: str) -> None:
        """Run several ``;``-separated statements in one simple-query message.

        Like ``prisma migrate deploy``, the server runs the whole text as one
        implicit transaction (unless it holds its own BEGIN/COMMIT).
        """
        with self._errors():
            self._conn.execute(_as_query(script))

    def copy_rows(
        self,
        table: str,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        *,
        schema: str = "public",
    ) -> int:
        """``COPY schema.table (columns) FROM STDIN`` the given rows; return the count.

        Values are sent in text format: ``None`` is NULL, ``str`` goes as is
        (JSON documents for jsonb columns must already be serialised).
        """
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(schema, table), sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        count = 0
        with self._errors(), self._conn.cursor() as cur, cur.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
        return count

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A transaction block: committed on success, rolled back on any error."""
        with self._errors(), self._conn.transaction():
            yield

    # -- lifecycle --------------------------------------------------------
    def close(self) -> None:
        self._conn.close()

    def abort(self) -> None:
        """Shut the connection's socket down; callable from another thread.

        A statement blocked on a server that does not answer (frozen,
        partitioned) then fails at once with a ``connection_lost`` error in
        the thread that runs it. The file descriptor stays owned by libpq.
        """
        try:
            fd = self._conn.pgconn.socket
        except psycopg.Error:
            return
        try:
            dup = socket.socket(fileno=os.dup(fd))
        except OSError:
            return
        with dup, contextlib.suppress(OSError):
            dup.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def connect(
    dsn: str,
    *,
    application_name: str,
    autocommit: bool = True,
    connect_timeout: float = 10.0,
    statement_timeout_ms: int | None = None,
    prepare_threshold: int | None = 5,
) -> AdminConnection:
    """Open a connection that reports ``application_name`` in pg_stat_activity.

    ``prepare_threshold`` is psycopg's automatic preparation (``None``
    disables it); statements run with ``prepare=True`` are prepared at once.
    """
    options: dict[str, Any] = {
        "application_name": application_name,
        "connect_timeout": max(1, round(connect_timeout)),
    }
    if statement_timeout_ms is not None:
        options["options"] = f"-c statement_timeout={int(statement_timeout_ms)}"
    try:
        conn: psycopg.Connection[Row] = psycopg.Connection.connect(
            dsn, autocommit=autocommit, prepare_threshold=prepare_threshold, **options
        )
    except psycopg.Error as exc:
        raise _translate(exc, None) from exc
    return AdminConnection(conn)


def wait_for_server(dsn: str, *, timeout: float = 30.0, interval: float = 0.1) -> None:
    """Retry connecting until the server accepts sessions (e.g. right after start)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with connect(dsn, application_name="gecko-exporter-admin", connect_timeout=2) as conn:
                conn.fetchval("SELECT 1")
        except AdminError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(interval)
        else:
            return


def make_dsn(**params: str | int | None) -> str:
    """A key=value connection string of the parameters (``None`` leaves one out).

    psycopg's :func:`make_conninfo` quotes every value for libpq (spaces, quotes,
    backslashes, ``@``, ``/``, ``%``, any Unicode), so a password is read back
    exactly as given.
    """
    return make_conninfo("", **params)


def dsn_replace(dsn: str, **params: str | int | None) -> str:
    """The DSN with some libpq parameters replaced (``None`` removes one).

    :func:`conninfo_to_dict` reads what libpq makes of ``dsn`` (URI or
    key=value), the new values are merged in and :func:`make_dsn` writes the
    result, always as key=value conninfo.
    """
    return make_dsn(**{**conninfo_to_dict(dsn), **params})


def dsn_params(dsn: str) -> dict[str, str]:
    """libpq's parameters of the DSN (the password too: never log them)."""
    return {key: str(value) for key, value in conninfo_to_dict(dsn).items() if value is not None}


def dsn_without_password(dsn: str) -> str:
    """The DSN with its password removed entirely (safe to print)."""
    return dsn_replace(dsn, password=None)


def psql_command(dsn: str, *, show_password: bool = True) -> str:
    """A shell line that opens ``psql`` on the DSN's database (for the demo's banner).

    Host, port, user and database become ``psql`` options; the password, when
    asked for, goes into ``PGPASSWORD`` (only for throwaway demo credentials).
    """
    parts = conninfo_to_dict(dsn)
    words = ["psql"]
    for option, key in (("-h", "host"), ("-p", "port"), ("-U", "user"), ("-d", "dbname")):
        value = parts.get(key)
        if value:
            words += [option, shlex.quote(str(value))]
    password = parts.get("password")
    if show_password and password:
        words.insert(0, f"PGPASSWORD={shlex.quote(str(password))}")
    return " ".join(words)
