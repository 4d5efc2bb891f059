"""The exporter's runtime configuration: frozen dataclasses, no pydantic.

The long-running daemon holds a :class:`Config` and never imports pydantic
(issue 12 §3: pydantic, pydantic-settings and pydantic-core cost 13-17 MiB of
resident memory). :mod:`exporter.settings` validates these same classes with
pydantic-settings (file, environment, flags), in a short-lived child process for
``gecko-exporter run`` (:mod:`exporter.config_process`).

Each field is declared once, here: bounds are ``annotated_types`` constraints that
pydantic enforces, ``__pydantic_config__`` forbids unknown keys, and checks that
need code are ``__post_init__`` methods raising :class:`FieldError` (pydantic
reports it at the section; the loader adds the field named in the error).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen

from exporter.config_files import read_bounded_text
from exporter.db.dsn import mask_dsn, parse_dsn, validate_dsn
from exporter.errors import SettingsError
from exporter.probes.indexes import DEFAULT_CRITICAL_INDEXES
from exporter.probes.migrations import PRISMA_MIGRATE_LOCK_KEY

DEFAULT_PORT = 8187
#: the DSN files are read with a bound (``/dev/zero`` is an error)
MAX_DSN_BYTES = 64 << 10
#: every class below: an unknown key is an error (pydantic reads this plain dict)
_FORBID_EXTRA = {"extra": "forbid"}

PositiveSeconds = Annotated[float, Gt(0), Le(86400)]
Identifier = Annotated[str, MinLen(1), MaxLen(63)]


class FieldError(ValueError):
    """A check of a configuration section failed; ``field`` names the field (None: the section)."""

    def __init__(self, field_name: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field_name
        self.message = message


class Secret:
    """A secret string: shown as ``**********`` by ``str``, ``repr`` and :meth:`Config.masked`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __str__(self) -> str:
        return "**********"

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __getstate__(self) -> str:
        return self._value

    def __setstate__(self, state: str) -> None:
        self._value = state

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Callable[[Any], Any]) -> Any:
        """Validated as a string (like pydantic's SecretStr), then wrapped."""
        del source, handler
        from pydantic_core import core_schema  # noqa: PLC0415 - only in the settings loader

        return core_schema.no_info_after_validator_function(cls, core_schema.str_schema())


def _match(pattern: str, value: str, field_name: str) -> None:
    """pydantic's ``pattern`` check and message; ``^...$`` means the whole value."""
    if re.fullmatch(pattern.removeprefix("^").removesuffix("$"), value) is None:
        raise FieldError(field_name, f"String should match pattern '{pattern}'")


def _no_duplicates(names: list[str], what: str, field_name: str | None) -> None:
    """Raise :class:`FieldError` naming every name given more than once."""
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise FieldError(field_name, f"duplicate {what} name(s): {', '.join(dupes)}")


@dataclass(frozen=True, kw_only=True)
class ProbeSettings:
    """Cadence of one probe."""

    __pydantic_config__ = _FORBID_EXTRA

    enabled: bool = True
    interval_seconds: PositiveSeconds
    timeout_seconds: PositiveSeconds

    @property
    def statement_timeout_seconds(self) -> float:
        """Server-side statement_timeout: always below the probe's own timeout."""
        return round(self.timeout_seconds * 0.8, 3)


def check_probe_name(name: str) -> None:
    """Raise :class:`FieldError` (at ``probes``) unless ``name`` is a known probe."""
    if name not in DEFAULT_PROBES:
        known = ", ".join(DEFAULT_PROBES)
        raise FieldError("probes", f"unknown probe {name!r} (known: {known})")


def _probe(interval: float, timeout: float) -> ProbeSettings:
    return ProbeSettings(interval_seconds=float(interval), timeout_seconds=float(timeout))


DEFAULT_PROBES: dict[str, ProbeSettings] = {
    "server": _probe(60, 5),
    "connections": _probe(5, 3),
    "slow_queries": _probe(1, 2),
    "scan_lookup": _probe(5, 3),
    "report": _probe(15, 10),
    # issue #3: health and migration signals, cadence by cost (see docs/metrics.md)
    "indexes": _probe(60, 5),
    "plans": _probe(60, 10),
    "tables": _probe(60, 10),
    "database": _probe(15, 5),
    "bloat": _probe(600, 30),
    "statements": _probe(60, 10),
    "locks": _probe(5, 3),
    "migrations": _probe(15, 5),
    # issue 11 §2: the PgBouncer admin console, on a lane of its own (only when configured)
    "pgbouncer": _probe(5, 3),
}
#: every probe name (a bounded label value), in scheduling order
PROBE_NAMES: tuple[str, ...] = tuple(DEFAULT_PROBES)


