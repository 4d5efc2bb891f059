"""Loading the configuration: defaults < YAML file < environment (GECKO_*) < flags.

The fields, their bounds and checks are declared once, by the dataclasses of
:mod:`exporter.config`; this module validates them with pydantic-settings and
returns a :class:`~exporter.config.Config` (:func:`load_config`). The daemon
(``gecko-exporter run``) never imports this module: it loads its configuration in a
short-lived child process (:mod:`exporter.config_process`), so pydantic never sits
in its memory.

Every problem is reported as one :class:`~exporter.errors.SettingsError` line
naming the field, so the CLI can print it and exit 2 without a traceback:
unknown fields in the file *and* unknown ``GECKO_*`` variables (a typo must not
be ignored), duplicate YAML keys, files that are too large or not UTF-8.

The YAML file is read by pydantic-settings' own YAML source
(:class:`BoundedYamlSource`), its path given by ``--config`` or ``GECKO_CONFIG``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, create_model, field_validator
from pydantic.fields import FieldInfo
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

from exporter.config import DEFAULT_PROBES, Config, FieldError, ProbeSettings, check_probe_name
from exporter.errors import SettingsError
from exporter.yaml_files import load_yaml_mapping

ENV_PREFIX = "GECKO_"
#: the config file is read with a bound (``/dev/zero`` is an error)
MAX_CONFIG_BYTES = 1 << 20
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


class _SettingsBase(BaseSettings):
    """Sources and loader-only validation; the fields come from :class:`Config`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    @field_validator("probes", mode="before", check_fields=False)
    @classmethod
    def _merge_probe_defaults(cls, value: Any) -> Any:
        """A probe given in part keeps the defaults of the rest (before validation)."""
        if not isinstance(value, Mapping):
            return value
        merged: dict[str, Any] = {}
        for name, override in value.items():
            try:
                check_probe_name(name)
            except FieldError as exc:  # reported at ``probes`` (this validator's field)
                raise ValueError(exc.message) from None
            base = dataclasses.asdict(DEFAULT_PROBES[name])
            if isinstance(override, Mapping):
                base.update(override)
            elif isinstance(override, ProbeSettings):
                base.update(dataclasses.asdict(override))
            else:
                # ValueError, not TypeError: pydantic turns it into a validation error
                raise ValueError(  # noqa: TRY004
                    f"probe {name!r} must be a mapping (interval_seconds, ...)"
                )
            merged[name] = base
        return merged

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
        env_settings = _EnvSource(settings_cls)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_path(init_settings, env_settings)
        if path is not None:
            sources.append(BoundedYamlSource(settings_cls, yaml_file=path))
        return tuple(sources)


class _EnvSource(EnvSettingsSource):
    """The environment source, looking into the sections' fields (stdlib dataclasses).

    pydantic-settings finds the type of ``GECKO_TABLES__SCHEMAS`` only in models and
    pydantic dataclasses; without it a JSON list there stayed text.
    """

    def next_field(
        self, field: FieldInfo | Any | None, key: str, case_sensitive: bool | None = None
    ) -> FieldInfo | None:
        annotation = field.annotation if isinstance(field, FieldInfo) else field
        if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
            hints = typing.get_type_hints(annotation, include_extras=True)
            for f in dataclasses.fields(annotation):
                if f.name == key or (not case_sensitive and f.name.lower() == key.lower()):
                    return FieldInfo.from_annotation(hints[f.name])
            return None
        return super().next_field(field, key, case_sensitive)


def _config_fields() -> dict[str, Any]:
    """:class:`Config`'s fields as pydantic field definitions (type with bounds, default)."""
    hints = typing.get_type_hints(Config, include_extras=True)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(Config):
        if f.default_factory is not dataclasses.MISSING:
            fields[f.name] = (hints[f.name], Field(default_factory=f.default_factory))
        else:
            fields[f.name] = (hints[f.name], f.default)
    return fields


#: the settings model: :class:`Config`'s fields, read from flags, environment and file
Settings: type[_SettingsBase] = create_model(
    "Settings", __base__=_SettingsBase, __module__=__name__, **_config_fields()
)


def load_config(
    *, config_file: Path | str | None = None, overrides: Mapping[str, Any] | None = None
) -> Config:
    """The configuration from file, environment and explicit overrides (flags).

    Raises :class:`SettingsError` with one line naming the field.
    """
    values = dict(overrides or {})
    if config_file is not None:
        values["config"] = config_file
    try:
        settings = Settings(**values)
        return Config(**{name: getattr(settings, name) for name in Settings.model_fields})
    except ValidationError as exc:
        raise SettingsError(_format_validation_error(exc, values)) from None
    except FieldError as exc:  # a check across fields (Config.__post_init__)
        loc = [exc.field] if exc.field else []
        raise SettingsError(_error_line(loc, exc.message, values)) from None
    except SourceError as exc:  # an environment value that is not valid JSON
        raise SettingsError(_format_source_error(exc)) from None
    except RecursionError:  # JSON in the environment nested beyond Python's stack
        raise SettingsError(_nesting_error()) from None


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
    """Whether a field takes ``GECKO_FIELD__SUB`` variables (a section or a mapping)."""
    if dataclasses.is_dataclass(annotation):
        return True
    if typing.get_origin(annotation) in (dict, Mapping):
        return True
    return any(_accepts_nested(arg) for arg in typing.get_args(annotation))


def load_yaml_file(path: Path) -> dict[str, Any]:
    """The config file as a mapping of known top-level fields, or one SettingsError line."""
    what = f"config file {path}"
    data = load_yaml_mapping(path, MAX_CONFIG_BYTES, what)
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
    loc = [str(part) for part in err["loc"]]
    msg = str(err["msg"]).removeprefix("Value error, ")
    ctx = err.get("ctx") or {}
    error = ctx.get("error")
    if isinstance(error, FieldError):  # a section's check names its field
        loc += [error.field] if error.field else []
        msg = error.message
    if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        msg = "unknown field"
    elif err["type"] == "dataclass_type":  # the wording of a model section, as before
        msg = f"Input should be a valid dictionary or instance of {ctx.get('class_name')}"
    return _error_line(loc, msg, overrides)


def _error_line(loc: list[str], msg: str, overrides: Mapping[str, Any]) -> str:
    """``<field>: <problem> (from <source>)``."""
    top = loc[0] if loc else ""
    env_name = _env_variable(loc)
    if top and overrides and top in overrides:
        hint = " (from command line)"
    elif top and env_name:
        hint = f" (from environment {env_name})"
    elif top and (overrides.get("config") or os.environ.get(f"{ENV_PREFIX}CONFIG")):
        hint = " (from config file)"
    else:
        hint = ""
    return f"{'.'.join(loc) or 'settings'}: {msg}{hint}"


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
