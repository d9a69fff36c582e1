"""An owner's summary catches up by itself after a refresh fails: no further write needed."""

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import NullPool, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from my_service import CoalescingRefresher, Settings, create_app

from tests.harness.databases import database_at_head
from tests.harness.tokens import FULL_ACCESS


@contextlib.asynccontextmanager
async def summaries_locked(url: str) -> AsyncIterator[None]:
    """Another connection holds the lock a refresh needs, as a long batch job would."""
    database = make_url(url)
    if database.get_backend_name() == "sqlite":
        holder = sqlite3.connect(str(database.database), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("LOCK TABLE ownersummary IN EXCLUSIVE MODE"))
            yield
    finally:
        await engine.dispose()


@pytest.fixture
def migrated_url(tmp_path: Path) -> Iterator[str]:
    """A migrated database of the test's own, where the refresh runs beside a lock holder
    (in-memory SQLite has a single connection).
    """
    with database_at_head(tmp_path, "retries") as url:
        yield url


async def test_a_failed_refresh_is_retried_without_another_write(migrated_url: str) -> None:
    # Deadlines short enough that the held lock fails the refresh at once.
    settings = Settings(
        database_url=migrated_url,
        summary_refresh_delay=3600,
        database_pool_timeout=0.2,
        database_statement_timeout=1.0,
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=FULL_ACCESS
        ) as client,
    ):
        summaries: CoalescingRefresher = app.state.summaries
        refreshed = asyncio.Event()
        refresh = summaries.refresh

        async def watched(keys: frozenset[int]) -> None:
            await refresh(keys)
            refreshed.set()

        summaries.refresh = watched
        owner = (await client.post("/owners", json={"name": "Ada"})).json()
        for name in ("Lamp", "Desk"):
            body = {"name": name, "price_cents": 100, "owner_id": owner["id"]}
            assert (await client.post("/items", json=body)).status_code == 201
        async with summaries_locked(migrated_url):
            summaries.max_delay = 0.01  # and so the first retry comes soon
            await summaries.flush()
            assert (summaries.stats.failures, summaries.stats.runs) == (1, 0)
        # Not one more write: the retry alone brings the summary up to date.
        async with asyncio.timeout(10):
            await refreshed.wait()
        summary = (await client.get(f"/owners/{owner['id']}/summary")).json()
    assert (summary["item_count"], summary["total_price_cents"]) == (2, 200)
    assert summaries.stats.retries == summaries.stats.failures >= 1
