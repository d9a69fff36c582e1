"""Profiling takes one request at a time: others asking meanwhile get a 503 at once."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from my_service import Settings, create_app, query_budget

from tests.harness.tokens import FULL_ACCESS


@pytest.fixture
async def held() -> asyncio.Event:
    """Released by the test: until then, /held does not answer."""
    return asyncio.Event()


@pytest.fixture
async def profiling_client(
    database_url: str,
    held: asyncio.Event,
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app with PROFILING_ENABLED=true and a route that waits for ``held``."""
    app = create_app(Settings(database_url=database_url, profiling_enabled=True))

    @app.get("/held")
    @query_budget(0)
    async def wait_until_released() -> dict[str, str]:
        await asyncio.wait_for(held.wait(), timeout=30)
        return {"status": "released"}

    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=FULL_ACCESS
        ) as client,
    ):
        yield client


async def test_a_second_profile_is_refused_while_one_runs(
    profiling_client: httpx.AsyncClient, held: asyncio.Event
) -> None:
    first = asyncio.create_task(profiling_client.get("/held", params={"profile": "text"}))
    for _ in range(50):  # until the first request is inside the profiler
        await asyncio.sleep(0)
        others = await asyncio.gather(
            *(profiling_client.get("/health", params={"profile": "text"}) for _ in range(7))
        )
        if all(response.status_code == 503 for response in others):
            break
    else:
        pytest.fail("the first profiled request never started")
    unprofiled = await profiling_client.get("/health")
    held.set()
    profiled = await first
    assert [response.headers["retry-after"] for response in others] == ["1"] * 7
    assert "profiled" in others[0].json()["detail"]
    assert unprofiled.status_code == 200
    assert (profiled.status_code, profiled.headers["x-profiled-status"]) == (200, "200")
    after = await profiling_client.get("/health", params={"profile": "text"})
    assert (after.status_code, after.headers["x-profiled-status"]) == (200, "200")
