"""Write the dashboards' JSON to ``grafana/dashboards/`` (or check it is up to date).

Usage: ``python -m grafana.generate [--check] [--output DIR]`` from the repository root, or
``python grafana/generate.py …``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from grafana_foundation_sdk.models import dashboard as dashboard_model

from grafana import exporter_health, health, overview
from grafana.panels import render

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"

#: Output file name -> builder. File names are stable: provisioning and tests refer to them.
DASHBOARDS: dict[str, Callable[[], dashboard_model.Dashboard]] = {
    "gecko-overview.json": overview.build,
    "gecko-health.json": health.build,
    "gecko-exporter.json": exporter_health.build,
}


def rendered() -> dict[str, str]:
    """File name -> JSON text of every dashboard, exactly as committed."""
    return {name: render(build()) for name, build in DASHBOARDS.items()}


def write(directory: Path) -> list[Path]:
    """Write every dashboard into ``directory``; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale(directory: Path) -> list[str]:
    """Names of dashboards whose file in ``directory`` differs from the generator's output."""
    out = []
    for name, text in rendered().items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            out.append(name)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grafana.generate", description=__doc__)
    parser.add_argument("--output", type=Path, default=DASHBOARD_DIR, help="target directory")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the files differ from the generator"
    )
    args = parser.parse_args(argv)
    if args.check:
        differing = stale(args.output)
        for name in differing:
            print(f"{args.output / name} is out of date: run python -m grafana.generate")
        return 1 if differing else 0
    for path in write(args.output):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
