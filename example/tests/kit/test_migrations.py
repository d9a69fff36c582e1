"""The migrations build exactly the models' schema, and every one of them can be undone.

Each test starts from an empty database of its own, on the database the suite runs on
(SQLite, or the TEST_DATABASE_URL server): see ``alembic_runner`` in conftest.py.
"""

import asyncio
import shutil
from pathlib import Path

import pytest
from alembic import command
from pytest_alembic import MigrationContext
from pytest_alembic.plugin.error import AlembicTestFailure
from pytest_alembic.tests import test_model_definitions_match_ddl as models_match_ddl
from pytest_alembic.tests import (
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy import Connection
from sqlmodel import SQLModel

from tests.harness.databases import (
    ALEMBIC_INI,
    alembic_config,
    empty_database,
    migration_engine,
    upgrade_to_head,
)

# Collected from pytest-alembic: one line of history, an empty database upgrades to head,
# and every revision downgrades and upgrades again.
__all__ = ["test_single_head_revision", "test_up_down_consistency", "test_upgrade"]

WHAT_TO_RUN = """
The models and the migrations disagree: a model changed without a revision. Write one with
    alembic revision --autogenerate -m "what changed"
review the file it writes in migrations/versions/, then apply it with
    alembic upgrade head"""


@pytest.mark.alembic
def test_upgrading_an_empty_database_to_head_gives_exactly_the_models_schema(
    alembic_runner: MigrationContext,
) -> None:
    # Autogenerate compares tables, columns and their types, indexes, unique and foreign
    # key constraints: any difference is a revision someone forgot to write.
    try:
        models_match_ddl(alembic_runner)
    except AlembicTestFailure as failure:
        raise AssertionError(f"{failure}\n{WHAT_TO_RUN}") from None


# What the database itself says its schema is, statement by statement, leaving out Alembic's
# own table and column order (a column added later comes last). Autogenerate does not see
# everything here: table options such as SQLite's AUTOINCREMENT, a partial index's WHERE.
SQLITE_TABLES = (
    "SELECT name, instr(upper(sql), 'AUTOINCREMENT') > 0 FROM sqlite_master"
    " WHERE type = 'table' AND name NOT IN ('alembic_version', 'sqlite_sequence')"
)
POSTGRESQL_CATALOGUE = (
    "SELECT table_name, column_name, data_type, character_maximum_length, is_nullable,"
    " column_default, is_identity, identity_generation FROM information_schema.columns"
    " WHERE table_schema = 'public' AND table_name != 'alembic_version'",
    "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
    " WHERE connamespace = 'public'::regnamespace"
    " AND conrelid::regclass::text != 'alembic_version'",
    "SELECT tablename, indexname, indexdef FROM pg_indexes"
    " WHERE schemaname = 'public' AND tablename != 'alembic_version'",
)


def sqlite_catalogue(connection: Connection) -> set[tuple[object, ...]]:
    """Tables, columns, indexes (with their WHERE) and foreign keys of a SQLite database."""
    found: set[tuple[object, ...]] = set()
    for table, autoincrement in connection.exec_driver_sql(SQLITE_TABLES).all():
        found.add(("table", table, autoincrement))
        for column in connection.exec_driver_sql(f'PRAGMA table_info("{table}")'):
            found.add(("column", table, *column[1:]))
        for key in connection.exec_driver_sql(f'PRAGMA foreign_key_list("{table}")'):
            found.add(("foreign key", table, *key[2:]))
        for index in connection.exec_driver_sql(f'PRAGMA index_list("{table}")'):
            name = index[1]
            columns = [row[2] for row in connection.exec_driver_sql(f'PRAGMA index_info("{name}")')]
            sql = connection.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = ?", (name,)
            ).scalar()
            where = " ".join(sql.split()).partition(" WHERE ")[2] if sql else ""
            found.add(("index", table, name, *index[2:], tuple(columns), where))
    return found


def postgresql_catalogue(connection: Connection) -> set[tuple[object, ...]]:
    """Columns, constraints and indexes (with their WHERE) of a PostgreSQL database."""
    return {
        (number, *row)
        for number, query in enumerate(POSTGRESQL_CATALOGUE)
        for row in connection.exec_driver_sql(query).all()
    }


async def catalogue_of(url: str) -> set[tuple[object, ...]]:
    """The schema of the database at ``url``, as its own catalogue describes it."""
    engine = migration_engine(url)
    try:
        async with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                return await connection.run_sync(postgresql_catalogue)
            return await connection.run_sync(sqlite_catalogue)
    finally:
        await engine.dispose()


async def create_all(url: str) -> None:
    """Create the models' tables the way SQLAlchemy does without migrations."""
    engine = migration_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(SQLModel.metadata.create_all)
    finally:
        await engine.dispose()


def test_upgrading_to_head_builds_what_the_models_would_create(tmp_path: Path) -> None:
    with (
        empty_database(tmp_path, "models") as by_models,
        empty_database(tmp_path, "migrations") as by_migrations,
    ):
        asyncio.run(create_all(by_models))
        upgrade_to_head(migration_engine(by_migrations))
        expected = asyncio.run(catalogue_of(by_models))
        built = asyncio.run(catalogue_of(by_migrations))
    missing = "\n".join(f"    {entry}" for entry in sorted(expected - built, key=repr))
    unexpected = "\n".join(f"    {entry}" for entry in sorted(built - expected, key=repr))
    assert expected == built, (
        f"The migrations build a different schema from the models'.\n"
        f"In the models, not after the migrations:\n{missing}\n"
        f"After the migrations, not in the models:\n{unexpected}\n"
        "Autogenerate misses some of these (table options such as sqlite_autoincrement, a "
        "partial index's WHERE): write them into the revision by hand, for instance with "
        'op.batch_alter_table(..., recreate="always", table_kwargs={...}).'
    )


def test_a_new_revision_is_numbered_after_the_last(tmp_path: Path) -> None:
    # In a copy of the migrations: the project's own stay as they are.
    migrations = tmp_path / "migrations"
    shutil.copytree(ALEMBIC_INI.parent / "migrations", migrations)
    numbers = [int(path.name[:4]) for path in (migrations / "versions").glob("[0-9]*.py")]
    expected = f"{max(numbers) + 1:04d}"
    with empty_database(tmp_path, "revision") as url:
        config = alembic_config(migration_engine(url))
        config.set_main_option("script_location", str(migrations))
        command.revision(config, message="add comments")
    written = migrations / "versions" / f"{expected}_add_comments.py"
    assert written.is_file(), sorted(path.name for path in (migrations / "versions").iterdir())
    assert f'revision: str = "{expected}"' in written.read_text()
