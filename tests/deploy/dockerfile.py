"""A small reader for our Dockerfile: instructions per stage, continuation lines joined."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from tests.deploy.tools import REPO

DOCKERFILE = REPO / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form instruction (raises if it is shell form)."""
        parsed = json.loads(self.value)
        assert isinstance(parsed, list)
        assert all(isinstance(item, str) for item in parsed)
        return parsed


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.image} has no {keyword}"
        return found[-1]


def logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1].rstrip() + " "
            continue
        lines.append((current + stripped).strip())
        current = ""
    if current:
        lines.append(current.strip())
    return lines


def parse(path: Path = DOCKERFILE) -> list[Stage]:
    stages: list[Stage] = []
    for line in logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        value = value.strip()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", value, re.I)
            assert match, f"cannot read FROM {value!r}"
            stages.append(Stage(image=match.group(1), name=match.group(2)))
            continue
        assert stages, f"{keyword} before the first FROM"
        stages[-1].instructions.append(Instruction(keyword, value))
    return stages


def healthcheck_command(stage: Stage) -> list[str]:
    """The exec-form command of the stage's HEALTHCHECK (options stripped)."""
    value = stage.last("HEALTHCHECK").value
    _, sep, command = value.partition("CMD ")
    assert sep, "HEALTHCHECK without CMD"
    return Instruction("CMD", command.strip()).exec_form()


def apt_packages(stage: Stage) -> dict[str, str]:
    """``name: version pin`` of every ``apt-get install`` in the stage (``""`` when unpinned)."""
    found: dict[str, str] = {}
    for instruction in stage.all("RUN"):
        for command in instruction.value.split("&&"):
            words = command.split()
            if words[:2] != ["apt-get", "install"]:
                continue
            for word in words[2:]:
                if not word.startswith("-"):
                    name, _, version = word.partition("=")
                    found[name] = version
    return found


def pip_run(stage: Stage) -> Instruction:
    """The stage's one RUN that installs Python packages."""
    (found,) = [i for i in stage.all("RUN") if "pip install" in i.value]
    return found