@dataclass(frozen=True, kw_only=True)
class PoolSettings:
    """An application connection pool, recognised by application_name and/or user.

    ``size`` is one process's pool. An ``application_name`` ending in ``*`` is a
    prefix: each distinct matched application_name is one instance (process) of the
    pool; without ``*`` each distinct client address is one (docs: README).
    """

    __pydantic_config__ = _FORBID_EXTRA

    name: str
    application_name: str | None = None
    usename: str | None = None
    size: Annotated[int, Gt(0), Le(100000)]

    def __post_init__(self) -> None:
        _match(r"^[a-z][a-z0-9_-]{0,31}$", self.name, "name")
        if self.application_name is not None and "*" in self.application_name[:-1]:
            raise FieldError("application_name", "'*' is allowed only at the end (a prefix match)")
        if self.application_name is None and self.usename is None:
            raise FieldError(None, "needs application_name and/or usename to match connections")
        if self.name == "server":
            raise FieldError(None, "'server' is reserved for the server-wide ratio")


@dataclass(frozen=True, kw_only=True)
class ScanLookupSettings:
    """Inputs of the scan-lookup probe."""

    __pydantic_config__ = _FORBID_EXTRA

    inputs: Annotated[list[str], MaxLen(1000)] = field(default_factory=list)
    window_seconds: PositiveSeconds = 900.0
    sample_size: Annotated[int, Ge(1), Le(1000)] = 50
    sample_refresh_seconds: PositiveSeconds = 300.0


@dataclass(frozen=True, kw_only=True)
class TablesSettings:
    """Which tables get per-table series (``tables`` and ``bloat`` probes)."""

    __pydantic_config__ = _FORBID_EXTRA

    #: schemas whose tables are exported; default: ``app_schema`` only
    schemas: Annotated[list[Identifier], MinLen(1), MaxLen(20)] | None = None
    #: at most this many tables (the largest by pages) get per-table series
    max_tables: Annotated[int, Ge(1), Le(1000)] = 30


@dataclass(frozen=True, kw_only=True)
class StatementsSettings:
    """The pg_stat_statements probe."""

    __pydantic_config__ = _FORBID_EXTRA

    #: statements with the most execution time in the last interval
    top_n: Annotated[int, Ge(1), Le(200)] = 20
    #: leave out the exporter's own role (its probes are not app traffic)
    exclude_own_role: bool = True
    #: issue 11 §4: a statement that entered the top N keeps its series until it has been
    #: out of the top 2N this long; at most max_series statements get series
    retention_seconds: Annotated[float, Ge(0), Le(7 * 86400)] = 900.0
    max_series: Annotated[int, Ge(1), Le(1000)] = 100
    #: issue 11 §1: least time between two reads of query texts (to name new queryids)
    text_refresh_seconds: Annotated[float, Ge(0), Le(86400)] = 600.0

    def __post_init__(self) -> None:
        if self.max_series < self.top_n:
            raise FieldError(None, "max_series must be at least top_n")


@dataclass(frozen=True, kw_only=True)
class BloatSettings:
    """Bloat estimation: catalog estimate by default, pgstattuple_approx on request."""

    __pydantic_config__ = _FORBID_EXTRA

    #: use pgstattuple_approx() when the extension exists in the database
    pgstattuple: bool = False
    #: larger tables keep the catalog estimate (pgstattuple_approx reads pages)
    pgstattuple_max_table_bytes: Annotated[int, Ge(0)] = 1 << 30


@dataclass(frozen=True, kw_only=True)
class MigrationsSettings:
    """Prisma migrations, index builds and invalid indexes."""

    __pydantic_config__ = _FORBID_EXTRA

    table: Identifier = "_prisma_migrations"
    advisory_lock_key: Annotated[int, Ge(0), Lt(1 << 63)] = PRISMA_MIGRATE_LOCK_KEY
    max_invalid_indexes: Annotated[int, Ge(1), Le(200)] = 20
    max_index_builds: Annotated[int, Ge(1), Le(50)] = 10


