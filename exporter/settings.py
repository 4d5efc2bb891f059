"""Configuration: defaults < YAML file < environment (GECKO_*) < command-line flags.

Every problem is reported as one :class:`~exporter.errors.SettingsError` line
naming the field, so the CLI can print it and exit 2 without a traceback:
unknown fields in the file *and* unknown ``GECKO_*`` variables (a typo must not
be ignored), duplicate YAML keys, files that are too large or not UTF-8.

The YAML file is read by pydantic-settings' own YAML source
(:class:`BoundedYamlSource`), its path given by ``--config`` or ``GECKO_CONFIG``.
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)
from pydantic_settings import SettingsError as SourceError
from pydantic_settings.sources import ConfigFileSourceType

from exporter.db.dsn import mask_dsn, parse_dsn, validate_dsn
from exporter.errors import SettingsError
from exporter.probes.indexes import DEFAULT_CRITICAL_INDEXES
from exporter.probes.migrations import PRISMA_MIGRATE_LOCK_KEY

ENV_PREFIX = "GECKO_"
DEFAULT_PORT = 8187
#: the config file and the DSN file are read with a bound (``/dev/zero`` is an error)
MAX_CONFIG_BYTES = 1 << 20
MAX_DSN_BYTES = 64 << 10
#: ``GECKO_*`` variables that are not settings but belong to other components; every
#: other ``GECKO_*`` variable must name a setting (a typo is an error, like an unknown
#: YAML key). Add a variable here when a component documents one.
OTHER_ENV_VARS = frozenset(
    {
        "GECKO_TEST_DSN",  # tests/conftest.py: an existing server for the test suite
        "GECKO_TEST_SCANS",  # tests/conftest.py: size of the test data set
        "GECKO_PROMETHEUS_BIN",  # tests/support/promstack.py
        "GECKO_ALERTMANAGER_BIN",  # tests/support/promstack.py
        "GECKO_PG_OS_USER",  # gecko_demo/cluster.py: OS user of the demo server
    }
)

PositiveSeconds = Annotated[float, Field(gt=0, le=86400)]


def _no_duplicates(names: list[str], what: str) -> None:
    """Raise ``ValueError`` naming every name given more than once."""
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate {what} name(s): {', '.join(dupes)}")


class ProbeSettings(BaseModel):
    """Cadence of one probe."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    interval_seconds: PositiveSeconds
    timeout_seconds: PositiveSeconds

    @property
    def statement_timeout_seconds(self) -> float:
        """Server-side statement_timeout: always below the probe's own timeout."""
        return round(self.timeout_seconds * 0.8, 3)


def _probe(interval: float, timeout: float) -> ProbeSettings:
    return ProbeSettings(interval_seconds=interval, timeout_seconds=timeout)


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

Identifier = Annotated[str, Field(min_length=1, max_length=63)]


class PoolSettings(BaseModel):
    """An application connection pool, recognised by application_name and/or user.

    ``size`` is one process's pool. An ``application_name`` ending in ``*`` is a
    prefix: each distinct matched application_name is one instance (process) of the
    pool; without ``*`` each distinct client address is one (docs: README).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
    application_name: str | None = None
    usename: str | None = None
    size: Annotated[int, Field(gt=0, le=100000)]

    @field_validator("application_name")
    @classmethod
    def _prefix_star_last(cls, value: str | None) -> str | None:
        if value is not None and "*" in value[:-1]:
            raise ValueError("'*' is allowed only at the end (a prefix match)")
        return value

    @model_validator(mode="after")
    def _needs_matcher(self) -> PoolSettings:
        if self.application_name is None and self.usename is None:
            raise ValueError("needs application_name and/or usename to match connections")
        if self.name == "server":
            raise ValueError("'server' is reserved for the server-wide ratio")
        return self


class ScanLookupSettings(BaseModel):
    """Inputs of the scan-lookup probe."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: list[str] = Field(default_factory=list, max_length=1000)
    window_seconds: PositiveSeconds = 900
    sample_size: Annotated[int, Field(ge=1, le=1000)] = 50
    sample_refresh_seconds: PositiveSeconds = 300


