"""verify --baseline FILE: a hostile or broken file is one line naming it (exit 2), never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.errors import ExporterError
from exporter.gate.live_measure import MAX_BASELINE_BYTES, read_baseline


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"{\xff\xfe}", "not UTF-8"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"a": ' + b"9" * 5000 + b"}", "invalid JSON"),
        (b"{bad", "invalid JSON at line 1"),
        (b" " * (MAX_BASELINE_BYTES + 1), "larger than"),
    ],
)
def test_bad_baseline_file_is_one_line(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "before.json"
    path.write_bytes(content)
    with pytest.raises(ExporterError) as err:
        read_baseline(path)
    message = str(err.value)
    assert message.startswith(f"--baseline {path}: ")
    assert expected in message
    assert "\n" not in message


def test_endless_device_is_read_with_a_bound() -> None:
    # /dev/zero used to be read whole: the process grew until the kernel killed it
    with pytest.raises(ExporterError, match="larger than"):
        read_baseline(Path("/dev/zero"))
