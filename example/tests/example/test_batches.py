"""Batches of items: a constant number of statements, all or nothing, bounded."""

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import TypeAdapter

from my_service import MAX_BATCH_ITEMS, ItemRead, expect_queries

from tests.example.api import create_owner, create_tag
from tests.harness.waiting import flushed


def batch(owner_ids: list[int], tag_ids: list[list[int]], count: int) -> dict[str, Any]:
    """A batch body of ``count`` items, their owners and tags taken in turn from the lists."""
    return {
        "items": [
            {
                "name": f"step {number}",
                "price_cents": number,
                "owner_id": owner_ids[number % len(owner_ids)],
                "tag_ids": tag_ids[number % len(tag_ids)],
            }
            for number in range(count)
        ]
    }


@pytest.mark.parametrize("count", [1, 10, MAX_BATCH_ITEMS])
async def test_create_items_runs_four_queries_whatever_the_batch_size(
    client: httpx.AsyncClient, count: int
) -> None:
    ada, grace = await create_owner(client, "Ada"), await create_owner(client, "Grace")
    red, blue = await create_tag(client, "red"), await create_tag(client, "blue")
    body = batch([ada["id"], grace["id"]], [[red["id"]], [blue["id"], red["id"]], []], count)
    # Owners, tags, items, links.
    with expect_queries(4):
        response = await client.post("/items/batch", json=body)
    assert response.status_code == 201, response.text
    TypeAdapter(list[ItemRead]).validate_python(response.json())  # as the OpenAPI schema says
    created = response.json()
    assert [item["name"] for item in created] == [f"step {n}" for n in range(count)]
    assert (created[0]["owner"], created[0]["tags"]) == (ada, [red])
    if count > 1:
        assert (created[1]["owner"], created[1]["tags"]) == (grace, [red, blue])
    page = await client.get("/items", params={"limit": MAX_BATCH_ITEMS // 10})
    assert page.json()["items"] == created[: MAX_BATCH_ITEMS // 10]


async def test_a_batchs_items_answer_the_bodies_their_gets_answer(
    client: httpx.AsyncClient,
) -> None:
    owner = await create_owner(client)
    tags = [await create_tag(client, name) for name in ("red", "blue", "green")]
    body = batch([owner["id"]], [[3, 1], [], [2, 2]], 3)
    created = (await client.post("/items/batch", json=body)).json()
    for item in created:
        assert (await client.get(f"/items/{item['id']}")).json() == item
    assert [item["tags"] for item in created] == [[tags[0], tags[2]], [], [tags[1]]]


async def test_a_batch_with_unknown_owners_or_tags_is_a_422_naming_each_row_and_writes_nothing(
    client: httpx.AsyncClient,
) -> None:
    owner = await create_owner(client)
    tag = await create_tag(client, "red")
    body = batch([owner["id"]], [[tag["id"]]], 4)
    body["items"][1]["owner_id"] = 99
    body["items"][3]["tag_ids"] = [tag["id"], 8, 7]
    response = await client.post("/items/batch", json=body)
    assert response.status_code == 422, response.text
    assert response.json() == {
        "detail": [
            {
                "loc": ["body", "items", 1, "owner_id"],
                "msg": "no owner has id 99",
                "type": "not_found",
                "input": 99,
            },
            {
                "loc": ["body", "items", 3, "tag_ids"],
                "msg": "no tags have ids [7, 8]",
                "type": "not_found",
                "input": [7, 8],
            },
        ]
    }
    assert (await client.get("/items")).json()["items"] == []


async def test_a_batch_over_the_limit_is_a_422_saying_the_limit(
    client: httpx.AsyncClient,
) -> None:
    owner = await create_owner(client)
    body = batch([owner["id"]], [[]], MAX_BATCH_ITEMS + 1)
    response = await client.post("/items/batch", json=body)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "items"]
    assert f"at most {MAX_BATCH_ITEMS} items" in error["msg"]
    assert (await client.get("/items")).json()["items"] == []


async def test_an_empty_batch_is_a_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/items/batch", json={"items": []})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "items"]


async def test_a_batch_over_the_body_limit_is_a_413_and_writes_nothing(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    owner = await create_owner(client)
    body = batch([owner["id"]], [[]], MAX_BATCH_ITEMS)
    for item in body["items"]:
        item["description"] = "x" * 2000
    response = await client.post("/items/batch", json=body)
    assert response.status_code == 413, response.text
    assert str(app.state.settings.max_body_bytes) in response.json()["detail"]
    assert (await client.get("/items")).json()["items"] == []


async def test_a_batch_drops_the_cached_not_found_of_its_new_ids(
    client: httpx.AsyncClient,
) -> None:
    owner = await create_owner(client)
    assert (await client.get("/items/2")).status_code == 404  # cached "not found"
    created = (await client.post("/items/batch", json=batch([owner["id"]], [[]], 2))).json()
    assert (await client.get("/items/2")).json() == created[1]


async def test_a_batch_marks_its_owners_summaries_once_each(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    ada, grace = await create_owner(client, "Ada"), await create_owner(client, "Grace")
    await flushed(app.state.summaries)
    await client.post("/items/batch", json=batch([ada["id"], grace["id"]], [[]], 5))
    assert app.state.summaries.stats.pending == 2
    await flushed(app.state.summaries)
    summary = (await client.get(f"/owners/{ada['id']}/summary")).json()
    assert (summary["item_count"], summary["total_price_cents"]) == (3, 0 + 2 + 4)
