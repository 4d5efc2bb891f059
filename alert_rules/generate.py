"""Generate gecko-exporter's Prometheus rules from ``alert_rules/thresholds.yaml``.

Outputs (both from the same rule definitions, :mod:`alert_rules.catalogue`):

* ``alert_rules/gecko-exporter.rules.yml`` — concrete recording and alerting rules;
* ``helm/gecko-exporter/files/prometheus-rules.yaml`` — the same rules with every
  threshold, ``for`` and window as ``{{ .Values.prometheusRule.thresholds.<key> }}``
  and every Prometheus template action escaped for Helm (``{{`{{ $value }}`}}``);
  the chart renders it with ``tpl``.

Usage::

    python -m alert_rules.generate             # (re)write both files
    python -m alert_rules.generate --check     # exit 1 if a committed file is stale
    python -m alert_rules.generate --set slowQueryFor=2s --rules-out /tmp/r.yml

This module is the command line only; the package needs only PyYAML, so
``python alert_rules/generate.py`` works too.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

if not __package__:  # run as a script: import the package from the repository root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from alert_rules.catalogue import DEFAULT_JOB
from alert_rules.config import RUNBOOK_BASE_URL, load_config
from alert_rules.render import outputs, render_helm, render_plain
from alert_rules.thresholds import THRESHOLDS_PATH, ConfigError


def _parse_set(items: Sequence[str]) -> dict[str, float | str]:
    overrides: dict[str, float | str] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected key=value")
        value = yaml.safe_load(raw)
        if not isinstance(value, int | float | str) or isinstance(value, bool):
            raise ConfigError(f"--set {item!r}: expected a number or a duration")
        overrides[key.strip()] = value
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m alert_rules.generate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--thresholds", type=Path, default=THRESHOLDS_PATH)
    parser.add_argument("--job", default=DEFAULT_JOB, help="job label of the exporter target")
    parser.add_argument("--runbook-base-url", default=RUNBOOK_BASE_URL)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a threshold"
    )
    parser.add_argument("--rules-out", type=Path, help="write only the concrete rules, here")
    parser.add_argument("--helm-out", type=Path, help="write only the Helm rules, here")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the committed files are not up to date"
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(args.thresholds, job=args.job, runbook_base_url=args.runbook_base_url)
        config = config.with_overrides(**_parse_set(args.set))
    except ConfigError as exc:
        parser.exit(2, f"error: {exc}\n")

    custom = args.rules_out is not None or args.helm_out is not None
    customised = bool(args.set) or args.job != DEFAULT_JOB
    customised = customised or args.runbook_base_url != RUNBOOK_BASE_URL
    if customised and not custom:
        parser.exit(
            2, "error: overrides need --rules-out/--helm-out (committed files stay canonical)\n"
        )
    if custom:
        targets = {}
        if args.rules_out is not None:
            targets[args.rules_out] = render_plain(config)
        if args.helm_out is not None:
            targets[args.helm_out] = render_helm(config)
    else:
        targets = outputs(config)

    stale = 0
    for path, text in targets.items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if args.check:
            if current != text:
                stale += 1
                diff = difflib.unified_diff(
                    current.splitlines(keepends=True),
                    text.splitlines(keepends=True),
                    f"{path} (committed)",
                    f"{path} (generated)",
                )
                sys.stderr.writelines(diff)
        elif current != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(
            f"{stale} generated file(s) out of date: run python -m alert_rules.generate",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
