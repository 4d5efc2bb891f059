"""Configuration: defaults < YAML file < environment (GECKO_*) < command-line flags.

Every problem is reported as one :class:`~exporter.errors.SettingsError` line
naming the field, so the CLI can print it and exit 2 without a traceback.
"""

from __future__ import annotations

import contextvars
import os
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
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from exporter.db.dsn import mask_dsn, validate_dsn
from exporter.errors import SettingsError

ENV_PREFIX = "GECKO_"
DEFAULT_PORT = 8187

PositiveSeconds = Annotated[float, Field(gt=0, le=86400)]


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
}
#: every probe name (a bounded label value), in scheduling order
PROBE_NAMES: tuple[str, ...] = tuple(DEFAULT_PROBES)

#: The indexes the app's hot queries rely on (schema reference §3-4), checked by name.
DEFAULT_CRITICAL_INDEXES = (
    "Scan_dedupe_lookup_idx",
    "Scan_recent_reports_idx",
    "Evidence_scan_covering_idx",
    "Issue_scan_covering_idx",
    "Scan_slug_key",
)
#: Prisma Migrate's advisory lock key (prisma-engines, apply_migrations).
PRISMA_MIGRATE_LOCK_KEY = 72707369

Identifier = Annotated[str, Field(min_length=1, max_length=63)]


class PoolSettings(BaseModel):
    """An application connection pool, recognised by application_name and/or user."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
    application_name: str | None = None
    usename: str | None = None
    size: Annotated[int, Field(gt=0, le=100000)]

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
        'WHERE "status" NOT IN (\'queued\', \'running\', \'done\', \'error\')',
    ),
    InvariantSettings(
        name="scans_with_score_out_of_range",
        sql='SELECT "id" FROM "Scan" WHERE "score" < 0 OR "score" > 100',
    ),
)


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
    #: ...unless it is below this floor (sub-millisecond noise)
    latency_ratio_floor_seconds: Annotated[float, Field(ge=0, le=60)] = 0.01
    invariants: list[InvariantSettings] = Field(
        default_factory=lambda: list(DEFAULT_INVARIANTS), max_length=100
    )

    @field_validator("invariants")
    @classmethod
    def _unique_invariants(cls, value: list[InvariantSettings]) -> list[InvariantSettings]:
        names = [i.name for i in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate invariant name(s): {', '.join(dupes)}")
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

    database_url: SecretStr | None = None
    database_url_file: Path | None = None
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
                raise TypeError(f"probe {name!r} must be a mapping")
            merged[name] = base
        return merged

    @field_validator("pools")
    @classmethod
    def _unique_pools(cls, value: list[PoolSettings]) -> list[PoolSettings]:
        names = [p.name for p in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate pool name(s): {', '.join(dupes)}")
        return value

    @model_validator(mode="after")
    def _one_dsn_source(self) -> Settings:
        if self.database_url is not None and self.database_url_file is not None:
            raise ValueError("set only one of database_url and database_url_file")
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
            try:
                value = self.database_url_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SettingsError(
                    f"database_url_file: cannot read {self.database_url_file}: {exc.strerror}"
                ) from None
            try:
                validate_dsn(value)
            except ValueError as exc:
                raise SettingsError(f"database_url_file: DSN {exc}") from None
            return value
        raise SettingsError(
            "database_url: not set (set GECKO_DATABASE_URL or GECKO_DATABASE_URL_FILE, "
            "or use `gecko-exporter demo` for a bundled database)"
        )

    def listen(self) -> tuple[str, int]:
        return split_host_port(self.listen_address)

    def masked(self) -> dict[str, Any]:
        """The effective configuration as plain data, secrets masked."""
        data = self.model_dump(mode="json")
        if self.database_url is not None:
            data["database_url"] = mask_dsn(self.database_url.get_secret_value())
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
        file_data = _FILE_DATA.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if file_data:
            sources.append(_MappingSource(settings_cls, file_data))
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
        path = config_file if config_file is not None else os.environ.get(f"{ENV_PREFIX}CONFIG")
        file_data = _load_yaml(Path(path)) if path else {}
        token = _FILE_DATA.set(file_data)
        try:
            return cls(**dict(overrides or {}))
        except ValidationError as exc:
            raise SettingsError(_format_validation_error(exc, file_data, overrides)) from None
        finally:
            _FILE_DATA.reset(token)


_FILE_DATA: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "gecko_config_file_data", default=None
)


class _MappingSource(PydanticBaseSettingsSource):
    """Settings from an already-parsed YAML mapping."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"config file {path}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise SettingsError(f"config file {path}: {problem}{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path}: top level must be a mapping")
    unknown = sorted(set(data) - set(Settings.model_fields))
    if unknown:
        raise SettingsError(f"config file {path}: unknown field {unknown[0]!r}")
    return data


def _format_validation_error(
    exc: ValidationError, file_data: Mapping[str, Any], overrides: Mapping[str, Any] | None
) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(part) for part in err["loc"]) or "settings"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    top = str(err["loc"][0]) if err["loc"] else ""
    env_top = f"{ENV_PREFIX}{top.upper()}"
    if top and overrides and top in overrides:
        hint = " (from command line)"
    elif top and any(k == env_top or k.startswith(env_top + "__") for k in os.environ):
        hint = f" (from environment {env_top})"
    elif top in file_data:
        hint = " (from config file)"
    else:
        hint = ""
    return f"{loc}: {msg}{hint}"


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
    return host or "0.0.0.0", int(port_text)  # noqa: S104 - documented default: all interfaces
