"""Every route has a query budget; the counter reports what it caught."""

import logging

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy.exc import DBAPIError

from my_service import (
    QueryCountError,
    SessionDep,
    Settings,
    api_routes,
    budget_of,
    create_app,
    expect_queries,
    query_budget,
    record_queries,
)

from tests.harness.tokens import FULL_ACCESS

ROUTES = list(api_routes(create_app(Settings()).routes))


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: f"{route.path}")
def test_every_route_declares_a_query_budget(route: APIRoute) -> None:
    assert budget_of(route.endpoint) is not None, (
        f"{route.path} has no query budget: decorate {route.endpoint.__name__} with "
        "@query_budget(n) and test its exact query count"
    )


async def test_health_answers_without_touching_the_database(client: httpx.AsyncClient) -> None:
    with expect_queries(0):
        response = await client.get("/health")
    assert response.json() == {"status": "ok"}


async def test_responses_carry_their_query_count_in_server_timing(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/health")
    assert response.headers["server-timing"] == 'db;dur=0.00;desc="0 queries"'


async def test_server_timing_says_one_query_in_the_singular(app: FastAPI) -> None:
    @query_budget(1)
    async def one_query(session: SessionDep) -> None:
        await (await session.connection()).exec_driver_sql("SELECT 1")

    app.get("/one-query")(one_query)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=FULL_ACCESS
    ) as raw_client:
        response = await raw_client.get("/one-query")
    assert response.headers["server-timing"].startswith("db;dur=")
    assert response.headers["server-timing"].endswith(';desc="1 query"')


async def test_a_failed_count_shows_the_statements_and_where_they_came_from(
    app: FastAPI,
) -> None:
    async def select_one_three_times() -> None:
        async with app.state.engine.connect() as connection:
            for _ in range(3):
                await connection.exec_driver_sql("SELECT 1")

    with pytest.raises(QueryCountError) as caught, expect_queries(1):
        await select_one_three_times()
    report = str(caught.value)
    assert report.startswith("expected 1 query, 3 were sent:")
    assert "  1. SELECT 1\n" in report
    assert "in select_one_three_times" in report
    assert "repeated: 3 x SELECT 1" in report


async def test_failed_statements_are_timed_and_leave_nothing_on_the_connection(
    app: FastAPI,
) -> None:
    # A statement that raises never reaches after_cursor_execute; its capture, parameters
    # included, must not stay on the pooled connection for the connection's life.
    with record_queries() as recorder:
        async with app.state.reads.connect() as connection:
            for _ in range(200):
                with pytest.raises(DBAPIError):
                    await connection.exec_driver_sql("SELECT * FROM no_such_table")
            await connection.exec_driver_sql("SELECT 1")
            left_behind = repr(connection.info)
    assert recorder.count == 201
    untimed = [query.statement for query in recorder.queries if query.duration == 0]
    assert not untimed, f"{len(untimed)} statements were never timed: {untimed[:3]}"
    assert "CapturedQuery" not in left_behind, left_behind[:500]


async def test_a_request_over_its_budget_is_logged_with_its_statements(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    @query_budget(1)
    async def greedy(session: SessionDep) -> None:
        connection = await session.connection()
        for _ in range(2):
            await connection.exec_driver_sql("SELECT 1")

    app.get("/greedy")(greedy)
    transport = httpx.ASGITransport(app=app)  # not the test client: it would fail the request
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=FULL_ACCESS
    ) as raw_client:
        response = await raw_client.get("/greedy")
    assert response.headers["server-timing"].endswith('desc="2 queries"')
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    # Once, whatever else a busy machine logs (a slow request's warning, for one).
    over_budget = [message for message in warnings if "over its budget" in message]
    assert len(over_budget) == 1, warnings
    assert over_budget[0].startswith("GET /greedy sent 2 queries, over its budget of 1:")
    assert "repeated: 2 x SELECT 1" in over_budget[0]


async def test_a_request_slower_than_the_threshold_is_logged(
    caplog: pytest.LogCaptureFixture, database_url: str
) -> None:
    app = create_app(Settings(database_url=database_url, slow_request_ms=0))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=FULL_ACCESS
        ) as client,
    ):
        with caplog.at_level(logging.WARNING):
            await client.get("/health")
    assert any(
        record.getMessage().startswith("slow request: GET /health took")
        for record in caplog.records
    )
