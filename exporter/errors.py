"""Exception hierarchy of gecko-exporter."""

from __future__ import annotations


class ExporterError(Exception):
    """Base class of every error raised on purpose by gecko-exporter."""


class SettingsError(ExporterError):
    """Invalid configuration: one line naming the field and the problem."""


class DatabaseError(ExporterError):
    """A database round trip failed.

    ``reason`` is a bounded label value used in
    ``gecko_probe_failures_total{reason}``; ``reached`` tells whether the server
    answered at all (a query error) or not (down, frozen, refused).
    """

    reason = "query_error"
    reached = True


class DatabaseUnavailable(DatabaseError):
    """The server could not be reached (refused, down, frozen, auth failed)."""

    reason = "unavailable"
    reached = False


class StatementTimeout(DatabaseError):
    """The server cancelled a statement at statement_timeout (SQLSTATE 57014)."""

    reason = "timeout"


class LockTimeout(DatabaseError):
    """A lock was not granted within lock_timeout (SQLSTATE 55P03)."""

    reason = "lock_timeout"