@dataclass(frozen=True, kw_only=True)
class MaintenanceSettings:
    """Sessions that are planned maintenance, not application queries (slow_queries probe).

    Backup tools (by application_name) and VACUUM / ANALYZE / CREATE INDEX / REINDEX /
    CLUSTER statements are recognised without configuration; these add kind ``other``.
    """

    __pydantic_config__ = _FORBID_EXTRA

    roles: Annotated[list[Identifier], MaxLen(50)] = field(default_factory=list)
    application_names: Annotated[list[Identifier], MaxLen(50)] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class InvariantSettings:
    """A named read-only data check for ``gecko-exporter verify``: it must return no rows.

    ``sql`` is kept without surrounding blanks and a trailing ``;``.
    """

    __pydantic_config__ = _FORBID_EXTRA

    name: str
    sql: Annotated[str, MinLen(1), MaxLen(20000)]

    def __post_init__(self) -> None:
        _match(r"^[a-z][a-z0-9_]{0,62}$", self.name, "name")
        text = self.sql.strip().rstrip(";").strip()
        if not text:
            raise FieldError("sql", "is empty")
        if ";" in text:
            raise FieldError("sql", "must be a single query (no ';')")
        object.__setattr__(self, "sql", text)


#: Shipped data invariants for the Gecko schema (migration-safety analysis, "Data validation").
#: App/address stub scans are ``done`` without a normalizedInput by design, so the
#: analysis's "done scans missing normalizedInput" check is limited to URL scans.
DEFAULT_INVARIANTS: tuple[InvariantSettings, ...] = (
    InvariantSettings(
        name="done_scans_missing_normalized_input",
        sql='SELECT "id" FROM "Scan" WHERE "status" = \'done\' AND "targetType" = \'url\' '
        'AND "normalizedInput" IS NULL',
    ),
    InvariantSettings(
        name="done_scans_missing_finished_at",
        sql='SELECT "id" FROM "Scan" WHERE "status" = \'done\' AND "finishedAt" IS NULL',
    ),
    InvariantSettings(
        name="scans_with_unknown_status",
        sql='SELECT "id" FROM "Scan" '
        "WHERE \"status\" NOT IN ('queued', 'running', 'done', 'error')",
    ),
    InvariantSettings(
        name="scans_with_score_out_of_range",
        sql='SELECT "id" FROM "Scan" WHERE "score" < 0 OR "score" > 100',
    ),
)


@dataclass(frozen=True, kw_only=True)
class PgBouncerSettings:
    """The PgBouncer admin console probe (``pgbouncer_url`` / ``pgbouncer_url_file``)."""

    __pydantic_config__ = _FORBID_EXTRA

    #: at most this many (database, user) pools get series (the busiest first)
    max_pools: Annotated[int, Ge(1), Le(500)] = 50
    #: at most this many application_names get a waiting-clients series (the rest: "(other)")
    max_applications: Annotated[int, Ge(1), Le(200)] = 20


@dataclass(frozen=True, kw_only=True)
class GateSettings:
    """``gecko-exporter preflight`` and ``verify`` (docs/migration-gate.md)."""

    __pydantic_config__ = _FORBID_EXTRA

    #: the Prisma version that applies the migrations (lint: how Prisma sends a file)
    prisma_version: str = "5.22"
    #: statement_timeout of the gate's own session (each check is one statement)
    statement_timeout_seconds: Annotated[float, Gt(0), Le(300)] = 5.0
    #: a migration's lock_timeout when its file sets none (the safe template's value)
    default_lock_timeout_seconds: Annotated[float, Gt(0), Le(3600)] = 5.0
    #: throughput assumptions of the lock-duration estimate (bytes per second)
    scan_bytes_per_second: Annotated[float, Gt(0)] = 200.0 * 1024 * 1024
    rewrite_bytes_per_second: Annotated[float, Gt(0)] = 50.0 * 1024 * 1024
    #: window between the two traffic samples
    traffic_sample_seconds: Annotated[float, Ge(0.1), Le(60)] = 1.0
    #: a pool (or the server) at or above this ratio is a no-go
    pool_max_ratio: Annotated[float, Gt(0), Le(1)] = 0.8
    #: newest archived WAL older than this is a no-go
    archive_max_age_seconds: Annotated[float, Gt(0)] = 3600.0
    #: treat "backup freshness not visible" as a no-go instead of a warning
    require_backup_visibility: bool = False
    #: latency probe runs per verify (and per --baseline)
    latency_runs: Annotated[int, Ge(1), Le(1000)] = 20
    scan_lookup_p95_max_seconds: PositiveSeconds = 0.1
    report_p95_max_seconds: PositiveSeconds = 2.0
    #: with --baseline: p95 above this multiple of the baseline fails...
    max_latency_ratio: Annotated[float, Ge(1), Le(1000)] = 2.0
    #: ...unless it is below this floor (the dedupe target; below it a ratio is mostly noise)
    latency_ratio_floor_seconds: Annotated[float, Ge(0), Le(60)] = 0.05
    invariants: Annotated[list[InvariantSettings], MaxLen(100)] = field(
        default_factory=lambda: list(DEFAULT_INVARIANTS)
    )

    def __post_init__(self) -> None:
        _match(r"^v?\d+(\.\d+){0,2}$", self.prisma_version, "prisma_version")
        _no_duplicates([i.name for i in self.invariants], "invariant", "invariants")


