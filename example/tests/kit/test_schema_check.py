"""The service starts only on a database at its migrations' head, or past it, whose tables
hold what the models declare.

A database behind the code (never migrated, or migrated by an older release) would answer
500s for the tables or columns it lacks: start-up refuses it, naming the command to run. So
does a database at the head whose tables differ from the models (a model changed without a
revision, a column dropped by hand), naming each difference. A database past the code's head
(a newer release migrated it, in a rolling deploy) starts, with a warning.
"""

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.schema import CreateIndex
from sqlmodel import SQLModel

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
        await check_schema(engine, versions, tables=sa.MetaData())
    finally:
        await engine.dispose()
    assert caplog.text == ""


def gadgets(*extra: sa.Column[Any]) -> sa.MetaData:
    """A table of the test's own, as a model would declare it, with ``extra`` columns."""
    tables = sa.MetaData()
    sa.Table(
        "gadget",
        tables,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("colour", sa.String(20), nullable=True),
        sa.Column("owner_id", sa.Integer, nullable=False, index=True),
        *extra,
    )
    return tables


async def at_head_with(url: str, tables: sa.MetaData, *changes: str) -> None:
    """Make the database at ``url`` hold ``tables``, changed by hand with ``changes``, and
    record it at the head of the revisions, "b".
    """
    await record_revision(url, "b")
    engine = migration_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(tables.create_all)
        for change in changes:
            await connection.execute(text(change))
    await engine.dispose()


async def refusal_of(url: str, versions: Path, tables: sa.MetaData) -> str:
    """The message of check_schema's refusal of the database at ``url``."""
    engine = create_engine(Settings(database_url=url))
    try:
        with pytest.raises(SchemaBehind) as refusal:
            await check_schema(engine, versions, tables)
    finally:
        await engine.dispose()
    return str(refusal.value)


AUTOGENERATE = 'alembic revision --autogenerate -m "what changed"'


async def test_tables_at_the_head_that_hold_what_the_models_declare_pass(
    database_url: str, versions: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await at_head_with(database_url, gadgets())
    engine = create_engine(Settings(database_url=database_url))
    try:
        await check_schema(engine, versions, gadgets())
    finally:
        await engine.dispose()
    assert caplog.text == ""


async def test_a_column_dropped_by_hand_is_refused_by_name_with_the_command_to_run(
    database_url: str, versions: Path
) -> None:
    await at_head_with(database_url, gadgets(), "ALTER TABLE gadget DROP COLUMN colour")
    refusal = await refusal_of(database_url, versions, gadgets())
    assert "at this code's head (b), but its tables differ from the models" in refusal
    assert "column gadget.colour is missing" in refusal
    assert AUTOGENERATE in refusal
    assert "`alembic upgrade head`" in refusal


async def test_a_model_changed_without_a_revision_is_refused_naming_each_difference(
    database_url: str, versions: Path
) -> None:
    await at_head_with(database_url, gadgets())
    changed = sa.MetaData()
    sa.Table(
        "gadget",
        changed,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(50), nullable=True),  # was NOT NULL
        sa.Column("colour", sa.Integer, nullable=True),  # was a string
        sa.Column("owner_id", sa.Integer, nullable=False),  # its index dropped below
        sa.Column("weight", sa.Integer, nullable=True),  # new
        sa.Index("ix_gadget_owner_id_name", "owner_id", "name"),  # new
    )
    sa.Table("widget", changed, sa.Column("id", sa.Integer, primary_key=True))  # new
    refusal = await refusal_of(database_url, versions, changed)
    assert "column gadget.weight is missing" in refusal
    assert "gadget.name is NOT NULL in the database, NULL allowed in the models" in refusal
    assert re.search(r"gadget\.colour is VARCHAR\(20\) in the database, INTEGER in", refusal)
    assert "index ix_gadget_owner_id_name on gadget(owner_id, name) is missing" in refusal
    assert "table widget is missing" in refusal
    assert AUTOGENERATE in refusal


async def test_a_column_no_model_knows_is_refused_only_when_inserts_cannot_leave_it_out(
    database_url: str, versions: Path
) -> None:
    required = sa.Column("serial", sa.String(20), nullable=False)
    optional = sa.Column("note", sa.String(20), nullable=True)
    await at_head_with(database_url, gadgets(required, optional))
    refusal = await refusal_of(database_url, versions, gadgets())
    assert "gadget.serial is NOT NULL without a default, and in no model" in refusal
    assert "note" not in refusal


def droppable_columns(dialect: sa.Dialect) -> list[tuple[str, str]]:
    """Columns of the models' tables that SQLite can drop too: in no key and no index."""
    found = []
    for table in SQLModel.metadata.sorted_tables:
        indexes = " ".join(
            str(CreateIndex(index).compile(dialect=dialect)) for index in table.indexes
        )
        found += [
            (table.name, column.name)
            for column in table.columns
            if not (column.primary_key or column.foreign_keys or column.unique)
            and not re.search(rf"\b{column.name}\b", indexes)
        ]
    return found


def test_the_service_refuses_to_start_on_its_tables_at_head_with_a_column_dropped(
    database_url: str,
) -> None:
    engine = migration_engine(database_url)
    upgrade_to_head(engine)
    columns = droppable_columns(engine.dialect)
    if not columns:
        pytest.skip("no model has a column outside every key and index")
    table, column = columns[0]
    asyncio.run(change_by_hand(engine, f'ALTER TABLE "{table}" DROP COLUMN "{column}"'))
    with pytest.raises(SchemaBehind) as refusal:
        asyncio.run(start(database_url))
    assert f"column {table}.{column} is missing" in str(refusal.value)
    assert AUTOGENERATE in str(refusal.value)


async def change_by_hand(engine: AsyncEngine, change: str) -> None:
    """Run ``change`` on the database of ``engine``, as someone at its console would."""
    async with engine.begin() as connection:
        await connection.execute(text(change))
    await engine.dispose()
