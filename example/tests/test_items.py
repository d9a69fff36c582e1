"""The example domain: owners, tags and items.

The exact queries of each route, one page shape and one field order for every response,
archived items, the cached item reads, and the CSV export.
"""

import asyncio
import csv
import io
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, func
from sqlmodel import select
from starlette.types import Message, Receive, Scope, Send

import my_service
from conftest import scrape
from my_service import (
    MAX_PAGE_SIZE,
    Item,
    ItemPage,
    ItemRead,
    ItemTagLink,
    Offloader,
    OwnerPage,
    OwnerRead,
    TagPage,
    TagRead,
    expect_queries,
)


async def create_owner(client: httpx.AsyncClient, name: str = "Ada") -> dict[str, Any]:
    response = await client.post("/owners", json={"name": name})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def create_tag(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    response = await client.post("/tags", json={"name": name})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def create_item(
    client: httpx.AsyncClient,
    owner_id: int,
    tag_ids: list[int],
    name: str = "Lamp",
    *,
    archived: bool = False,
) -> dict[str, Any]:
    body = {
        "name": name,
        "price_cents": 1999,
        "owner_id": owner_id,
        "tag_ids": tag_ids,
        "archived": archived,
    }
    response = await client.post("/items", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_create_owner_runs_one_insert(client: httpx.AsyncClient) -> None:
    with expect_queries(1):
        response = await client.post("/owners", json={"name": "Ada"})
    assert response.status_code == 201
    assert response.json() == {"id": 1, "name": "Ada"}


async def test_duplicate_owner_name_is_a_409_and_inserts_nothing(
    client: httpx.AsyncClient,
) -> None:
    await create_owner(client, "Ada")
    response = await client.post("/owners", json={"name": "Ada"})
    assert response.status_code == 409
    assert response.json() == {"detail": "an owner named 'Ada' already exists"}
    assert len((await client.get("/owners")).json()["items"]) == 1


@pytest.mark.parametrize(
    ("path", "page_model", "create"),
    [("/owners", OwnerPage, create_owner), ("/tags", TagPage, create_tag)],
    ids=["owners", "tags"],
)
async def test_owners_and_tags_page_by_id_in_one_query_like_items(
    client: httpx.AsyncClient, path: str, page_model: type[Any], create: Any
) -> None:
    for name in ("Ada", "Grace", "Edsger"):
        await create(client, name)
    with expect_queries(1):
        first = (await client.get(path, params={"limit": 2})).json()
    page_model.model_validate(first)  # the shape the OpenAPI schema promises
    assert first["next_after"] == first["items"][-1]["id"] == 2
    with expect_queries(1):
        second = (await client.get(path, params={"after": first["next_after"]})).json()
    assert second["next_after"] is None
    names = [row["name"] for row in first["items"] + second["items"]]
    assert names == ["Ada", "Grace", "Edsger"]


@pytest.mark.parametrize("path", ["/owners", "/tags", "/items"])
@pytest.mark.parametrize("limit", [0, MAX_PAGE_SIZE + 1])
async def test_every_list_refuses_a_page_size_out_of_bounds(
    client: httpx.AsyncClient, path: str, limit: int
) -> None:
    response = await client.get(path, params={"limit": limit})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "limit"]


async def test_get_owner_and_get_tag_run_one_query_each(client: httpx.AsyncClient) -> None:
    owner = await create_owner(client)
    tag = await create_tag(client, "red")
    with expect_queries(1):
        got_owner = await client.get(f"/owners/{owner['id']}")
    with expect_queries(1):
        got_tag = await client.get(f"/tags/{tag['id']}")
    assert OwnerRead.model_validate(got_owner.json()).id == owner["id"]
    assert TagRead.model_validate(got_tag.json()).name == "red"


@pytest.mark.parametrize("kind", ["owner", "tag"])
async def test_get_missing_owner_or_tag_is_a_404_in_one_query(
    client: httpx.AsyncClient, kind: str
) -> None:
    with expect_queries(1):
        response = await client.get(f"/{kind}s/404")
    assert response.status_code == 404
    assert response.json() == {"detail": f"no {kind} has id 404"}


@pytest.mark.parametrize(
    ("path", "body"),
    [("/owners", {"name": "Ada"}), ("/tags", {"name": "red"})],
    ids=["owner", "tag"],
)
async def test_a_created_owner_or_tag_answers_the_body_its_get_answers(
    client: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    created = await client.post(path, json=body)
    fetched = await client.get(f"{path}/{created.json()['id']}")
    # The same bytes: the same fields, in the same order.
    assert created.content == fetched.content
    assert list(created.json()) == ["id", "name"]


def test_the_openapi_schema_shows_one_page_shape_and_a_get_by_id_per_collection(
    app: FastAPI,
) -> None:
    schema = app.openapi()
    components = schema["components"]["schemas"]
    collections = [
        path
        for path, operations in schema["paths"].items()
        if "get" in operations and "{" not in path and path not in ("/health", "/metrics")
    ]
    assert sorted(collections) == ["/items", "/owners", "/tags"]
    for path in collections:
        operation = schema["paths"][path]["get"]
        reference = operation["responses"]["200"]["content"]["application/json"]["schema"]
        page = components[reference["$ref"].rsplit("/", 1)[-1]]
        assert list(page["properties"]) == ["items", "next_after"], path
        parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}
        assert parameters["limit"]["schema"]["maximum"] == MAX_PAGE_SIZE, path
        assert "after" in parameters, path
        by_id = path + "/{" + path[1:-1] + "_id}"
        assert "get" in schema["paths"].get(by_id, {}), f"{path} has no GET {by_id}"
    for name in ("ItemRead", "OwnerRead", "TagRead"):
        assert next(iter(components[name]["properties"])) == "id", name


async def test_create_tag_runs_one_insert(client: httpx.AsyncClient) -> None:
    with expect_queries(1):
        created = await create_tag(client, "red")
    assert created == {"id": 1, "name": "red"}


async def test_duplicate_tag_name_is_a_409(client: httpx.AsyncClient) -> None:
    await create_tag(client, "red")
    response = await client.post("/tags", json={"name": "red"})
    assert response.status_code == 409
    assert response.json() == {"detail": "a tag named 'red' already exists"}


async def test_create_item_runs_four_queries_and_returns_owner_and_tags(
    client: httpx.AsyncClient,
) -> None:
    owner = await create_owner(client)
    tags = [await create_tag(client, name) for name in ("red", "blue")]
    body = {"name": "Lamp", "price_cents": 1999, "owner_id": owner["id"], "tag_ids": [1, 2]}
    with expect_queries(4):
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
    # Load and lock the item with its owner (FOR UPDATE: no extra statement), its tags, load
    # the new tags, update the row, unlink the old tag, link the new.
    with expect_queries(6):
        response = await client.patch(
            f"/items/{created['id']}", json={"price_cents": 5, "tag_ids": [blue["id"]]}
        )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert (updated["name"], updated["price_cents"], updated["tags"]) == ("Lamp", 5, [blue])
    assert (await client.get(f"/items/{created['id']}")).json() == updated


async def test_update_without_tags_runs_three_queries(client: httpx.AsyncClient) -> None:
    owner = await create_owner(client)
    created = await create_item(client, owner["id"], [])
    with expect_queries(3):
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


async def create_tagged_item(client: httpx.AsyncClient) -> dict[str, object]:
    owner = (await client.post("/owners", json={"name": "Ada"})).json()
    tag = (await client.post("/tags", json={"name": "red"})).json()
    body = {"name": "Lamp", "price_cents": 100, "owner_id": owner["id"], "tag_ids": [tag["id"]]}
    created: dict[str, object] = (await client.post("/items", json=body)).json()
    return created


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


async def test_metrics_report_the_cache_counters(client: httpx.AsyncClient) -> None:
    item = await create_tagged_item(client)
    for _ in range(3):
        await client.get(f"/items/{item['id']}")
    with expect_queries(0):
        samples = await scrape(client)
    cache = {name: value for name, value in samples.items() if name.startswith("cache_")}
    assert cache == {
        "cache_hits_total": 2,
        "cache_misses_total": 1,
        "cache_loads_total": 1,
        "cache_coalesced_total": 0,
        "cache_load_errors_total": 0,
        "cache_bypassed_total": 0,
        "cache_notifications_received_total": 0,
        "cache_listener_reconnects_total": 0,
        "cache_entries": 1,
    }


# The CSV export, streamed in batches and formatted in a worker thread


async def test_export_runs_two_queries_and_formats_the_csv_in_a_thread(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = (await client.post("/owners", json={"name": "Ada"})).json()
    for name in ("Lamp", "Desk, oak"):
        body = {"name": name, "price_cents": 100, "owner_id": owner["id"]}
        await client.post("/items", json=body)
    with expect_queries(2):
        response = await client.get(f"/owners/{owner['id']}/items.csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    header, *rows = csv.reader(io.StringIO(response.text))
    assert header == ["id", "name", "price_cents", "created_at"]
    assert [row[1] for row in rows] == ["Lamp", "Desk, oak"]
    assert app.state.offloader.stats.completed == 1
    assert "offload;dur=" in response.headers["server-timing"]


async def owner_with_items(client: httpx.AsyncClient, count: int) -> int:
    owner = await create_owner(client)
    for number in range(count):
        await create_item(client, owner["id"], [], name=f"item {number}")
    owner_id: int = owner["id"]
    return owner_id


@pytest.mark.parametrize("rows", [9, 10])
async def test_an_export_of_many_batches_arrives_whole_and_in_order_one_query_a_batch(
    app: FastAPI,
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    rows: int,
) -> None:
    monkeypatch.setattr(my_service, "EXPORT_BATCH_ROWS", 3)
    owner_id = await owner_with_items(client, rows)
    # Not the test client: the route's budget covers its first batch only.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as raw_client:
        # The owner, then batches of 3, 3, 3 and the last one: 1 row, or none to say so.
        with expect_queries(1 + 4):
            response = await raw_client.get(f"/owners/{owner_id}/items.csv")
    assert response.status_code == 200
    header, *lines = csv.reader(io.StringIO(response.text))
    assert header == ["id", "name", "price_cents", "created_at"]
    assert [line[1] for line in lines] == [f"item {number}" for number in range(rows)]
    assert [int(line[0]) for line in lines] == sorted(int(line[0]) for line in lines)
    assert app.state.offloader.stats.completed == (4 if rows == 10 else 3)  # none for no rows
    # Within budget at run time: it covers what the route sends before the body starts.
    assert not [record for record in caplog.records if "over its budget" in record.getMessage()]


async def test_an_export_holds_no_connection_while_it_formats_or_sends(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(my_service, "EXPORT_BATCH_ROWS", 3)
    owner_id = await owner_with_items(client, 10)
    checked_out = watch_checked_out_connections(app)
    while_formatting: list[int] = []
    while_sending: list[int] = []
    format_rows = my_service._csv_lines

    def format_and_watch(rows: Any) -> str:
        while_formatting.append(checked_out())
        return format_rows(rows)

    monkeypatch.setattr(my_service, "_csv_lines", format_and_watch)

    async def app_watching_sends(scope: Scope, receive: Receive, send: Send) -> None:
        async def watched_send(message: Message) -> None:
            if message["type"] == "http.response.body":
                while_sending.append(checked_out())
            await send(message)

        await app(scope, receive, watched_send)

    transport = httpx.ASGITransport(app=app_watching_sends)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as raw_client:
        response = await raw_client.get(f"/owners/{owner_id}/items.csv")
    assert response.status_code == 200
    assert while_formatting == [0, 0, 0, 0]
    assert while_sending[:4] == [0, 0, 0, 0]  # then the end of the body


async def test_a_client_that_goes_away_stops_the_export_and_frees_everything(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(my_service, "EXPORT_BATCH_ROWS", 3)
    owner_id = await owner_with_items(client, 30)
    checked_out = watch_checked_out_connections(app)
    requests = [{"type": "http.request", "body": b"", "more_body": False}]
    chunks: list[bytes] = []
    client_gone = asyncio.Event()
    held_while_stalled: list[int] = []

    async def receive() -> Message:
        if requests:
            return requests.pop()
        await client_gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            chunks.append(message["body"])
            if len(chunks) == 2:
                # The client stops reading, then goes away.
                held_while_stalled.append(checked_out())
                client_gone.set()
                await asyncio.Event().wait()

    path = f"/owners/{owner_id}/items.csv"
    with expect_queries(1 + 2):  # the owner and two batches, none after the client left
        await app(http_get(path), receive, send)
    assert len(chunks) == 2
    assert held_while_stalled == [0]
    assert checked_out() == 0
    assert app.state.offloader.stats.running == 0


async def test_an_export_neutralizes_cells_a_spreadsheet_would_run_as_formulas(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await create_owner(client)
    names = ["=1+2", "+SUM(A1)", "-2+3", "@cmd", "\tTab", "\rCR", "Plain - dash", "'quoted"]
    # Stored directly: the export must neutralize whatever the table holds.
    async with app.state.sessions() as session:
        session.add_all(Item(name=name, price_cents=1, owner_id=owner["id"]) for name in names)
        await session.commit()
    response = await client.get(f"/owners/{owner['id']}/items.csv")
    _, *lines = csv.reader(io.StringIO(response.text))
    assert [line[1] for line in lines] == [
        "'=1+2",
        "'+SUM(A1)",
        "'-2+3",
        "'@cmd",
        "'\tTab",
        "'\rCR",
        "Plain - dash",
        "'quoted",
    ]


def watch_checked_out_connections(app: FastAPI) -> Callable[[], int]:
    """A function that tells how many connections the app's engine has checked out."""
    counts = {"checkout": 0, "checkin": 0}
    engine = app.state.engine.sync_engine
    for name in counts:

        def count(*_: object, name: str = name) -> None:
            counts[name] += 1

        event.listen(engine, name, count)
    return lambda: counts["checkout"] - counts["checkin"]


def http_get(path: str) -> Scope:
    """The ASGI scope of a plain GET of ``path``."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }


async def test_export_of_a_missing_owner_is_a_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/owners/404/items.csv")
    assert response.status_code == 404
    assert response.json() == {"detail": "no owner has id 404"}


async def test_an_overloaded_offload_pool_answers_503_with_retry_after(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    offloader = app.state.offloader = Offloader(threads=1, max_waiting=0, wait_timeout=1)
    entered, release = threading.Event(), threading.Event()

    def occupy_the_only_thread() -> None:
        entered.set()
        release.wait(timeout=30)

    busy = asyncio.create_task(offloader.run(occupy_the_only_thread))
    await asyncio.to_thread(entered.wait, 30)
    owner = (await client.post("/owners", json={"name": "Ada"})).json()
    response = await client.get(f"/owners/{owner['id']}/items.csv")
    release.set()
    await busy
    assert response.status_code == 503
    assert response.headers["retry-after"] in {"1", "2", "3"}
    assert "overloaded" in response.json()["detail"]