@dataclass(frozen=True, kw_only=True)
class Config:
    """Effective configuration of the exporter (built by :func:`exporter.settings.load_config`)."""

    __pydantic_config__ = _FORBID_EXTRA

    #: the YAML file (``--config`` / ``GECKO_CONFIG``); not settable in the file itself
    config: Path | None = None
    database_url: Secret | None = None
    database_url_file: Path | None = None
    #: optional PgBouncer admin console (a secret like the DSN): database ``pgbouncer``
    pgbouncer_url: Secret | None = None
    pgbouncer_url_file: Path | None = None
    listen_address: str = f"0.0.0.0:{DEFAULT_PORT}"
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: Prometheus web configuration file (exporter-toolkit format): TLS and basic auth
    web_config_file: Path | None = None

    application_name: Annotated[str, MinLen(1), MaxLen(63)] = "gecko-exporter"
    app_schema: Annotated[str, MinLen(1), MaxLen(63)] = "public"
    connect_timeout_seconds: Annotated[float, Ge(1), Le(300)] = 5.0
    lock_timeout_seconds: Annotated[float, Gt(0), Le(60)] = 0.1
    reconnect_backoff_initial_seconds: Annotated[float, Gt(0), Le(60)] = 0.25
    reconnect_backoff_max_seconds: Annotated[float, Gt(0), Le(600)] = 2.0
    #: after an authentication failure every lane waits on one shared backoff (doubling)
    auth_failure_backoff_initial_seconds: Annotated[float, Gt(0), Le(3600)] = 10.0
    auth_failure_backoff_max_seconds: Annotated[float, Gt(0), Le(86400)] = 300.0
    up_stale_seconds: Annotated[float, Gt(0), Le(3600)] = 10.0

    slow_query_threshold_seconds: PositiveSeconds = 5.0
    slow_query_log_text: bool = True
    slow_query_text_max_length: Annotated[int, Ge(0), Le(10000)] = 300
    #: databases whose application queries count too (default: only the monitored one)
    slow_query_databases: Annotated[list[Identifier], MaxLen(20)] = field(default_factory=list)
    maintenance: MaintenanceSettings = field(default_factory=MaintenanceSettings)

    #: probes given in the configuration, each merged over its default by the loader
    probes: dict[str, ProbeSettings] = field(default_factory=dict)
    pools: Annotated[list[PoolSettings], MaxLen(50)] = field(default_factory=list)
    scan_lookup: ScanLookupSettings = field(default_factory=ScanLookupSettings)

    critical_indexes: Annotated[list[Identifier], MaxLen(50)] = field(
        default_factory=lambda: list(DEFAULT_CRITICAL_INDEXES)
    )
    tables: TablesSettings = field(default_factory=TablesSettings)
    statements: StatementsSettings = field(default_factory=StatementsSettings)
    bloat: BloatSettings = field(default_factory=BloatSettings)
    migrations: MigrationsSettings = field(default_factory=MigrationsSettings)
    gate: GateSettings = field(default_factory=GateSettings)
    pgbouncer: PgBouncerSettings = field(default_factory=PgBouncerSettings)

    # -- validation (checks across fields; the loader reports FieldError as one line) --
    def __post_init__(self) -> None:
        try:
            split_host_port(self.listen_address)
        except ValueError as exc:
            raise FieldError("listen_address", str(exc)) from None
        for name, check in (
            ("database_url", validate_dsn),
            ("pgbouncer_url", validate_pgbouncer_url),
        ):
            secret = getattr(self, name)
            if secret is not None:
                try:
                    check(secret.get_secret_value())
                except ValueError as exc:
                    raise FieldError(name, str(exc)) from None
        for name in self.probes:
            check_probe_name(name)
        _no_duplicates([p.name for p in self.pools], "pool", "pools")
        if self.database_url is not None and self.database_url_file is not None:
            raise FieldError(None, "set only one of database_url and database_url_file")
        if self.pgbouncer_url is not None and self.pgbouncer_url_file is not None:
            raise FieldError(None, "set only one of pgbouncer_url and pgbouncer_url_file")
        shortest = min(p.timeout_seconds for p in self.probe_settings().values())
        if self.lock_timeout_seconds >= shortest:
            raise FieldError(None, "lock_timeout_seconds must be below every probe timeout")

    # -- derived values -----------------------------------------------------
    def probe_settings(self) -> dict[str, ProbeSettings]:
        """Every known probe with its effective cadence."""
        return {name: self.probes.get(name, default) for name, default in DEFAULT_PROBES.items()}

    def table_schemas(self) -> list[str]:
        """Schemas whose tables and indexes the health probes cover."""
        return list(self.tables.schemas) if self.tables.schemas else [self.app_schema]

    def dsn(self) -> str:
        """The database DSN, read from the secret file when configured."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        if self.database_url_file is not None:
            file = self.database_url_file
            return _read_secret_file(file, "database_url_file", "DSN", validate_dsn)
        raise SettingsError(
            "database_url: not set (set GECKO_DATABASE_URL or GECKO_DATABASE_URL_FILE, "
            "or use `gecko-exporter demo` for a bundled database)"
        )

    def pgbouncer_dsn(self) -> str | None:
        """The PgBouncer admin console URL (None: not configured), read from its file."""
        if self.pgbouncer_url is not None:
            return self.pgbouncer_url.get_secret_value()
        if self.pgbouncer_url_file is None:
            return None
        return _read_secret_file(
            self.pgbouncer_url_file, "pgbouncer_url_file", "URL", validate_pgbouncer_url
        )

    def listen(self) -> tuple[str, int]:
        return split_host_port(self.listen_address)

    def masked(self) -> dict[str, Any]:
        """The effective configuration as plain data (JSON types), secrets masked."""
        data: dict[str, Any] = plain_data(self)
        # from GECKO_*_URL or its secret file: what the exporter will use, masked (a DSN that
        # is not set or unreadable stays None here: it is reported where it is used)
        for key, read in (("database_url", self.dsn), ("pgbouncer_url", self.pgbouncer_dsn)):
            try:
                value = read()
            except SettingsError:
                value = None
            data[key] = mask_dsn(value) if value is not None else None
        data["probes"] = {name: plain_data(probe) for name, probe in self.probe_settings().items()}
        return data


def plain_data(value: Any) -> Any:
    """A configuration value as JSON types: sections as mappings, paths as text, secrets masked."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Secret | Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [plain_data(item) for item in value]
    if isinstance(value, dict):
        return {str(key): plain_data(item) for key, item in value.items()}
    return value


