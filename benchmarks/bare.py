"""A bare FastAPI route answering an item's bytes: the floor for the service's cached get-one.

``GET /items/{item_id}`` answers exactly the bytes the service answers for the item, fetched
from the service once at start-up for the hot set (and on first asking for any other id),
then kept: each request is FastAPI's routing, its path parameter and a ``Response``, and
nothing else. The service's cached get-one beside it is what the kit adds to a cache hit:
the token check, the guard, the request observer, the cache lookup.

Run it after the service: ``SOURCE_URL=http://127.0.0.1:8101 SOURCE_AUTHORIZATION="Bearer
..." uvicorn bare:app``.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from dataset import hot_ids
from fastapi import FastAPI, Response

_bodies: dict[int, bytes] = {}


async def _fetch(client: httpx.AsyncClient, item_id: int) -> bytes:
    answer = await client.get(f"/items/{item_id}")
    answer.raise_for_status()
    _bodies[item_id] = answer.content
    return answer.content


def _source() -> httpx.AsyncClient:
    authorization = {"Authorization": os.environ["SOURCE_AUTHORIZATION"]}
    return httpx.AsyncClient(base_url=os.environ["SOURCE_URL"], headers=authorization)


@asynccontextmanager
async def _hot_set(app: FastAPI) -> AsyncIterator[None]:
    async with _source() as client:
        for item_id in hot_ids():
            await _fetch(client, item_id)
    yield


app = FastAPI(lifespan=_hot_set)


@app.get("/items/{item_id}")
async def get_item(item_id: int) -> Response:
    """The item's bytes, as the service answers them."""
    body = _bodies.get(item_id)
    if body is None:
        async with _source() as client:
            body = await _fetch(client, item_id)
    return Response(body, media_type="application/json")
