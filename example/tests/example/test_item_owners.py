"""An owner's items are changed by the caller who created the owner, or by an admin: for any
other caller they are not found, and nothing changes. The rule is part of each write's own
statement, so every route keeps its budget.
"""

from typing import Any

import httpx
from sqlalchemy import text

from my_service import ADMIN, ITEMS_WRITE, expect_queries

from tests.example.api import create_item, create_owner
from tests.harness.tokens import bearer

# Callers other than the test client's (which created the owner): one who may write items,
# and an admin.
STRANGER = bearer([ITEMS_WRITE], subject="mallory")
ADMINISTRATOR = bearer([ITEMS_WRITE, ADMIN], subject="root")


async def an_item(client: httpx.AsyncClient) -> dict[str, Any]:
    owner = await create_owner(client)
    return await create_item(client, owner["id"], [])


async def test_another_callers_item_cannot_be_changed_and_stays_as_it_was(
    client: httpx.AsyncClient,
) -> None:
    item = await an_item(client)
    # One statement, as for an item of one's own: the UPDATE finds no row of the caller's.
    with expect_queries(1):
        response = await client.patch(
            f"/items/{item['id']}", json={"name": "Stolen"}, headers=STRANGER
        )
    assert response.status_code == 404, response.text
    assert response.json() == {"detail": f"no item has id {item['id']}"}
    assert (await client.get(f"/items/{item['id']}")).json() == item


async def test_another_callers_item_cannot_be_deleted(client: httpx.AsyncClient) -> None:
    item = await an_item(client)
    with expect_queries(1):
        response = await client.delete(f"/items/{item['id']}", headers=STRANGER)
    assert response.status_code == 404, response.text
    assert (await client.get(f"/items/{item['id']}")).status_code == 200


async def test_nobody_adds_items_to_another_callers_owner(client: httpx.AsyncClient) -> None:
    owner = await create_owner(client)
    body = {"name": "Planted", "price_cents": 1, "owner_id": owner["id"], "tag_ids": []}
    with expect_queries(1):
        one = await client.post("/items", json=body, headers=STRANGER)
    with expect_queries(1):
        batch = await client.post("/items/batch", json={"items": [body]}, headers=STRANGER)
    for response in (one, batch):
        assert response.status_code == 422, response.text
        assert f"no owner has id {owner['id']}" in response.text
    listed = await client.get("/items", params={"owner_id": owner["id"]})
    assert listed.json()["items"] == []


async def test_an_admin_changes_and_deletes_anyones_items(client: httpx.AsyncClient) -> None:
    item = await an_item(client)
    with expect_queries(2):
        changed = await client.patch(
            f"/items/{item['id']}", json={"name": "Fixed"}, headers=ADMINISTRATOR
        )
    assert changed.status_code == 200, changed.text
    assert changed.json()["name"] == "Fixed"
    with expect_queries(1):
        deleted = await client.delete(f"/items/{item['id']}", headers=ADMINISTRATOR)
    assert deleted.status_code == 204, deleted.text


async def test_an_owner_made_before_the_rule_is_an_admins_alone(
    client: httpx.AsyncClient, app: Any
) -> None:
    item = await an_item(client)
    async with app.state.engine.begin() as connection:
        await connection.execute(text("UPDATE owner SET subject = NULL"))
    assert (await client.patch(f"/items/{item['id']}", json={"name": "Mine"})).status_code == 404
    changed = await client.patch(
        f"/items/{item['id']}", json={"name": "Mine"}, headers=ADMINISTRATOR
    )
    assert changed.status_code == 200, changed.text