def validate_pgbouncer_url(url: str) -> None:
    """A valid DSN for the admin console; ``ValueError`` never quoting it.

    The console is the special database ``pgbouncer`` and rejects the ``options``
    startup parameter.
    """
    validate_dsn(url)
    params = parse_dsn(url)
    if (params.get("dbname") or params.get("user")) != "pgbouncer":
        raise ValueError("must name the admin console database 'pgbouncer' (…/pgbouncer)")
    if "options" in params:
        raise ValueError("options: not accepted by the PgBouncer admin console")


def _read_secret_file(
    path: Path, field_name: str, what: str, validate: Callable[[str], None]
) -> str:
    """A connection string from its secret file, validated; one SettingsError line never
    quoting it (``validate`` raises ValueError with a reason that quotes nothing)."""
    value = read_bounded_text(path, MAX_DSN_BYTES, f"{field_name} {path}").strip()
    try:
        validate(value)
    except ValueError as exc:
        raise SettingsError(f"{field_name}: {what} {exc}") from None
    return value


def split_host_port(value: str) -> tuple[str, int]:
    """Parse ``host:port`` / ``[v6]:port`` / ``:port``; raise ValueError with a reason.

    The reason never quotes the value: a flag's value may be a pasted DSN.
    """
    if value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
    else:
        host, sep, port_text = value.rpartition(":")
    if not sep:
        raise ValueError("not host:port (e.g. 0.0.0.0:8187 or [::]:8187)")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError("port is not a number between 1 and 65535")
    try:  # what bind() does with a name: a byte that is not UTF-8 or a label > 63 fails there
        host.encode("idna")
    except UnicodeError:
        raise ValueError("host is not a valid host name or address") from None
    return host or "0.0.0.0", int(port_text)  # noqa: S104 - documented default: all interfaces
