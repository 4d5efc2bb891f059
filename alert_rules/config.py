"""The generator's configuration: checked thresholds that match the catalogue, job, runbook URL."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from alert_rules.catalogue import DEFAULT_JOB, required_keys, token_groups
from alert_rules.thresholds import THRESHOLDS_PATH, ConfigError, check_thresholds, read_thresholds

#: Where ``runbook_url`` points: ``<base>/<AlertName>.md`` (docs/runbooks/ in this repo).
RUNBOOK_BASE_URL = "https://github.com/gecko-advisor/gecko-exporter/blob/main/docs/runbooks"


@dataclass(frozen=True)
class RulesConfig:
    """Threshold values plus the few non-threshold settings of the generator."""

    thresholds: Mapping[str, float | str]
    job: str = DEFAULT_JOB
    runbook_base_url: str = RUNBOOK_BASE_URL

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", check_thresholds(self.thresholds))
        missing = sorted(set(required_keys()) - set(self.thresholds))
        unused = sorted(set(self.thresholds) - set(required_keys()))
        if missing:
            raise ConfigError(f"missing threshold(s): {', '.join(missing)}")
        if unused:
            raise ConfigError(f"unknown threshold(s): {', '.join(unused)}")
        if not re.fullmatch(r"[A-Za-z0-9_.:/-]+", self.job):
            raise ConfigError(f"job {self.job!r}: use a plain label value")

    def with_overrides(self, **overrides: float | str) -> RulesConfig:
        """A copy with some thresholds replaced (e.g. short ``for`` values for tests)."""
        unknown = sorted(set(overrides) - set(self.thresholds))
        if unknown:
            raise ConfigError(f"unknown threshold(s): {', '.join(unknown)}")
        return replace(self, thresholds={**self.thresholds, **overrides})

    def runbook_url(self, alert: str) -> str:
        return f"{self.runbook_base_url.rstrip('/')}/{alert}.md"

    def groups(self) -> dict[str, Any]:
        """The rule file as data, thresholds still as placeholders."""
        return token_groups(self.job, self.runbook_url)


def load_config(
    path: Path = THRESHOLDS_PATH,
    *,
    job: str = DEFAULT_JOB,
    runbook_base_url: str = RUNBOOK_BASE_URL,
) -> RulesConfig:
    return RulesConfig(thresholds=read_thresholds(path), job=job, runbook_base_url=runbook_base_url)
