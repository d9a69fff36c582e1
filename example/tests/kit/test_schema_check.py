"""The service starts only on a database at its migrations' head, or past it.

A database behind the code (never migrated, or migrated by an older release) would answer
500s for the tables or columns it lacks: start-up refuses it, naming the command to run. A
database past the code's head (a newer release migrated it, in a rolling deploy) starts, with
a warning.
"""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from my_service import SchemaBehind, Settings, check_schema, create_app, create_engine

from tests.harness.databases import empty_database, migration_engine, upgrade_to_head

# Two revisions, "a" then "b", as Alembic writes them.
REVISIONS = {
    "a_first.py": 'revision: str = "a"\ndown_revision: str | None = None\n',
    "b_second.py": 'revision: str = "b"\ndown_revision: str | None = "a"\n',
}


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """An empty database of the test's own."""
    with empty_database(tmp_path, "schema") as url:
        yield url


@pytest.fixture
def versions(tmp_path: Path) -> Path:
    """A directory of revisions whose head is "b"."""
    directory = tmp_path / "versions"
    directory.mkdir()
    for name, source in REVISIONS.items():
        (directory / name).write_text(source)
    return directory


async def record_revision(url: str, revision: str) -> None:
    """Record the database at ``url`` at ``revision``, as `alembic stamp` would."""
    engine = migration_engine(url)
    async with engine.begin() as connection:
        await connection.execute(
            text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        )
        await connection.execute(
            text("INSERT INTO alembic_version VALUES (:revision)"), {"revision": revision}
        )
    await engine.dispose()


async def start(url: str) -> None:
    """Start the service on ``url`` and stop it again."""
    app = create_app(Settings(database_url=url))
    async with app.router.lifespan_context(app):
        pass


async def test_the_service_refuses_to_start_on_a_database_never_migrated(database_url: str) -> None:
    with pytest.raises(SchemaBehind, match="never migrated") as refusal:
        await start(database_url)
    assert "run `alembic upgrade head`" in str(refusal.value)


def test_the_service_starts_on_a_database_at_head_without_a_warning(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    upgrade_to_head(migration_engine(database_url))
    asyncio.run(start(database_url))
    assert "the database" not in caplog.text


async def test_the_service_starts_on_a_database_ahead_of_it_with_a_warning(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    await record_revision(database_url, "9999")
    await start(database_url)
    assert "the database is at revision 9999, which this code does not know" in caplog.text


async def test_a_database_behind_the_head_is_refused(database_url: str, versions: Path) -> None:
    await record_revision(database_url, "a")
    engine = create_engine(Settings(database_url=database_url))
    try:
        with pytest.raises(SchemaBehind, match=r"is at a, behind .* \(b\): run `alembic upgrade"):
            await check_schema(engine, versions)
    finally:
        await engine.dispose()


async def test_a_database_at_the_head_of_the_revisions_passes(
    database_url: str, versions: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await record_revision(database_url, "b")
    engine = create_engine(Settings(database_url=database_url))
    try:
        await check_schema(engine, versions)
    finally:
        await engine.dispose()
    assert caplog.text == ""
