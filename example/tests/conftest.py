"""Fixtures: a database of the tests' own, empty for each test, and a client that holds every
route to its query budget and its statement count flat as rows grow.

The tests never touch the service's database (``DATABASE_URL``) or its settings. They run on
SQLite (a file of each test's own) unless ``TEST_DATABASE_URL`` names a PostgreSQL server
whose user may create databases, for instance
``TEST_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/postgres pytest``: the session
then creates a database of its own there, with a new name, builds its schema by running the
migrations, empties it before each test, and drops it at the end.

The tests are laid out by owner: ``kit/`` tests the template's half of the module,
``example/`` the example domain, and your own tests go beside this file.
"""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_alembic
from fastapi import FastAPI
from pytest_alembic import MigrationContext

from my_service import Settings, api_routes, create_app

from tests.harness.budgets import EXERCISED_ROUTES, budget_client
from tests.harness.databases import (
    ALEMBIC_INI,
    TEST_DATABASE_PREFIX,
    database_server,
    empty_database,
    empty_every_table,
    migration_engine,
    sqlite_file_at_head,
    throwaway_database,
    upgrade_to_head,
)

TESTS = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    database_server()  # refuses a TEST_DATABASE_URL it cannot or must not use, before any test
    config.addinivalue_line("markers", "alembic: runs the migrations (pytest-alembic)")


def pytest_report_header() -> str:
    server = database_server()
    if server is None:
        return "database: SQLite, a file per test (TEST_DATABASE_URL names a PostgreSQL server)"
    where = server.render_as_string(hide_password=True)
    return f"database: throwaway databases on {where}, named {TEST_DATABASE_PREFIX}_..."


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` (pyproject.toml) spreads a run of a directory, the whole suite by default,
    over the machine's cores; a run of named files stays in this one process, where starting
    workers would cost more than they save.
    """
    if config.args and all(Path(argument.split("::")[0]).is_file() for argument in config.args):
        return 0
    return None


def pytest_collection_finish(session: pytest.Session) -> None:
    # Whether every test file runs: only then can the suite tell a route no test calls.
    collected = {Path(str(item.path)) for item in session.items}
    every_file = set(TESTS.rglob("test_*.py"))
    deselected = session.config.stash.get(_DESELECTED, False)
    session.config.stash[_WHOLE_SUITE] = every_file <= collected and not deselected


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items:
        items[0].config.stash[_DESELECTED] = True


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fail a run of the whole suite in which a route was never called by any test."""
    worker_output: dict[str, Any] | None = getattr(session.config, "workeroutput", None)
    if worker_output is not None:
        # A pytest-xdist worker ran its share of the tests: the controller checks them all.
        worker_output["whole_suite"] = session.config.stash.get(_WHOLE_SUITE, False)
        worker_output["exercised_routes"] = sorted(EXERCISED_ROUTES)
        return
    stopped_early = session.shouldstop or session.shouldfail
    if stopped_early or not session.config.stash.get(_WHOLE_SUITE, False):
        return
    routes = {
        (method, route.path)
        for route in api_routes(create_app(Settings()).routes)
        for method in route.methods or ()
    }
    for method, path in sorted(routes - EXERCISED_ROUTES):
        # A failed test of its own, so that the route and the fix are on a FAILED line and
        # in the summary's count, not only in a report a green last line would hide.
        name = f"every route is called by a test[{method} {path}]"
        report = pytest.TestReport(
            nodeid=f"tests/conftest.py::{name}",
            location=("tests/conftest.py", 0, name),
            keywords={},
            outcome="failed",
            longrepr=(
                f"no test called {method} {path}: add a test that calls it through the client "
                "fixture and checks its query count with expect_queries()"
            ),
            when="call",
        )
        session.config.hook.pytest_runtest_logreport(report=report)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """Gather the routes a pytest-xdist worker's tests called, for the check at the end."""
    output = node.workeroutput
    EXERCISED_ROUTES.update((method, path) for method, path in output["exercised_routes"])
    whole_suite = node.config.stash.get(_WHOLE_SUITE, True) and output["whole_suite"]
    node.config.stash[_WHOLE_SUITE] = whole_suite


_WHOLE_SUITE = pytest.StashKey[bool]()
_DESELECTED = pytest.StashKey[bool]()


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
async def app(database_url: str, tmp_path: Path) -> AsyncIterator[FastAPI]:
    """The service on an empty database of the tests' own, started and stopped around the test."""
    if database_server() is None:
        # A SQLite file of the test's own: the service's background work may write while the
        # test does, and an in-memory database has a single connection for both.
        database_url = sqlite_file_at_head(tmp_path / "service.db")
    app = create_app(Settings(database_url=database_url))
    async with app.router.lifespan_context(app):
        await empty_every_table(app.state.engine)
        yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the service that fails any request over its route's query budget
    and, after the test, any GET whose statement count grows with the rows in the tables.
    """
    async with budget_client(app) as client:
        yield client
