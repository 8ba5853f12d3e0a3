"""The job index's settings: off by default, URLs and tokens checked, secrets from _FILE."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.errors import SettingsError
from worker.settings import Settings


def test_the_index_is_off_without_a_database_url() -> None:
    settings = Settings.from_env({})
    assert settings.database_url is None
    assert settings.api_token is None


def test_database_url_and_token_come_from_files(tmp_path: Path) -> None:
    url_file, token_file = tmp_path / "url", tmp_path / "token"
    url_file.write_text("postgresql://scribe:pw@db:5432/scribe\n")
    token_file.write_text("a-token-of-at-least-16-bytes\n")
    settings = Settings.from_env(
        {"SCRIBE_DATABASE_URL_FILE": str(url_file), "SCRIBE_API_TOKEN_FILE": str(token_file)}
    )
    assert settings.database_url is not None
    assert settings.database_url.value == "postgresql://scribe:pw@db:5432/scribe"
    assert "pw" not in repr(settings.database_url)
    assert settings.api_token is not None
    assert settings.api_token.value == "a-token-of-at-least-16-bytes"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SCRIBE_DATABASE_URL": "mysql://db/scribe"}, "SCRIBE_DATABASE_URL"),
        ({"SCRIBE_DATABASE_URL": "postgresql:///scribe"}, "SCRIBE_DATABASE_URL"),
        ({"SCRIBE_API_TOKEN": "short"}, "SCRIBE_API_TOKEN"),
        ({"SCRIBE_INDEX_QUEUE_MAX": "0"}, "SCRIBE_INDEX_QUEUE_MAX"),
    ],
)
def test_bad_index_settings_fail_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)
