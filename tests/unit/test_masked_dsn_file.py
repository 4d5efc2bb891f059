"""check-config shows the DSN of a secret file masked, as it does for GECKO_DATABASE_URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.settings import load_config

DSN = "postgresql://mon:s3cret-pw@db.example:5432/privacy"
PGB = "postgresql://stats:s3cret-pgb@pgb.example:6432/pgbouncer"


def test_secret_files_are_shown_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dsn").write_text(DSN + "\n")
    (tmp_path / "pgb").write_text(PGB + "\n")
    monkeypatch.setenv("GECKO_DATABASE_URL_FILE", str(tmp_path / "dsn"))
    monkeypatch.setenv("GECKO_PGBOUNCER_URL_FILE", str(tmp_path / "pgb"))
    masked = load_config().masked()
    assert "s3cret" not in str(masked)
    # was null: a newcomer could not see what the file held
    assert masked["database_url"] == (
        "user=mon password=**** dbname=privacy host=db.example port=5432"
    )
    assert masked["pgbouncer_url"] == (
        "user=stats password=**** dbname=pgbouncer host=pgb.example port=6432"
    )
    assert masked["database_url_file"] == str(tmp_path / "dsn")
