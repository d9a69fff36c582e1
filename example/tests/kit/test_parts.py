"""The kit's parts: each installs itself in its place, and one turned off costs nothing."""

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from my_service import (
    OverloadGuard,
    RequestBodyLimit,
    RequestObserver,
    SendDeadline,
    Settings,
    create_app,
)

# In memory: nothing here reads or writes a table, and the schema check passes it by.
IN_MEMORY = "sqlite+aiosqlite://"


def middleware_of(app: FastAPI) -> list[object]:
    return [entry.cls for entry in app.user_middleware]


async def metric_names(app: FastAPI) -> set[str]:
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    return {family.name for family in text_string_to_metric_families(response.text)}


def test_the_middleware_meets_a_request_in_the_documented_order() -> None:
    app = create_app(Settings(database_url=IN_MEMORY))
    assert middleware_of(app) == [SendDeadline, RequestBodyLimit, OverloadGuard, RequestObserver]


async def test_a_guard_turned_off_is_neither_installed_nor_counted() -> None:
    app = create_app(Settings(database_url=IN_MEMORY, guard_enabled=False))
    assert OverloadGuard not in middleware_of(app)
    assert not hasattr(app.state, "guard")
    names = await metric_names(app)
    assert "guard_limit" not in names, sorted(names)
    assert "guard_admitted" not in names, sorted(names)
    # The body limit and the send deadline are parts of their own, still on and counted
    # under the names they have always had.
    assert {"guard_bodies_too_large", "guard_responses_not_read"} <= names, sorted(names)


async def test_every_part_with_counters_is_on_metrics() -> None:
    names = await metric_names(create_app(Settings(database_url=IN_MEMORY)))
    for part in ("guard_limit", "cache_hits", "cache_entries", "offload_threads"):
        assert part in names, sorted(names)