class TablesSettings(BaseModel):
    """Which tables get per-table series (``tables`` and ``bloat`` probes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: schemas whose tables are exported; default: ``app_schema`` only
    schemas: list[Identifier] | None = Field(default=None, min_length=1, max_length=20)
    #: at most this many tables (the largest by pages) get per-table series
    max_tables: Annotated[int, Field(ge=1, le=1000)] = 30


class StatementsSettings(BaseModel):
    """The pg_stat_statements probe."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: statements with the most execution time in the last interval
    top_n: Annotated[int, Field(ge=1, le=200)] = 20
    #: leave out the exporter's own role (its probes are not app traffic)
    exclude_own_role: bool = True
    #: issue 11 §4: a statement that entered the top N keeps its series until it has been
    #: out of the top 2N this long; at most max_series statements get series
    retention_seconds: Annotated[float, Field(ge=0, le=7 * 86400)] = 900
    max_series: Annotated[int, Field(ge=1, le=1000)] = 100
    #: issue 11 §1: least time between two reads of query texts (to name new queryids)
    text_refresh_seconds: Annotated[float, Field(ge=0, le=86400)] = 600

    @model_validator(mode="after")
    def _cap_holds_top_n(self) -> StatementsSettings:
        if self.max_series < self.top_n:
            raise ValueError("max_series must be at least top_n")
        return self


class BloatSettings(BaseModel):
    """Bloat estimation: catalog estimate by default, pgstattuple_approx on request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: use pgstattuple_approx() when the extension exists in the database
    pgstattuple: bool = False
    #: larger tables keep the catalog estimate (pgstattuple_approx reads pages)
    pgstattuple_max_table_bytes: Annotated[int, Field(ge=0)] = 1 << 30


class MigrationsSettings(BaseModel):
    """Prisma migrations, index builds and invalid indexes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: Identifier = "_prisma_migrations"
    advisory_lock_key: Annotated[int, Field(ge=0, lt=1 << 63)] = PRISMA_MIGRATE_LOCK_KEY
    max_invalid_indexes: Annotated[int, Field(ge=1, le=200)] = 20
    max_index_builds: Annotated[int, Field(ge=1, le=50)] = 10


class MaintenanceSettings(BaseModel):
    """Sessions that are planned maintenance, not application queries (slow_queries probe).

    Backup tools (by application_name) and VACUUM / ANALYZE / CREATE INDEX / REINDEX /
    CLUSTER statements are recognised without configuration; these add kind ``other``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    roles: list[Identifier] = Field(default_factory=list, max_length=50)
    application_names: list[Identifier] = Field(default_factory=list, max_length=50)


class InvariantSettings(BaseModel):
    """A named read-only data check for ``gecko-exporter verify``: it must return no rows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
    sql: Annotated[str, Field(min_length=1, max_length=20000)]

    @field_validator("sql")
    @classmethod
    def _one_query(cls, value: str) -> str:
        text = value.strip().rstrip(";").strip()
        if not text:
            raise ValueError("is empty")
        if ";" in text:
            raise ValueError("must be a single query (no ';')")
        return text


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


