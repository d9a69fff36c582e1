"""Concurrent writes to one item: each ends as one whole write, a clean 409 or a 404.

The racing requests start together, each in its own transaction on its own connection,
against the suite's database. In-memory SQLite has a single connection, on which nothing could run
concurrently, so there the races run on a SQLite file of the test's own.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func
from sqlmodel import SQLModel, select

from my_service import ItemTagLink, Settings, Transaction, create_app, get_writes

from tests.harness.tokens import FULL_ACCESS

ROUNDS = 10
WRITERS = 4


@pytest.fixture
async def racing_app(app: FastAPI, tmp_path: Path) -> AsyncIterator[FastAPI]:
    """The service on the suite's database (a SQLite file if that is in memory), unguarded.

    The racing requests wait for each other: an overload guard admitting fewer of them at
    once than race would keep the others out until they were refused.
    """
    url = app.state.engine.url
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        database_url = f"sqlite+aiosqlite:///{tmp_path / 'races.db'}"
    else:
        database_url = url.render_as_string(hide_password=False)
    racing = create_app(Settings(database_url=database_url, guard_enabled=False))
    async with racing.router.lifespan_context(racing):
        # A SQLite file of the test's own starts empty; a server database has its tables.
        async with racing.state.engine.begin() as connection:
            await connection.run_sync(SQLModel.metadata.create_all)
        yield racing


@pytest.fixture
async def racer(racing_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client that sees a failure as the 500 a real client would get."""
    transport = httpx.ASGITransport(app=racing_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=FULL_ACCESS
    ) as client:
        yield client


@asynccontextmanager
async def started_together(app: FastAPI, requests: int) -> AsyncIterator[None]:
    """Hold each write once it has its transaction until all ``requests`` have one."""
    barrier = asyncio.Barrier(requests)

    async def writes_after_the_barrier() -> AsyncIterator[Transaction]:
        async with Transaction(app.state.reads) as writes:
            async with asyncio.timeout(30):  # a request that never comes fails the test
                await barrier.wait()
            yield writes

    app.dependency_overrides[get_writes] = writes_after_the_barrier
    try:
        yield
    finally:
        del app.dependency_overrides[get_writes]


async def created(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def explain(responses: list[httpx.Response]) -> str:
    return "\n".join(f"{response.status_code} {response.text}" for response in responses)


async def test_concurrent_updates_leave_exactly_one_writers_tags_and_fields(
    racing_app: FastAPI, racer: httpx.AsyncClient
) -> None:
    owner = await created(racer, "/owners", {"name": "Ada"})
    tags = [await created(racer, "/tags", {"name": f"tag {n}"}) for n in range(WRITERS)]
    for _ in range(ROUNDS):
        body = {"name": "Lamp", "price_cents": 1, "owner_id": owner["id"], "tag_ids": []}
        item = await created(racer, "/items", body)
        async with started_together(racing_app, WRITERS):
            responses = await asyncio.gather(
                *(
                    racer.patch(
                        f"/items/{item['id']}",
                        json={"price_cents": 100 + n, "tag_ids": [tag["id"]]},
                    )
                    for n, tag in enumerate(tags)
                )
            )
        assert [response.status_code for response in responses] == [200] * WRITERS, explain(
            responses
        )
        for response, tag in zip(responses, tags, strict=True):
            assert response.json()["tags"] == [tag]
        # The item as stored is what one of the acknowledged writes said it is: its tags
        # and its price from the same writer, not a union or a mix.
        stored = (await racer.get(f"/items/{item['id']}")).json()
        assert stored in [response.json() for response in responses], (
            f"stored: {stored}\nacknowledged:\n{explain(responses)}"
        )


async def test_an_update_racing_a_delete_is_applied_first_or_a_404_never_a_500(
    racing_app: FastAPI, racer: httpx.AsyncClient
) -> None:
    owner = await created(racer, "/owners", {"name": "Ada"})
    red, blue = [await created(racer, "/tags", {"name": name}) for name in ("red", "blue")]
    for _ in range(ROUNDS):
        body = {"name": "Lamp", "price_cents": 1, "owner_id": owner["id"], "tag_ids": [red["id"]]}
        item = await created(racer, "/items", body)
        async with started_together(racing_app, 2):
            patched, deleted = await asyncio.gather(
                racer.patch(f"/items/{item['id']}", json={"name": "Desk", "tag_ids": [blue["id"]]}),
                racer.delete(f"/items/{item['id']}"),
            )
        statuses = (patched.status_code, deleted.status_code)
        assert statuses in {(200, 204), (404, 204)}, explain([patched, deleted])
        assert (await racer.get(f"/items/{item['id']}")).status_code == 404
        async with racing_app.state.sessions() as session:
            links = select(func.count()).where(ItemTagLink.item_id == item["id"])
            assert (await session.exec(links)).one() == 0


async def test_two_creates_of_one_name_are_a_201_and_a_409(
    racing_app: FastAPI, racer: httpx.AsyncClient
) -> None:
    for round_ in range(ROUNDS):
        async with started_together(racing_app, 2):
            responses = await asyncio.gather(
                *(racer.post("/owners", json={"name": f"Ada {round_}"}) for _ in range(2))
            )
        statuses = sorted(response.status_code for response in responses)
        assert statuses == [201, 409], explain(responses)
    owners = (await racer.get("/owners", params={"limit": 100})).json()["items"]
    assert len(owners) == ROUNDS
