"""The example's items: the exact queries of each route, archived items, the cached reads."""

from typing import Any

import httpx
import pytest
from sqlalchemy import func
from sqlmodel import select

from my_service import (
    MAX_PAGE_SIZE,
    Item,
    ItemPage,
    ItemRead,
    ItemTagLink,
    expect_queries,
)

from tests.example.api import create_item, create_owner, create_tag


async def create_tagged_item(client: httpx.AsyncClient) -> dict[str, Any]:
    """An item of Ada's tagged red."""
    owner = await create_owner(client)
    tag = await create_tag(client, "red")
    return await create_item(client, owner["id"], [tag["id"]])


async def test_create_item_runs_three_queries_and_returns_owner_and_tags(
    client: httpx.AsyncClient,
) -> None:
    owner = await create_owner(client)
    tags = [await create_tag(client, name) for name in ("red", "blue")]
    body = {"name": "Lamp", "price_cents": 1999, "owner_id": owner["id"], "tag_ids": [2, 1, 2]}
    # The owner and the tags checked in one statement, the item inserted, its links inserted.
    with expect_queries(3):
        response = await client.post("/items", json=body)
    assert response.status_code == 201, response.text
    item = response.json()
    assert item["owner"] == owner
    assert item["tags"] == tags
    assert item["archived"] is False


@pytest.mark.parametrize("archived", [False, True])
async def test_a_created_item_answers_the_body_its_get_answers(
    client: httpx.AsyncClient, archived: bool
) -> None:
    owner = await create_owner(client)
    tags = [await create_tag(client, name) for name in ("red", "blue", "green")]
    body = {
        "name": "Lamp",
        "price_cents": 1999,
        "owner_id": owner["id"],
        "tag_ids": [tag["id"] for tag in reversed(tags)],
        "archived": archived,
    }
    created = await client.post("/items", json=body)
    fetched = await client.get(f"/items/{created.json()['id']}")
    # The same bytes: the same fields in the same order, tags in id order.
    assert created.content == fetched.content
    assert list(created.json())[:2] == ["id", "name"]
    assert created.json()["archived"] is archived


@pytest.mark.parametrize(
    "change", [{"name": "Desk"}, {"archived": True}, {"tag_ids": [3, 1]}], ids=str
)
async def test_an_updated_item_answers_the_body_its_get_answers(
    client: httpx.AsyncClient, change: dict[str, Any]
) -> None:
    owner = await create_owner(client)
    tags = [await create_tag(client, name) for name in ("red", "blue", "green")]
    created = await create_item(client, owner["id"], [tags[2]["id"], tags[0]["id"]])
    updated = await client.patch(f"/items/{created['id']}", json=change)
    assert updated.status_code == 200, updated.text
    fetched = await client.get(f"/items/{created['id']}")
    assert updated.content == fetched.content


async def test_create_item_for_unknown_owner_is_a_422_and_inserts_nothing(
    client: httpx.AsyncClient,
) -> None:
    body = {"name": "Lamp", "price_cents": 1, "owner_id": 99, "tag_ids": []}
    response = await client.post("/items", json=body)
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "loc": ["body", "owner_id"],
                "msg": "no owner has id 99",
                "type": "not_found",
                "input": 99,
            }
        ]
    }
    assert (await client.get("/items")).json()["items"] == []


async def test_create_item_with_unknown_tags_is_a_422_and_inserts_nothing(
    client: httpx.AsyncClient,
) -> None:
    owner = await create_owner(client)
    await create_tag(client, "red")
    body = {"name": "Lamp", "price_cents": 1, "owner_id": owner["id"], "tag_ids": [1, 7, 8]}
    response = await client.post("/items", json=body)
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "loc": ["body", "tag_ids"],
                "msg": "no tags have ids [7, 8]",
                "type": "not_found",
                "input": [7, 8],
            }
        ]
    }
    assert (await client.get("/items")).json()["items"] == []


async def test_invalid_item_body_is_a_422_naming_the_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", json={"name": "", "price_cents": -1, "owner_id": 1})
    assert response.status_code == 422
    fields = {error["loc"][-1] for error in response.json()["detail"]}
    assert fields == {"name", "price_cents"}