class PgBouncerSettings(BaseModel):
    """The PgBouncer admin console probe (``pgbouncer_url`` / ``pgbouncer_url_file``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: at most this many (database, user) pools get series (the busiest first)
    max_pools: Annotated[int, Field(ge=1, le=500)] = 50
    #: at most this many application_names get a waiting-clients series (the rest: "(other)")
    max_applications: Annotated[int, Field(ge=1, le=200)] = 20


class GateSettings(BaseModel):
    """``gecko-exporter preflight`` and ``verify`` (docs/migration-gate.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: the Prisma version that applies the migrations (lint: how Prisma sends a file)
    prisma_version: Annotated[str, Field(pattern=r"^v?\d+(\.\d+){0,2}$")] = "5.22"
    #: statement_timeout of the gate's own session (each check is one statement)
    statement_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 5.0
    #: a migration's lock_timeout when its file sets none (the safe template's value)
    default_lock_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 5.0
    #: throughput assumptions of the lock-duration estimate (bytes per second)
    scan_bytes_per_second: Annotated[float, Field(gt=0)] = 200 * 1024 * 1024
    rewrite_bytes_per_second: Annotated[float, Field(gt=0)] = 50 * 1024 * 1024
    #: window between the two traffic samples
    traffic_sample_seconds: Annotated[float, Field(ge=0.1, le=60)] = 1.0
    #: a pool (or the server) at or above this ratio is a no-go
    pool_max_ratio: Annotated[float, Field(gt=0, le=1)] = 0.8
    #: newest archived WAL older than this is a no-go
    archive_max_age_seconds: Annotated[float, Field(gt=0)] = 3600.0
    #: treat "backup freshness not visible" as a no-go instead of a warning
    require_backup_visibility: bool = False
    #: latency probe runs per verify (and per --baseline)
    latency_runs: Annotated[int, Field(ge=1, le=1000)] = 20
    scan_lookup_p95_max_seconds: PositiveSeconds = 0.1
    report_p95_max_seconds: PositiveSeconds = 2.0
    #: with --baseline: p95 above this multiple of the baseline fails...
    max_latency_ratio: Annotated[float, Field(ge=1, le=1000)] = 2.0
    #: ...unless it is below this floor (the dedupe target; below it a ratio is mostly noise)
    latency_ratio_floor_seconds: Annotated[float, Field(ge=0, le=60)] = 0.05
    invariants: list[InvariantSettings] = Field(
        default_factory=lambda: list(DEFAULT_INVARIANTS), max_length=100
    )

    @field_validator("invariants")
    @classmethod
    def _unique_invariants(cls, value: list[InvariantSettings]) -> list[InvariantSettings]:
        _no_duplicates([i.name for i in value], "invariant")
        return value


class Settings(BaseSettings):
    """Effective configuration of the exporter."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    #: the YAML file (``--config`` / ``GECKO_CONFIG``); not settable in the file itself
    config: Path | None = None
    database_url: SecretStr | None = None
    database_url_file: Path | None = None
    #: optional PgBouncer admin console (a secret like the DSN): database ``pgbouncer``
    pgbouncer_url: SecretStr | None = None
    pgbouncer_url_file: Path | None = None
    listen_address: str = f"0.0.0.0:{DEFAULT_PORT}"
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: Prometheus web configuration file (exporter-toolkit format): TLS and basic auth
    web_config_file: Path | None = None

    application_name: Annotated[str, Field(min_length=1, max_length=63)] = "gecko-exporter"
    app_schema: Annotated[str, Field(min_length=1, max_length=63)] = "public"
    connect_timeout_seconds: Annotated[float, Field(ge=1, le=300)] = 5
    lock_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 0.1
    reconnect_backoff_initial_seconds: Annotated[float, Field(gt=0, le=60)] = 0.25
    reconnect_backoff_max_seconds: Annotated[float, Field(gt=0, le=600)] = 2.0
    #: after an authentication failure every lane waits on one shared backoff (doubling)
    auth_failure_backoff_initial_seconds: Annotated[float, Field(gt=0, le=3600)] = 10.0
    auth_failure_backoff_max_seconds: Annotated[float, Field(gt=0, le=86400)] = 300.0
    up_stale_seconds: Annotated[float, Field(gt=0, le=3600)] = 10.0

    slow_query_threshold_seconds: PositiveSeconds = 5.0
    slow_query_log_text: bool = True
    slow_query_text_max_length: Annotated[int, Field(ge=0, le=10000)] = 300
    #: databases whose application queries count too (default: only the monitored one)
    slow_query_databases: list[Identifier] = Field(default_factory=list, max_length=20)
    maintenance: MaintenanceSettings = Field(default_factory=MaintenanceSettings)

    probes: dict[str, ProbeSettings] = Field(default_factory=dict)
    pools: list[PoolSettings] = Field(default_factory=list, max_length=50)
    scan_lookup: ScanLookupSettings = Field(default_factory=ScanLookupSettings)

    critical_indexes: list[Identifier] = Field(
        default_factory=lambda: list(DEFAULT_CRITICAL_INDEXES), max_length=50
    )
    tables: TablesSettings = Field(default_factory=TablesSettings)
    statements: StatementsSettings = Field(default_factory=StatementsSettings)
    bloat: BloatSettings = Field(default_factory=BloatSettings)
    migrations: MigrationsSettings = Field(default_factory=MigrationsSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    pgbouncer: PgBouncerSettings = Field(default_factory=PgBouncerSettings)

    # -- validation ---------------------------------------------------------
    @field_validator("listen_address")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        host, port = split_host_port(value)
        del host, port
        return value

    @field_validator("database_url")
    @classmethod
    def _check_dsn(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            validate_dsn(value.get_secret_value())
        return value

    @field_validator("pgbouncer_url")
    @classmethod
    def _check_pgbouncer_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            validate_pgbouncer_url(value.get_secret_value())
        return value

    @field_validator("probes", mode="before")
    @classmethod
    def _merge_probe_defaults(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        merged: dict[str, Any] = {}
        for name, override in value.items():
            if name not in DEFAULT_PROBES:
                known = ", ".join(DEFAULT_PROBES)
                raise ValueError(f"unknown probe {name!r} (known: {known})")
            base = DEFAULT_PROBES[name].model_dump()
            if isinstance(override, Mapping):
                base.update(override)
            elif isinstance(override, ProbeSettings):
                base.update(override.model_dump())
            else:
                # ValueError, not TypeError: pydantic turns it into a validation error
                raise ValueError(  # noqa: TRY004
                    f"probe {name!r} must be a mapping (interval_seconds, ...)"
                )
            merged[name] = base
        return merged

    @field_validator("pools")
    @classmethod
    def _unique_pools(cls, value: list[PoolSettings]) -> list[PoolSettings]:
        _no_duplicates([p.name for p in value], "pool")
        return value

    @model_validator(mode="after")
    def _one_dsn_source(self) -> Settings:
        if self.database_url is not None and self.database_url_file is not None:
            raise ValueError("set only one of database_url and database_url_file")
        if self.pgbouncer_url is not None and self.pgbouncer_url_file is not None:
            raise ValueError("set only one of pgbouncer_url and pgbouncer_url_file")
        shortest = min(p.timeout_seconds for p in self.probe_settings().values())
        if self.lock_timeout_seconds >= shortest:
            raise ValueError("lock_timeout_seconds must be below every probe timeout")
        return self

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
            value = read_bounded_text(
                self.database_url_file, MAX_DSN_BYTES, f"database_url_file {self.database_url_file}"
            ).strip()
            try:
                validate_dsn(value)
            except ValueError as exc:
                raise SettingsError(f"database_url_file: DSN {exc}") from None
            return value
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
        value = read_bounded_text(
            self.pgbouncer_url_file, MAX_DSN_BYTES, f"pgbouncer_url_file {self.pgbouncer_url_file}"
        ).strip()
        try:
            validate_pgbouncer_url(value)
        except ValueError as exc:
            raise SettingsError(f"pgbouncer_url_file: URL {exc}") from None
        return value

    def listen(self) -> tuple[str, int]:
        return split_host_port(self.listen_address)

    def masked(self) -> dict[str, Any]:
        """The effective configuration as plain data, secrets masked."""
        data = self.model_dump(mode="json")
        # from GECKO_*_URL or its secret file: what the exporter will use, masked (a DSN that
        # is not set or unreadable stays None here: it is reported where it is used)
        for key, read in (("database_url", self.dsn), ("pgbouncer_url", self.pgbouncer_dsn)):
            try:
                value = read()
            except SettingsError:
                value = None
            data[key] = mask_dsn(value) if value is not None else None
        data["probes"] = {
            name: probe.model_dump(mode="json") for name, probe in self.probe_settings().items()
        }
        return data

    # -- sources --------------------------------------------------------------
    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        del dotenv_settings, file_secret_settings
        check_environment(os.environ)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_path(init_settings, env_settings)
        if path is not None:
            sources.append(BoundedYamlSource(settings_cls, yaml_file=path))
        return tuple(sources)

    @classmethod
    def from_sources(
        cls,
        *,
        config_file: Path | str | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Settings:
        """Build settings from file, environment and explicit overrides (flags).

        Raises :class:`SettingsError` with one line naming the field.
        """
        values = dict(overrides or {})
        if config_file is not None:
            values["config"] = config_file
        try:
            return cls(**values)
        except ValidationError as exc:
            raise SettingsError(_format_validation_error(exc, values)) from None
        except SourceError as exc:  # an environment value that is not valid JSON
            raise SettingsError(_format_source_error(exc)) from None
        except RecursionError:  # JSON in the environment nested beyond Python's stack
            raise SettingsError(_nesting_error()) from None


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


def _config_path(
    init_settings: PydanticBaseSettingsSource, env_settings: PydanticBaseSettingsSource
) -> Path | None:
    """The YAML file named by the ``config`` init value (flag) or ``GECKO_CONFIG``."""
    value: Any = None
    if isinstance(init_settings, InitSettingsSource):
        value = init_settings.init_kwargs.get("config")
    if value is None and isinstance(env_settings, EnvSettingsSource):
        value = env_settings.env_vars.get(f"{ENV_PREFIX}config".lower())
    return Path(value) if value else None


def check_environment(environ: Mapping[str, str]) -> None:
    """Reject ``GECKO_*`` variables that name no setting (and are not in OTHER_ENV_VARS)."""
    known = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    nested = {
        f"{ENV_PREFIX}{name.upper()}"
        for name, field in Settings.model_fields.items()
        if _accepts_nested(field.annotation)
    }
    for key in sorted(environ):
        upper = key.upper()
        if not upper.startswith(ENV_PREFIX) or upper in OTHER_ENV_VARS:
            continue
        if _is_service_link(upper, environ[key]):
            continue
        top = upper.split("__", 1)[0]
        if top in known and ("__" not in upper or top in nested):
            continue
        close = difflib.get_close_matches(top, sorted(known | OTHER_ENV_VARS), n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise SettingsError(f"{key}: unknown setting{hint}")


#: Kubernetes service links: a Service named ``gecko-<x>`` in the namespace gives every pod
#: ``GECKO_<X>_SERVICE_HOST``, ``..._PORT=tcp://...`` and so on (unless enableServiceLinks
#: is false). Recognised by name *and* value, so a typo of a setting is still an error.
_IP = r"[0-9a-fA-F.:]+"
_SERVICE_LINKS = tuple(
    (re.compile(name), re.compile(value))
    for name, value in (
        (r"GECKO_[A-Z0-9_]+_SERVICE_HOST", _IP),
        (r"GECKO_[A-Z0-9_]+_SERVICE_PORT(_[A-Z0-9_]+)?", r"[0-9]+"),
        (r"GECKO_[A-Z0-9_]+_PORT", rf"(tcp|udp|sctp)://\[?{_IP}\]?:[0-9]+"),
        (r"GECKO_[A-Z0-9_]+_PORT_[0-9]+_(TCP|UDP|SCTP)", rf"(tcp|udp|sctp)://\[?{_IP}\]?:[0-9]+"),
        (r"GECKO_[A-Z0-9_]+_PORT_[0-9]+_(TCP|UDP|SCTP)_PROTO", r"tcp|udp|sctp"),
        (r"GECKO_[A-Z0-9_]+_PORT_[0-9]+_(TCP|UDP|SCTP)_PORT", r"[0-9]+"),
        (r"GECKO_[A-Z0-9_]+_PORT_[0-9]+_(TCP|UDP|SCTP)_ADDR", _IP),
    )
)


def _is_service_link(name: str, value: str) -> bool:
    return any(n.fullmatch(name) and v.fullmatch(value) for n, v in _SERVICE_LINKS)


def _accepts_nested(annotation: Any) -> bool:
    """Whether a field takes ``GECKO_FIELD__SUB`` variables (a model or a mapping)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    if typing.get_origin(annotation) in (dict, Mapping):
        return True
    return any(_accepts_nested(arg) for arg in typing.get_args(annotation))


def read_bounded_text(path: Path, limit: int, what: str) -> str:
    """A UTF-8 text file of at most ``limit`` bytes, or one SettingsError line."""
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise SettingsError(f"{what}: cannot read ({exc.strerror or type(exc).__name__})") from None
    if len(data) > limit:
        raise SettingsError(f"{what}: larger than {limit // 1024} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{what}: not UTF-8 (invalid byte at offset {exc.start})") from None


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, rejecting duplicate keys; over-long integers stay text.

    An integer of thousands of digits would raise inside PyYAML (Python's
    int-conversion limit); kept as a string, the field's validation rejects it
    and names the field.
    """


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # unhashable: PyYAML reports it
            continue
        if duplicate:
            shown = key if isinstance(key, str) and len(key) <= 64 else "…"
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{shown}'", key_node.start_mark
            )
    return yaml.SafeLoader.construct_mapping(loader, node, deep=True)


_LONG_INTEGER = re.compile(r"[-+]?[0-9_]{100,}")


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    text = str(loader.construct_scalar(node))
    if _LONG_INTEGER.fullmatch(text):
        return text
    return yaml.SafeLoader.construct_yaml_int(loader, node)


_StrictLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def load_yaml_file(path: Path) -> dict[str, Any]:
    """The config file as a mapping of known top-level fields, or one SettingsError line."""
    what = f"config file {path}"
    text = read_bounded_text(path, MAX_CONFIG_BYTES, what)
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = str(getattr(exc, "problem", None) or "invalid YAML")
        if not problem.startswith("duplicate key"):
            # PyYAML quotes the offending text (e.g. an undefined alias): keep its kind only
            problem = problem.split("'", 1)[0].split('"', 1)[0].strip() or "invalid YAML"
        raise SettingsError(f"{what}: {problem}{where}") from None
    except RecursionError:
        raise SettingsError(f"{what}: nested too deeply") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"{what}: top level must be a mapping")
    for key in data:
        if key == "config" or key not in Settings.model_fields:
            shown = key if isinstance(key, str) and len(key) <= 64 else "…"
            raise SettingsError(f"{what}: unknown field {shown!r}")
    return data


class BoundedYamlSource(YamlConfigSettingsSource):
    """pydantic-settings' YAML source with a size bound, strict UTF-8 and unique keys.

    A named file must exist (the stock source skips missing files silently).
    """

    def _read_files(
        self, files: ConfigFileSourceType | None, deep_merge: bool = False
    ) -> dict[str, Any]:
        del deep_merge
        if files is None:
            return {}
        if not isinstance(files, str | Path):
            raise SettingsError("config file: exactly one file is supported")
        return load_yaml_file(Path(files))


def _format_validation_error(exc: ValidationError, overrides: Mapping[str, Any]) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(part) for part in err["loc"]) or "settings"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    top = str(err["loc"][0]) if err["loc"] else ""
    env_name = _env_variable([str(part) for part in err["loc"]])
    if top and overrides and top in overrides:
        hint = " (from command line)"
    elif top and env_name:
        hint = f" (from environment {env_name})"
    elif top and (overrides.get("config") or os.environ.get(f"{ENV_PREFIX}CONFIG")):
        hint = " (from config file)"
    else:
        hint = ""
    return f"{loc}: {msg}{hint}"


def _format_source_error(exc: SourceError) -> str:
    """pydantic-settings' "error parsing value for field X from source Y" as our line."""
    match = re.search(r'field "([^"]+)"', str(exc))
    field = match.group(1) if match else "settings"
    env_name = _env_variable(field.split("."))
    if env_name is None:
        return f"{field}: not valid JSON"
    dotted = env_name[len(ENV_PREFIX) :].lower().replace("__", ".")
    return (
        f"{dotted}: not valid JSON (lists and mappings are written as JSON, "
        f'e.g. ["a", "b"]) (from environment {env_name})'
    )


def _nesting_error() -> str:
    """The GECKO_* variable with the deepest JSON, named as its field."""
    names = [k for k in os.environ if k.upper().startswith(ENV_PREFIX)]
    if not names:
        return "settings: nested too deeply"
    name = max(names, key=lambda k: sum(os.environ[k].count(c) for c in "[{"))
    dotted = name[len(ENV_PREFIX) :].lower().replace("__", ".")
    return f"{dotted}: nested too deeply (from environment {name})"


def _env_variable(loc: list[str]) -> str | None:
    """The GECKO_* variable that set the field at ``loc`` (the most specific one)."""
    if not loc:
        return None
    top = f"{ENV_PREFIX}{loc[0].upper()}"
    full = "__".join([top, *(part.upper() for part in loc[1:])])
    names = [k for k in os.environ if k.upper() == top or k.upper().startswith(top + "__")]
    exact = [k for k in names if full == k.upper() or full.startswith(k.upper() + "__")]
    best = sorted(exact or names, key=lambda k: (-len(k), k))
    return best[0] if best else None


def split_host_port(value: str) -> tuple[str, int]:
    """Parse ``host:port`` / ``[v6]:port`` / ``:port``; raise ValueError with a reason."""
    if value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        if not sep:
            raise ValueError(f"{value!r} is not host:port")
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep:
            raise ValueError(f"{value!r} is not host:port")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"port {port_text!r} is not a number between 1 and 65535")
    try:  # what bind() does with a name: a byte that is not UTF-8 or a label > 63 fails there
        host.encode("idna")
    except UnicodeError:
        raise ValueError("host is not a valid host name or address") from None
    return host or "0.0.0.0", int(port_text)  # noqa: S104 - documented default: all interfaces
