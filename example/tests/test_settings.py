"""Settings come from the environment and refuse values the service cannot run with."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from my_service import Settings, SettingsError


def test_settings_are_read_from_upper_case_variables() -> None:
    settings = Settings.from_env({"DATABASE_POOL_SIZE": "20", "DATABASE_ECHO": "true"})
    assert (settings.database_pool_size, settings.database_echo) == (20, True)


def test_unset_variables_keep_their_defaults() -> None:
    assert Settings.from_env({}) == Settings()


def test_a_plain_postgres_url_gets_the_async_driver() -> None:
    settings = Settings.from_env({"DATABASE_URL": "postgres://app@db:5432/app"})
    assert settings.database_url == "postgresql+asyncpg://app@db:5432/app"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("require", "ssl=require"),
        ("verify-full", "ssl=verify-full"),
        ("disable", "ssl=disable"),
    ],
)
def test_a_providers_sslmode_becomes_asyncpgs_ssl(mode: str, expected: str) -> None:
    url = f"postgres://app:s3cret@db.example.com:5432/app?sslmode={mode}"
    settings = Settings.from_env({"DATABASE_URL": url})
    assert settings.database_url == (
        f"postgresql+asyncpg://app:s3cret@db.example.com:5432/app?{expected}"
    )


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("sslmode=required", "want sslmode (or ssl) once, one of disable, allow, prefer"),
        ("sslmode=require&ssl=require", "want sslmode (or ssl) once"),
        ("sslmode=verify-full&sslrootcert=/ca.pem", "remove it and set PGSSLROOTCERT instead"),
    ],
)
def test_an_sslmode_asyncpg_cannot_take_is_refused_saying_what_it_takes(
    query: str, message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"DATABASE_URL": f"postgres://app:s3cret@db:5432/app?{query}"})
    assert message in str(caught.value)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "mysql://app:s3cret@db/app",
        "postgresql://app:s3cret@db:port/app",
        "postgresql://app:s3cret@db:5432/app?sslmode=sometimes",
    ],
)
def test_a_refused_database_url_never_shows_its_password(url: str) -> None:
    with pytest.raises(SettingsError, match="DATABASE_URL") as caught:
        Settings.from_env({"DATABASE_URL": url})
    assert "s3cret" not in str(caught.value)
    with pytest.raises(ValidationError) as raw:
        Settings(database_url=url)
    assert "s3cret" not in str(raw.value)


def test_a_refused_url_is_shown_with_its_password_masked() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"DATABASE_URL": "mysql://app:s3cret@db/app"})
    assert "DATABASE_URL='mysql://app:***@db/app'" in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DATABASE_POOL_SIZE", "0", "DATABASE_POOL_SIZE='0': Input should be greater than or"),
        ("DATABASE_ECHO", "maybe", "DATABASE_ECHO='maybe': Input should be a valid boolean"),
        ("DATABASE_URL", "mysql://db/app", "want sqlite+aiosqlite:///path/to/file.db"),
        ("CACHE_CHANNEL", "my-cache", "CACHE_CHANNEL='my-cache': Value error, want at most 63"),
        ("CACHE_CHANNEL", "c" * 64, "want at most 63 letters, digits and underscores"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT='xml': Input should be 'plain' or 'json'"),
    ],
)
def test_an_invalid_value_is_refused_naming_the_variable(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError, match="invalid settings") as caught:
        Settings.from_env({variable: value})
    assert message in str(caught.value)


def test_env_example_lists_every_setting_with_its_default() -> None:
    lines = (Path(__file__).parent.parent / ".env.example").read_text().splitlines()
    example = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert set(example) == {name.upper() for name in Settings.model_fields}
    assert Settings.from_env(example) == Settings()
