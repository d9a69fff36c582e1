"""Fixtures: a database of the tests' own, empty for each test, and a client that enforces
every route's budget.

The tests never touch the service's database (``DATABASE_URL``). They run on in-memory SQLite
unless ``TEST_DATABASE_URL`` names a PostgreSQL server whose user may create databases, for
instance ``TEST_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/postgres pytest``:
the session then creates a database of its own there, with a new name, builds its schema by
running the migrations, empties it before each test, and drops it at the end.
"""

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_alembic
from alembic import command
from alembic.config import Config
from fastapi import FastAPI
from fastapi.routing import APIRoute
from prometheus_client.parser import text_string_to_metric_families
from pytest_alembic import MigrationContext
from sqlalchemy import NullPool, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import SQLModel
from starlette.types import Receive, Scope, Send

from my_service import QueryCountError, Settings, budget_of, create_app, record_queries

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"
# Nothing a test runs, in this process or in one it starts, may reach the service's database.
SERVICE_DATABASE_URL = os.environ.pop("DATABASE_URL", None)
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")

# Every route any test called, as (method, path template): test_queries checks none is missed.
EXERCISED_ROUTES: set[tuple[str, str]] = set()


def database_server() -> URL | None:
    """The PostgreSQL server the tests create their databases on; None means SQLite."""
    if not TEST_DATABASE_URL:
        return None
    try:
        server = make_url(Settings(database_url=TEST_DATABASE_URL).database_url)
    except ValueError:
        server = None
    if server is None or server.get_backend_name() != "postgresql":
        raise pytest.UsageError(
            "TEST_DATABASE_URL must name a PostgreSQL server whose user may create databases, "
            "for instance postgresql+asyncpg://postgres@127.0.0.1:5432/postgres; leave it unset "
            "to test on in-memory SQLite"
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
        service = make_url(Settings(database_url=service_database_url).database_url)
    except ValueError:
        return False
    return _where(server) == _where(service)


def _where(url: URL) -> tuple[str, int, str | None]:
    return (url.host or "localhost", url.port or 5432, url.database)


def pytest_configure(config: pytest.Config) -> None:
    database_server()  # refuses a TEST_DATABASE_URL it cannot or must not use, before any test
    config.addinivalue_line(
        "markers", "route_coverage: checks what the other tests called, so it runs last"
    )
    config.addinivalue_line("markers", "alembic: runs the migrations (pytest-alembic)")


def pytest_report_header() -> str:
    server = database_server()
    if server is None:
        return "database: in-memory SQLite (TEST_DATABASE_URL names a PostgreSQL server to use)"
    return f"database: throwaway databases on {server.render_as_string(hide_password=True)}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("route_coverage") is not None)


@contextlib.contextmanager
def throwaway_database(purpose: str) -> Iterator[str]:
    """A new, empty database on the test server, named for this run alone, dropped afterwards."""
    server = database_server()
    assert server is not None, "throwaway databases are made on the TEST_DATABASE_URL server"
    name = f"test_my_service_{purpose}_{uuid.uuid4().hex[:12]}"
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


def migration_engine(url: str) -> AsyncEngine:
    """An engine to run migrations with: each run has an event loop of its own, so no pool."""
    return create_async_engine(url, poolclass=NullPool)


def upgrade_to_head(engine: AsyncEngine) -> None:
    """Run every migration on the database of ``engine``."""
    config = Config(ALEMBIC_INI)
    config.attributes["connection"] = engine
    command.upgrade(config, "head")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """The tests' database: in-memory SQLite, new for every engine, or a PostgreSQL database
    made for this session, migrated to head, and dropped at the end.
    """
    if database_server() is None:
        yield "sqlite+aiosqlite://"
        return
    with throwaway_database("session") as url:
        upgrade_to_head(migration_engine(url))
        yield url


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


@pytest.fixture
def alembic_runner(tmp_path: Path) -> Iterator[MigrationContext]:
    """pytest-alembic's runner on an empty database of the test's own."""
    config = pytest_alembic.Config.from_raw_config({"file": str(ALEMBIC_INI)})
    with empty_database(tmp_path, "migrations") as url:
        # The runner takes async engines too, though its annotation names only sync ones.
        engine: Any = migration_engine(url)
        with pytest_alembic.runner(config, engine) as runner:
            yield runner


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[FastAPI]:
    """The service on an empty database of the tests' own, started and stopped around the test."""
    app = create_app(Settings(database_url=database_url))
    async with app.router.lifespan_context(app):
        await _empty_database(app.state.engine)
        yield app


async def _empty_database(engine: AsyncEngine) -> None:
    # In-memory SQLite starts empty, and create_all is the quickest way to its schema (the
    # migration tests prove it is the migrations' schema). The PostgreSQL database was
    # migrated once for the session: emptying its tables is far quicker than a new one.
    async with engine.begin() as connection:
        if engine.dialect.name != "postgresql":
            await connection.run_sync(SQLModel.metadata.create_all)
            return
        tables = ", ".join(f'"{table.name}"' for table in SQLModel.metadata.sorted_tables)
        if tables:
            await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the service that fails any request over its route's query budget."""
    transport = httpx.ASGITransport(app=_BudgetEnforcer(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


class _BudgetEnforcer:
    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with record_queries(call_sites=True) as recorder:
            await self.app(scope, receive, send)
        route = scope.get("route")
        if not isinstance(route, APIRoute):
            return
        EXERCISED_ROUTES.add((scope["method"], route.path))
        budget = budget_of(route.endpoint)
        if budget is not None and recorder.count > budget:
            raise QueryCountError(
                f"{scope['method']} {route.path} sent {recorder.count} queries, "
                f"over its budget of {budget}:\n{recorder.report()}"
            )


async def eventually(condition: Callable[[], bool]) -> None:
    """Let the other tasks run until ``condition`` holds; fail if it never does."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def scrape(client: httpx.AsyncClient) -> dict[str, float]:
    """The service's /metrics, parsed: each sample without labels, by name."""
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if not sample.labels
    }
