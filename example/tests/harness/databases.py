"""Databases of the tests' own: in-memory SQLite or SQLite files, or throwaway databases on
the TEST_DATABASE_URL server; migrated, emptied, or filled with generated rows.
"""

import asyncio
import atexit
import contextlib
import functools
import itertools
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import annotated_types
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from fastapi import FastAPI
from polyfactory.factories.pydantic_factory import ModelFactory
from pydantic import BaseModel, create_model
from sqlalchemy import NullPool, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import SQLModel
from sqlmodel.main import default_registry

from my_service import ReadsDep, SessionDep, Settings, query_budget

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"
# Nothing a test runs, in this process or in one it starts, may reach the service's database.
SERVICE_DATABASE_URL = os.environ.pop("DATABASE_URL", None)
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
# The tests' databases are named <prefix>_<purpose>_<random>: a role that may create only
# databases of a given prefix (a server shared by teams) sets TEST_DATABASE_PREFIX to it.
TEST_DATABASE_PREFIX = os.environ.get("TEST_DATABASE_PREFIX", "test_my_service")
# PostgreSQL cuts names at 63 bytes; the purpose and the random part take up to 27.
_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,35}")
# Nor does the service's configuration reach them: each test builds the settings it needs.
for _setting in Settings.model_fields:
    os.environ.pop(_setting.upper(), None)
Settings.model_config["env_file"] = None


def database_server() -> URL | None:
    """The PostgreSQL server the tests create their databases on; None means SQLite."""
    if not TEST_DATABASE_URL:
        return None
    try:
        url = Settings(database_url=TEST_DATABASE_URL).database_url.get_secret_value()
        server: URL | None = make_url(url)
    except ValueError:
        server = None
    if server is None or server.get_backend_name() != "postgresql":
        raise pytest.UsageError(
            "TEST_DATABASE_URL must name a PostgreSQL server whose user may create databases, "
            "for instance postgresql+asyncpg://postgres@127.0.0.1:5432/postgres; leave it unset "
            "to test on in-memory SQLite"
        )
    if not _PREFIX.fullmatch(TEST_DATABASE_PREFIX):
        raise pytest.UsageError(
            f"TEST_DATABASE_PREFIX={TEST_DATABASE_PREFIX!r}: want at most 36 lower-case letters, "
            "digits and underscores, not starting with a digit, such as test_my_team"
        )
    if SERVICE_DATABASE_URL is not None and _same_database(server, SERVICE_DATABASE_URL):
        raise pytest.UsageError(
            "TEST_DATABASE_URL names the database of the service's own DATABASE_URL, and the "
            "tests stay away from it. Point TEST_DATABASE_URL at another database of that "
            "server, such as .../postgres: the tests only connect to it to create a database "
            "of their own, which they drop at the end."
        )
    return server


def _same_database(server: URL, service_database_url: str) -> bool:
    try:
        url = Settings(database_url=service_database_url).database_url.get_secret_value()
    except ValueError:
        return False
    return _where(server) == _where(make_url(url))


def _where(url: URL) -> tuple[str, int, str | None]:
    return (url.host or "localhost", url.port or 5432, url.database)


