"""Requests that make the example's resources, for tests to start from."""

from typing import Any

import httpx


async def create_owner(client: httpx.AsyncClient, name: str = "Ada") -> dict[str, Any]:
    """Create an owner through the API; its body as answered."""
    response = await client.post("/owners", json={"name": name})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def create_tag(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    """Create a tag through the API; its body as answered."""
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
    """Create an item through the API; its body as answered."""
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


async def owner_with_items(client: httpx.AsyncClient, count: int) -> int:
    """An owner with ``count`` items named "item 0", "item 1"...; the owner's id."""
    owner = await create_owner(client)
    for number in range(count):
        await create_item(client, owner["id"], [], name=f"item {number}")
    owner_id: int = owner["id"]
    return owner_id
