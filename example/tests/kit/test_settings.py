"""Settings come from the environment and ``.env``, and refuse values the service cannot run
with.
"""

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NoReturn

import dotenv.main
import pytest
from pydantic import ValidationError

from my_service import Settings, SettingsError

FromEnv = Callable[[Mapping[str, str]], Settings]


@pytest.fixture
def from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FromEnv:
    """``Settings.from_env()`` with these variables set, in a directory of the test's own."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(Settings.model_config, "env_file", ".env")

    def read(variables: Mapping[str, str]) -> Settings:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        return Settings.from_env()

    return read


def test_settings_are_read_from_upper_case_variables(from_env: FromEnv) -> None:
    settings = from_env({"DATABASE_POOL_SIZE": "20", "DATABASE_ECHO": "true"})
    assert (settings.database_pool_size, settings.database_echo) == (20, True)


def test_unset_variables_keep_their_defaults(from_env: FromEnv) -> None:
    assert from_env({}) == Settings()


def test_settings_are_read_from_dot_env_and_the_environment_wins(
    from_env: FromEnv, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        "# the deployment's own variables sit here too\n"
        "DATABASE_POOL_SIZE=20\nDATABASE_ECHO=true\nSENTRY_DSN=https://key@example.com/1\n"
    )
    settings = from_env({"DATABASE_ECHO": "false"})
    assert (settings.database_pool_size, settings.database_echo) == (20, False)


def test_the_database_url_is_a_secret_shown_nowhere(from_env: FromEnv) -> None:
    settings = from_env({"DATABASE_URL": "postgresql://app:s3cret@db:5432/app"})
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in str(settings.model_dump())
    assert settings.database_url.get_secret_value().endswith("app:s3cret@db:5432/app")


def test_a_plain_postgres_url_gets_the_async_driver(from_env: FromEnv) -> None:
    settings = from_env({"DATABASE_URL": "postgres://app@db:5432/app"})
    assert settings.database_url.get_secret_value() == "postgresql+asyncpg://app@db:5432/app"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("require", "ssl=require"),
        ("verify-full", "ssl=verify-full"),
        ("disable", "ssl=disable"),
    ],
)
def test_a_providers_sslmode_becomes_asyncpgs_ssl(
    from_env: FromEnv, mode: str, expected: str
) -> None:
    url = f"postgres://app:s3cret@db.example.com:5432/app?sslmode={mode}"
    settings = from_env({"DATABASE_URL": url})
    assert settings.database_url.get_secret_value() == (
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
    from_env: FromEnv, query: str, message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        from_env({"DATABASE_URL": f"postgres://app:s3cret@db:5432/app?{query}"})
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
def test_a_refused_database_url_never_shows_its_password(from_env: FromEnv, url: str) -> None:
    with pytest.raises(SettingsError, match="DATABASE_URL") as caught:
        from_env({"DATABASE_URL": url})
    assert "s3cret" not in str(caught.value)
    with pytest.raises(ValidationError) as raw:
        Settings(database_url=url)
    assert "s3cret" not in str(raw.value)


def test_a_refused_url_is_shown_with_its_password_masked(from_env: FromEnv) -> None:
    with pytest.raises(SettingsError) as caught:
        from_env({"DATABASE_URL": "mysql://app:s3cret@db/app"})
    assert "DATABASE_URL='mysql://app:***@db/app'" in str(caught.value)


@pytest.mark.parametrize(
    "url", ["postgres://app:s3cr@tXYZ@db:5432/app", "mysql://app:s3cr@tXYZ@db/app"]
)
def test_an_unencoded_at_sign_in_the_password_is_refused_and_masked_whole(
    from_env: FromEnv, url: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        from_env({"DATABASE_URL": url})
    assert "tXYZ" not in str(caught.value)
    assert ":***@db" in str(caught.value)


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
    from_env: FromEnv, variable: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError, match="invalid settings") as caught:
        from_env({variable: value})
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DATABASE_STATEMENT_TIMEOUT", "inf", "Input should be a finite number"),
        ("GUARD_WAIT_TIMEOUT", "1e309", "Input should be a finite number"),
        ("CACHE_TTL_SECONDS", "nan", "Input should be a finite number"),
        ("DATABASE_POOL_TIMEOUT", "1e300", "Input should be less than or equal to 60"),
        ("DATABASE_STATEMENT_TIMEOUT", "3600", "Input should be less than or equal to 600"),
        ("DATABASE_POOL_SIZE", "1000000000000", "Input should be less than or equal to 1000"),
        ("MAX_BODY_BYTES", "10000000000", "Input should be less than or equal to 536870912"),
    ],
)
def test_an_endless_or_outsized_value_is_refused_naming_the_variable_and_its_range(
    from_env: FromEnv, variable: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError, match="invalid settings") as caught:
        from_env({variable: value})
    assert f"{variable}={value!r}: {message}" in str(caught.value)


def numbers() -> list[str]:
    """The variables of every setting that holds a number, the service's own included."""
    return sorted(
        name.upper()
        for name, setting in Settings.model_fields.items()
        if setting.annotation in (int, float)
    )


@pytest.mark.parametrize("variable", numbers())
def test_every_number_is_bounded_and_finite(from_env: FromEnv, variable: str) -> None:
    # A setting added without a ceiling fails here: an endless timeout or a pool of a
    # trillion connections must stop the service at start-up, not hang it later.
    for value in ("1e300", "1" + "0" * 30, "inf", "-inf", "nan"):
        with pytest.raises(SettingsError, match=f"{variable}={value!r}: "):
            from_env({variable: value})


def test_a_dot_env_that_is_not_text_is_refused_naming_the_file(
    from_env: FromEnv, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_bytes(b"DATABASE_ECHO=true\nDATABASE_POOL_SIZE=\xff\xfe20\n")
    with pytest.raises(SettingsError) as caught:
        from_env({})
    assert str(caught.value) == "cannot read .env: it is not UTF-8 text; want one KEY=value a line"


def test_a_dot_env_the_service_may_not_read_is_refused_naming_the_file(
    from_env: FromEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("DATABASE_ECHO=true\n")

    def refuse(path: object, *args: object, **kwargs: object) -> NoReturn:
        raise PermissionError(13, "Permission denied", str(path))

    # What a service not allowed to read its .env meets; the superuser, who runs the tests
    # in CI, may read any file, so python-dotenv's open() is told to refuse as the OS would.
    monkeypatch.setattr(dotenv.main, "open", refuse, raising=False)
    with pytest.raises(SettingsError, match=r"cannot read \.env: Permission denied; want a file"):
        from_env({})


def test_env_example_lists_every_setting_with_its_default(from_env: FromEnv) -> None:
    project = Path(__file__).resolve().parents[2]
    lines = (project / ".env.example").read_text().splitlines()
    example = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert set(example) == {name.upper() for name in Settings.model_fields}
    assert from_env(example) == Settings()
