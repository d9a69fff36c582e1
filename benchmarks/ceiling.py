"""The ceiling: the example domain's hot routes as a raw ASGI app on asyncpg, with no ORM.

Same tables, same SQL shapes (items joined to owners, then the page's tags in one query),
rows straight to JSON with orjson. What the generated service does beyond this (sessions,
ORM objects, validation, routing) is the overhead the benchmark measures against it.

Run it like the service: ``DATABASE_URL=postgresql://... uvicorn ceiling:app``.
"""

import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import asyncpg
import orjson

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

ITEMS_PAGE = """
    SELECT item.id, item.name, item.description, item.price_cents, item.created_at,
           owner.id AS owner_id, owner.name AS owner_name
    FROM item JOIN owner ON owner.id = item.owner_id
    WHERE item.id > $1 ORDER BY item.id LIMIT $2
"""
ONE_ITEM = """
    SELECT item.id, item.name, item.description, item.price_cents, item.created_at,
           owner.id AS owner_id, owner.name AS owner_name
    FROM item JOIN owner ON owner.id = item.owner_id
    WHERE item.id = $1
"""
TAGS_OF_ITEMS = """
    SELECT itemtaglink.item_id, tag.id, tag.name
    FROM itemtaglink JOIN tag ON tag.id = itemtaglink.tag_id
    WHERE itemtaglink.item_id = ANY($1::int[])
"""
OWNER_BY_ID = "SELECT id, name FROM owner WHERE id = $1"
TAGS_BY_ID = "SELECT id, name FROM tag WHERE id = ANY($1::int[])"
INSERT_ITEM = """
    INSERT INTO item (name, description, price_cents, owner_id, created_at)
    VALUES ($1, $2, $3, $4, $5) RETURNING id, created_at
"""
INSERT_LINKS = """
    INSERT INTO itemtaglink (item_id, tag_id) SELECT $1, unnest($2::int[])
"""
UPDATE_ITEM = """
    UPDATE item SET name = coalesce($2, name), description = coalesce($3, description),
        price_cents = coalesce($4, price_cents)
    WHERE id = $1
    RETURNING id, name, description, price_cents, created_at, owner_id,
        (SELECT name FROM owner WHERE owner.id = item.owner_id) AS owner_name
"""
UNLINK_TAGS = "DELETE FROM itemtaglink WHERE item_id = $1"
MAX_PAGE_SIZE = 100


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Serve GET /items, GET and PATCH /items/{id} and POST /items; anything else is a 404."""
    if scope["type"] == "lifespan":
        await _lifespan(scope, receive, send)
        return
    pool: asyncpg.Pool = scope["state"]["pool"]
    path, method = scope["path"], scope["method"]
    if path == "/items" and method == "GET":
        status, body, queries = await _list_items(pool, parse_qs(scope["query_string"].decode()))
    elif path.startswith("/items/") and method == "GET" and path[7:].isdigit():
        status, body, queries = await _get_item(pool, int(path[7:]))
    elif path.startswith("/items/") and method == "PATCH" and path[7:].isdigit():
        status, body, queries = await _update_item(pool, int(path[7:]), await _read_body(receive))
    elif path == "/items" and method == "POST":
        status, body, queries = await _create_item(pool, await _read_body(receive))
    else:
        status, body, queries = 404, {"detail": "Not Found"}, 0
    payload = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"server-timing", f'db;desc="{queries} queries"'.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            url = os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")
            size = int(os.environ.get("DATABASE_POOL_SIZE", "10"))
            scope["state"]["pool"] = await asyncpg.create_pool(url, min_size=size, max_size=size)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await scope["state"]["pool"].close()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _item(row: asyncpg.Record, tags: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": row["name"],
        "description": row["description"],
        "price_cents": row["price_cents"],
        "id": row["id"],
        "created_at": row["created_at"],
        "owner": {"name": row["owner_name"], "id": row["owner_id"]},
        "tags": tags,
    }


async def _tags_by_item(connection: asyncpg.Connection, ids: list[int]) -> dict[int, list[Any]]:
    tags: dict[int, list[Any]] = {item_id: [] for item_id in ids}
    for row in await connection.fetch(TAGS_OF_ITEMS, ids):
        tags[row["item_id"]].append({"name": row["name"], "id": row["id"]})
    return tags


async def _list_items(pool: asyncpg.Pool, query: dict[str, list[str]]) -> tuple[int, Any, int]:
    after = int(query.get("after", ["0"])[0])
    limit = min(int(query.get("limit", ["50"])[0]), MAX_PAGE_SIZE)
    async with pool.acquire() as connection:
        rows = await connection.fetch(ITEMS_PAGE, after, limit)
        tags = await _tags_by_item(connection, [row["id"] for row in rows])
    items = [_item(row, tags[row["id"]]) for row in rows]
    next_after = rows[-1]["id"] if len(rows) == limit else None
    return 200, {"items": items, "next_after": next_after}, 2


async def _get_item(pool: asyncpg.Pool, item_id: int) -> tuple[int, Any, int]:
    async with pool.acquire() as connection:
        row = await connection.fetchrow(ONE_ITEM, item_id)
        if row is None:
            return 404, {"detail": f"no item has id {item_id}"}, 1
        tags = await _tags_by_item(connection, [item_id])
    return 200, _item(row, tags[item_id]), 2


async def _create_item(pool: asyncpg.Pool, raw: bytes) -> tuple[int, Any, int]:
    body = orjson.loads(raw)
    tag_ids = sorted(set(body.get("tag_ids", [])))
    async with pool.acquire() as connection, connection.transaction():
        owner = await connection.fetchrow(OWNER_BY_ID, body["owner_id"])
        if owner is None:
            return 422, {"detail": f"no owner has id {body['owner_id']}"}, 1
        tags = [dict(row) for row in await connection.fetch(TAGS_BY_ID, tag_ids)]
        if len(tags) != len(tag_ids):
            return 422, {"detail": "unknown tag ids"}, 2
        description = body.get("description", "")
        created = await connection.fetchrow(
            INSERT_ITEM,
            body["name"],
            description,
            body["price_cents"],
            body["owner_id"],
            datetime.now(UTC),
        )
        if tag_ids:
            await connection.execute(INSERT_LINKS, created["id"], tag_ids)
    item = {
        "name": body["name"],
        "description": description,
        "price_cents": body["price_cents"],
        "id": created["id"],
        "created_at": created["created_at"],
        "owner": {"name": owner["name"], "id": owner["id"]},
        "tags": tags,
    }
    return 201, item, 4 if tag_ids else 3


async def _update_item(pool: asyncpg.Pool, item_id: int, raw: bytes) -> tuple[int, Any, int]:
    # The service's PATCH: the row updated (and locked), the new tags checked, relinked.
    body = orjson.loads(raw)
    tag_ids = body.get("tag_ids")
    async with pool.acquire() as connection, connection.transaction():
        row = await connection.fetchrow(
            UPDATE_ITEM, item_id, body.get("name"), body.get("description"), body.get("price_cents")
        )
        if row is None:
            return 404, {"detail": f"no item has id {item_id}"}, 1
        if tag_ids is None:
            tags = (await _tags_by_item(connection, [item_id]))[item_id]
            return 200, _item(row, tags), 2
        tag_ids = sorted(set(tag_ids))
        tags = [dict(tag) for tag in await connection.fetch(TAGS_BY_ID, tag_ids)]
        if len(tags) != len(tag_ids):
            return 422, {"detail": "unknown tag ids"}, 2
        await connection.execute(UNLINK_TAGS, item_id)
        if tag_ids:
            await connection.execute(INSERT_LINKS, item_id, tag_ids)
    return 200, _item(row, tags), 4
