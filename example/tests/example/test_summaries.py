"""Owner summaries: kept in a table, refreshed after the response, once per burst of writes."""

import asyncio
import logging
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlmodel import SQLModel

from my_service import (
    CoalescingRefresher,
    OwnerSummaryRead,
    Settings,
    create_app,
    expect_queries,
)

from tests.harness.databases import database_at_head
from tests.harness.tokens import FULL_ACCESS
from tests.harness.waiting import flushed, scrape

StartedApp = Callable[..., AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]


@pytest.fixture
def summaries(app: FastAPI) -> CoalescingRefresher:
    """The app's refresher, waiting for a flush: no refresh runs unless the test asks."""
    refresher: CoalescingRefresher = app.state.summaries
    refresher.max_delay = 3600
    return refresher


@pytest.fixture
def started_app(tmp_path: Path) -> Iterator[StartedApp]:
    """Run an app of the test's own, with its settings, until the block ends.

    Where refreshes run alongside requests, the app needs a database with a connection
    for each: in-memory SQLite has a single one, so these apps get a migrated database of
    their own (a SQLite file, or a throwaway PostgreSQL database).
    """
    with database_at_head(tmp_path, "summaries") as url:
        yield _starter(url)


def _starter(url: str) -> StartedApp:

    @asynccontextmanager
    async def start(**settings: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
        app = create_app(Settings(database_url=url, **settings))
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=transport, base_url="http://test", headers=FULL_ACCESS
            ) as client,
        ):
            yield app, client

    return start


async def write_burst(client: httpx.AsyncClient, owner_name: str = "Ada") -> dict[str, Any]:
    """An owner, five items (one archived), a change of price, a deletion: eight writes."""
    owner = (await client.post("/owners", json={"name": owner_name})).json()
    ids = []
    for number in range(5):
        body = {
            "name": f"item {number}",
            "price_cents": 100 * (number + 1),
            "owner_id": owner["id"],
            "archived": number == 4,
        }
        ids.append((await client.post("/items", json=body)).json()["id"])
    await client.patch(f"/items/{ids[0]}", json={"price_cents": 150})
    assert (await client.delete(f"/items/{ids[1]}")).status_code == 204
    # Live: item 0 at 150, item 2 at 300, item 3 at 400.
    return {"owner_id": owner["id"], "item_count": 3, "total_price_cents": 850}


async def test_a_burst_of_writes_causes_one_refresh_after_the_responses(
    client: httpx.AsyncClient, summaries: CoalescingRefresher
) -> None:
    expected = await write_burst(client)
    # Every response came back before any refresh ran: the writes did not wait for it.
    assert (summaries.stats.marked, summaries.stats.runs) == (8, 0)
    stale = (await client.get(f"/owners/{expected['owner_id']}/summary")).json()
    assert stale == {**expected, "item_count": 0, "total_price_cents": 0, "refreshed_at": None}
    await flushed(summaries)
    assert (summaries.stats.runs, summaries.stats.keys_refreshed) == (1, 1)
    with expect_queries(1):
        response = await client.get(f"/owners/{expected['owner_id']}/summary")
    summary = OwnerSummaryRead.model_validate(response.json())
    assert summary.model_dump(exclude={"refreshed_at"}) == expected
    assert summary.refreshed_at is not None


async def test_the_summary_is_fresh_once_the_delay_has_passed(started_app: StartedApp) -> None:
    async with started_app(summary_refresh_delay=0.01) as (app, client):
        # The database may hold earlier tests' owners.
        expected = await write_burst(client, owner_name=f"owner {uuid.uuid4()}")
        summaries: CoalescingRefresher = app.state.summaries
        async with asyncio.timeout(10):
            await summaries.settled()
        summary = (await client.get(f"/owners/{expected['owner_id']}/summary")).json()
    assert {key: summary[key] for key in expected} == expected
    assert summaries.stats.failures == 0


async def test_summary_of_a_missing_owner_is_a_404_in_one_query(
    client: httpx.AsyncClient,
) -> None:
    with expect_queries(1):
        response = await client.get("/owners/404/summary")
    assert response.status_code == 404
    assert response.json() == {"detail": "no owner has id 404"}


async def test_a_failed_refresh_is_logged_counted_and_retried_with_the_next(
    app: FastAPI,
    client: httpx.AsyncClient,
    summaries: CoalescingRefresher,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ada = (await client.post("/owners", json={"name": "Ada"})).json()
    async with app.state.engine.begin() as connection:
        await connection.execute(text("DROP TABLE ownersummary"))
    await flushed(summaries)
    metrics = await scrape(client)
    failed = ("refresh_failures_total", "refresh_runs_total", "refresh_pending")
    assert [metrics[name] for name in failed] == [1, 0, 1]
    assert "owner summaries: refreshing 1 keys failed" in caplog.text
    async with app.state.engine.begin() as connection:
        await connection.run_sync(SQLModel.metadata.create_all)
    grace = (await client.post("/owners", json={"name": "Grace"})).json()
    await flushed(summaries)
    assert summaries.stats.keys_refreshed == 2  # Ada's, which had failed, and Grace's
    for owner in (ada, grace):
        summary = (await client.get(f"/owners/{owner['id']}/summary")).json()
        assert summary["refreshed_at"] is not None


async def test_shutdown_runs_the_pending_refresh_and_leaves_no_task(
    started_app: StartedApp, caplog: pytest.LogCaptureFixture
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with started_app(summary_refresh_delay=3600) as (app, client):
            name = f"owner {uuid.uuid4()}"  # the database may hold earlier tests' owners
            owner = (await client.post("/owners", json={"name": name})).json()
            body = {"name": "Lamp", "price_cents": 100, "owner_id": owner["id"]}
            assert (await client.post("/items", json=body)).status_code == 201
            summaries: CoalescingRefresher = app.state.summaries
            assert summaries.stats.pending == 1
    assert caught == []
    assert (summaries.stats.runs, summaries.stats.pending) == (1, 0)
    assert (summaries.stats.failures, summaries.stats.abandoned) == (0, 0)
    assert [task for task in asyncio.all_tasks() if task.get_name().startswith("refresh ")] == []
    # A busy machine may make a request slow, and the request log says so: not the refresher's.
    warned = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert not [message for message in warned if not message.startswith("slow request")], warned
