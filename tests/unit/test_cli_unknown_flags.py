"""Unknown flags are named as flags, also in the dotted style of --web.config.file."""

from __future__ import annotations

import pytest

from exporter.cli import main


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "--web.config=w.yml"], "unrecognized arguments: --web.config\n"),
        (["check-config", "--web.listen-address", ":9"], "--web.listen-address and 1 positional"),
    ],
)
def test_dotted_unknown_flag_is_named_not_counted_as_a_positional(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "w.yml" not in err
