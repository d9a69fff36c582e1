"""Fixtures: a fresh database per test, and a client that enforces every route's budget.

Tests run on in-memory SQLite unless DATABASE_URL names another database, for instance
``DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/my_service_test pytest``.
"""

import asyncio
import os
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel
from starlette.types import Receive, Scope, Send

from my_service import QueryCountError, Settings, budget_of, create_app, record_queries

DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite+aiosqlite://")

# Every route any test called, as (method, path template): test_queries checks none is missed.
EXERCISED_ROUTES: set[tuple[str, str]] = set()


@pytest.fixture
async def app() -> AsyncIterator[FastAPI]:
    """The service on an empty database, started and stopped around the test."""
    app = create_app(Settings(database_url=DATABASE_URL, create_tables=True))
    async with app.router.lifespan_context(app):
        await _empty_tables(app.state.engine)
        yield app


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


async def _empty_tables(engine: AsyncEngine) -> None:
    # In-memory SQLite starts empty; a server database may hold the last test's rows.
    if engine.dialect.name != "postgresql":
        return
    tables = ", ".join(f'"{table.name}"' for table in SQLModel.metadata.sorted_tables)
    if not tables:
        return
    async with engine.begin() as connection:
        await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "route_coverage: checks what the other tests called, so it runs last"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("route_coverage") is not None)


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