async def test_get_item_runs_one_query_with_owner_and_tags(client: httpx.AsyncClient) -> None:
    owner = await create_owner(client)
    tags = [await create_tag(client, name) for name in ("red", "blue", "green")]
    created = await create_item(client, owner["id"], [tag["id"] for tag in reversed(tags)])
    with expect_queries(1):
        response = await client.get(f"/items/{created['id']}")
    assert response.status_code == 200
    assert response.json() == {**created, "tags": tags}  # tags in id order
    ItemRead.model_validate(response.json())  # the shape the OpenAPI schema promises


async def test_get_missing_item_is_a_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/items/404")
    assert response.status_code == 404
    assert response.json() == {"detail": "no item has id 404"}


@pytest.mark.parametrize("rows", [1, MAX_PAGE_SIZE // 2])
async def test_list_items_runs_two_queries_whatever_the_page_size(
    client: httpx.AsyncClient, rows: int
) -> None:
    owner = await create_owner(client)
    tags = [await create_tag(client, name) for name in ("red", "blue", "green")]
    for number in range(rows):
        await create_item(client, owner["id"], [tag["id"] for tag in tags[: number % 4]])
    with expect_queries(2):
        response = await client.get("/items", params={"limit": MAX_PAGE_SIZE})
    page = response.json()
    ItemPage.model_validate(page)  # the shape the OpenAPI schema promises
    assert len(page["items"]) == rows
    assert all(item["owner"] == owner for item in page["items"])


async def test_list_items_pages_in_id_order_and_filters_by_owner(
    client: httpx.AsyncClient,
) -> None:
    ada, grace = await create_owner(client, "Ada"), await create_owner(client, "Grace")
    for number in range(5):
        await create_item(client, (ada, grace)[number % 2]["id"], [], name=f"item {number}")
    first = (await client.get("/items", params={"owner_id": ada["id"], "limit": 2})).json()
    assert [item["name"] for item in first["items"]] == ["item 0", "item 2"]
    params = {"owner_id": ada["id"], "limit": 2, "after": first["next_after"]}
    second = (await client.get("/items", params=params)).json()
    assert [item["name"] for item in second["items"]] == ["item 4"]
    assert second["next_after"] is None


async def test_list_items_serves_live_items_unless_asked_for_archived_ones(
    client: httpx.AsyncClient,
) -> None:
    ada, grace = await create_owner(client, "Ada"), await create_owner(client, "Grace")
    for number in range(6):
        owner = (ada, grace)[number % 2]
        await create_item(client, owner["id"], [], name=f"item {number}", archived=number >= 4)
    pages = {
        "live": {},
        "live of Ada": {"owner_id": ada["id"]},
        "all": {"include_archived": True},
        "all of Ada": {"owner_id": ada["id"], "include_archived": True},
    }
    names = {}
    for label, params in pages.items():
        with expect_queries(2):
            response = await client.get("/items", params=params)
        names[label] = [item["name"] for item in response.json()["items"]]
    assert names == {
        "live": ["item 0", "item 1", "item 2", "item 3"],
        "live of Ada": ["item 0", "item 2"],
        "all": [f"item {number}" for number in range(6)],
        "all of Ada": ["item 0", "item 2", "item 4"],
    }


async def test_archiving_an_item_takes_it_off_the_list_and_back(
    client: httpx.AsyncClient,
) -> None:
    owner = await create_owner(client)
    created = await create_item(client, owner["id"], [])
    archived = await client.patch(f"/items/{created['id']}", json={"archived": True})
    assert archived.json() == {**created, "archived": True}
    assert (await client.get("/items")).json()["items"] == []
    # Still a resource: a GET by id finds it, archived or not.
    assert (await client.get(f"/items/{created['id']}")).json() == archived.json()
    await client.patch(f"/items/{created['id']}", json={"archived": False})
    assert [item["id"] for item in (await client.get("/items")).json()["items"]] == [1]


async def test_update_item_changes_given_fields_and_replaces_tags(
    client: httpx.AsyncClient,
) -> None:
    owner = await create_owner(client)
    red, blue = await create_tag(client, "red"), await create_tag(client, "blue")
    created = await create_item(client, owner["id"], [red["id"]])
    # Update (and so lock) the row, answering it with its owner's name; read the new tags,
    # unlink the old ones, link the new ones.
    with expect_queries(4):
        response = await client.patch(
            f"/items/{created['id']}", json={"price_cents": 5, "tag_ids": [blue["id"]]}
        )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert (updated["name"], updated["price_cents"], updated["tags"]) == ("Lamp", 5, [blue])
    assert (await client.get(f"/items/{created['id']}")).json() == updated


async def test_update_without_tags_runs_two_queries(client: httpx.AsyncClient) -> None:
    owner = await create_owner(client)
    created = await create_item(client, owner["id"], [])
    with expect_queries(2):
        response = await client.patch(f"/items/{created['id']}", json={"name": "Desk"})
    assert response.json() == {**created, "name": "Desk"}


async def test_update_with_unknown_tag_changes_nothing(client: httpx.AsyncClient) -> None:
    owner = await create_owner(client)
    created = await create_item(client, owner["id"], [])
    response = await client.patch(f"/items/{created['id']}", json={"name": "X", "tag_ids": [9]})
    assert response.status_code == 422
    assert (await client.get(f"/items/{created['id']}")).json() == created


async def test_update_missing_item_is_a_404(client: httpx.AsyncClient) -> None:
    response = await client.patch("/items/404", json={"name": "X"})
    assert response.status_code == 404


async def test_delete_item_runs_one_query_and_removes_its_tag_links(
    client: httpx.AsyncClient, app: Any
) -> None:
    owner = await create_owner(client)
    tag = await create_tag(client, "red")
    created = await create_item(client, owner["id"], [tag["id"]])
    with expect_queries(1):
        response = await client.delete(f"/items/{created['id']}")
    assert response.status_code == 204
    assert "content-type" not in response.headers
    assert response.content == b""
    assert (await client.get(f"/items/{created['id']}")).status_code == 404
    async with app.state.sessions() as session:
        links = await session.exec(select(func.count()).select_from(ItemTagLink))
        assert links.one() == 0
        assert (await session.exec(select(func.count()).select_from(Item))).one() == 0


async def test_delete_missing_item_is_a_404(client: httpx.AsyncClient) -> None:
    response = await client.delete("/items/404")
    assert response.status_code == 404


# Caching of GET /items/{item_id}


async def test_get_item_costs_one_query_cold_and_none_warm(client: httpx.AsyncClient) -> None:
    item = await create_tagged_item(client)
    with expect_queries(1):
        cold = await client.get(f"/items/{item['id']}")
    with expect_queries(0):
        warm = await client.get(f"/items/{item['id']}")
    assert cold.json() == warm.json() == item
    assert 'cache;desc="miss"' in cold.headers["server-timing"]
    assert 'cache;desc="hit"' in warm.headers["server-timing"]


@pytest.mark.parametrize("change", [{"name": "Desk"}, {"price_cents": 5}, {"tag_ids": []}], ids=str)
async def test_get_after_an_update_never_returns_the_old_value(
    client: httpx.AsyncClient, change: dict[str, object]
) -> None:
    item = await create_tagged_item(client)
    await client.get(f"/items/{item['id']}")  # cached
    updated = (await client.patch(f"/items/{item['id']}", json=change)).json()
    assert (await client.get(f"/items/{item['id']}")).json() == updated != item


async def test_get_after_a_delete_is_a_404(client: httpx.AsyncClient) -> None:
    item = await create_tagged_item(client)
    await client.get(f"/items/{item['id']}")
    await client.delete(f"/items/{item['id']}")
    assert (await client.get(f"/items/{item['id']}")).status_code == 404


async def test_a_missing_item_is_looked_up_once_then_served_from_the_cache(
    client: httpx.AsyncClient,
) -> None:
    with expect_queries(1):
        assert (await client.get("/items/1")).status_code == 404
    with expect_queries(0):
        assert (await client.get("/items/1")).status_code == 404
    created = await create_tagged_item(client)  # takes id 1: its cached "not found" must go
    assert (await client.get("/items/1")).json() == created