@contextlib.contextmanager
def throwaway_database(purpose: str) -> Iterator[str]:
    """A new, empty database on the test server, named for this run alone, dropped afterwards."""
    server = database_server()
    assert server is not None, "throwaway databases are made on the TEST_DATABASE_URL server"
    name = f"{TEST_DATABASE_PREFIX}_{purpose}_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_on_server(server, f'CREATE DATABASE "{name}"'))
    except (OSError, SQLAlchemyError) as exc:
        where = server.render_as_string(hide_password=True)
        pytest.fail(f"cannot create a test database on TEST_DATABASE_URL ({where}): {exc}")
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_on_server(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _on_server(server: URL, statement: str) -> None:
    engine = create_async_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.exec_driver_sql(statement)
    finally:
        await engine.dispose()


@contextlib.contextmanager
def empty_database(directory: Path, purpose: str) -> Iterator[str]:
    """A new, empty database of the kind the suite runs on: a SQLite file in ``directory``,
    or a throwaway PostgreSQL database.
    """
    if database_server() is None:
        yield f"sqlite+aiosqlite:///{directory / f'{purpose}.db'}"
    else:
        with throwaway_database(purpose) as url:
            yield url


@contextlib.contextmanager
def database_at_head(directory: Path, purpose: str) -> Iterator[str]:
    """A new database of the kind the suite runs on, with the migrations' schema and no rows:
    a SQLite file in ``directory`` (see ``sqlite_file_at_head``), or a throwaway PostgreSQL
    database, migrated.
    """
    if database_server() is None:
        yield sqlite_file_at_head(directory / f"{purpose}.db")
    else:
        with throwaway_database(purpose) as url:
            upgrade_to_head(migration_engine(url))
            yield url


def migration_engine(url: str) -> AsyncEngine:
    """An engine to run migrations with: each run has an event loop of its own, so no pool."""
    return create_async_engine(url, poolclass=NullPool)


def alembic_config(engine: AsyncEngine) -> Config:
    """alembic.ini's configuration, to run Alembic's commands on the database of ``engine``."""
    config = Config(ALEMBIC_INI)
    config.attributes["connection"] = engine
    return config


def upgrade_to_head(engine: AsyncEngine) -> None:
    """Run every migration on the database of ``engine``."""
    command.upgrade(alembic_config(engine), "head")


def sqlite_file_at_head(path: Path) -> str:
    """A new SQLite file at ``path`` with the schema, recorded at the migrations' head, and no
    rows; its URL, for a service to start on (it refuses a database behind the migrations).
    """
    shutil.copyfile(_sqlite_file_at_head(frozenset(SQLModel.metadata.tables)), path)
    return f"sqlite+aiosqlite:///{path}"


@functools.cache
def _sqlite_file_at_head(tables: frozenset[str]) -> Path:
    # Built once for each set of tables (a test may add a model), then copied for each test.
    # create_all is far quicker than running every revision, and builds the same schema
    # (test_migrations proves it); the stamp records it as the migrations' head.
    path = Path(tempfile.mkdtemp(prefix="tests-at-head-")) / "head.db"
    atexit.register(shutil.rmtree, path.parent, ignore_errors=True)
    engine = sa.create_engine(f"sqlite:///{path}", poolclass=NullPool)
    try:
        with engine.begin() as connection:
            SQLModel.metadata.create_all(connection)
            MigrationContext.configure(connection).stamp(_scripts(), "head")
    finally:
        engine.dispose()
    return path


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(Config(ALEMBIC_INI))


async def empty_every_table(engine: AsyncEngine) -> None:
    """Make the database of ``engine`` hold the schema and no rows."""
    # An in-memory SQLite database starts empty, and create_all is the quickest way to its
    # schema (the migration tests prove it is the migrations' schema); on a file made by
    # sqlite_file_at_head it finds every table there. The PostgreSQL database was migrated
    # once for the session: emptying its tables is far quicker than a new one.
    async with engine.begin() as connection:
        if engine.dialect.name != "postgresql":
            await connection.run_sync(SQLModel.metadata.create_all)
            return
        tables = ", ".join(f'"{table.name}"' for table in SQLModel.metadata.sorted_tables)
        if tables:
            await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


async def fill_every_table(engine: AsyncEngine, rows: int = 3, seed: int = 0) -> None:
    """Give every table ``rows`` rows of generated values that its model accepts, each foreign
    key pointing at a row of the table it refers to.

    The keys are the database's, so rows created later get the next ones.
    """
    models = {mapper.local_table: mapper.class_ for mapper in default_registry.mappers}
    keys: dict[sa.Table, list[Any]] = {}
    for table in SQLModel.metadata.sorted_tables:
        model = models.get(table)
        if model is None:
            continue
        factory = ModelFactory.create_factory(_values_of(model))
        factory.seed_random(seed)
        references = _references(table, keys)
        added = keys[table] = []
        for number, parents in zip(range(rows), references, strict=False):
            generated = factory.build().model_dump()
            values = {
                column.name: generated[column.name]
                for column in table.columns
                if column.name in generated and not assigned_by_database(column)
            }
            values.update(parents)
            statement = sa.insert(table).values(values).returning(*table.primary_key.columns)
            try:
                async with engine.begin() as connection:
                    added.append((await connection.execute(statement)).one()[0])
            except SQLAlchemyError as exc:
                raise AssertionError(
                    f"cannot fill table {table.name} (row {number + 1}): {exc}; if the table is "
                    "missing, write its revision (see the README's migrations section)"
                ) from exc


def _values_of(model: type[SQLModel]) -> type[BaseModel]:
    # A model of the table model's fields and their constraints (lengths, bounds), without
    # the columns SQLModel keeps beside them, which the factory cannot copy.
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        bounds = [item for item in info.metadata if isinstance(item, annotated_types.BaseMetadata)]
        fields[name] = (Annotated[(info.annotation, *bounds)] if bounds else info.annotation, ...)
    return create_model(f"{model.__name__}Values", **fields)


def _references(table: sa.Table, keys: dict[sa.Table, list[Any]]) -> Iterator[dict[str, Any]]:
    # The foreign keys of each row to add: every combination of parent rows, in order, so
    # that a key made of foreign keys (a link table's) never repeats.
    foreign = [
        (column.name, keys.get(next(iter(column.foreign_keys)).column.table, []))
        for column in table.columns
        if column.foreign_keys
    ]
    if not foreign:
        yield from itertools.repeat({})
        return
    names = [name for name, _ in foreign]
    for combination in itertools.product(*(parents for _, parents in foreign)):
        yield dict(zip(names, combination, strict=True))


def assigned_by_database(column: sa.Column[Any]) -> bool:
    """True for a column whose values the database assigns: a key of its own, not a reference."""
    return bool(
        column.primary_key and column.autoincrement is not False and not column.foreign_keys
    )


def add_probe_routes(app: FastAPI) -> None:
    """A read and a write of one statement each, the two ways routes reach the database: the
    driver path of ``ReadsDep``, and a session.
    """

    @query_budget(1)
    async def read(reads: ReadsDep) -> dict[str, int]:
        return {"one": await reads.scalar(text("SELECT 1"))}

    @query_budget(1)
    async def write(session: SessionDep) -> dict[str, int]:
        one = (await (await session.connection()).exec_driver_sql("SELECT 1")).scalar_one()
        await session.commit()
        return {"one": one}

    app.get("/probe/read")(read)
    app.post("/probe/write")(write)
