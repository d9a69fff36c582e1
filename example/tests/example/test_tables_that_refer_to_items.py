"""A table of yours that refers to items, without ON DELETE: deleting an item it still refers
to is the error contract's 409 naming your table, never a 500, and deletes nothing.
"""

from collections.abc import AsyncIterator

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlmodel import SQLModel

from my_service import BigKey, Settings, create_app, expect_queries

from tests.example.api import create_item, create_owner


@pytest.fixture
async def comments(app: FastAPI, client: httpx.AsyncClient) -> AsyncIterator[sa.Table]:
    """A ``comment`` table with a foreign key to ``item``, as a team adds one, in the test's
    database and the models' metadata until the test ends.
    """
    table = sa.Table(
        "comment",
        SQLModel.metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("item_id", BigKey, sa.ForeignKey("item.id"), nullable=False, index=True),
    )
    try:
        async with app.state.engine.begin() as connection:
            await connection.run_sync(table.create)
        yield table
        async with app.state.engine.begin() as connection:
            await connection.run_sync(table.drop)
    finally:
        SQLModel.metadata.remove(table)


async def test_deleting_an_item_a_comment_refers_to_is_a_409_naming_the_table(
    app: FastAPI, client: httpx.AsyncClient, comments: sa.Table
) -> None:
    item = await create_item(client, (await create_owner(client))["id"], [])
    async with app.state.engine.begin() as connection:
        await connection.execute(sa.insert(comments).values(item_id=item["id"]))
    with expect_queries(1):
        response = await client.delete(f"/items/{item['id']}")
    assert response.status_code == 409, response.text
    assert response.json() == {"detail": "rows of comment still refer to this item"}
    assert (await client.get(f"/items/{item['id']}")).json() == item
    async with app.state.engine.begin() as connection:
        await connection.execute(sa.delete(comments))
    assert (await client.delete(f"/items/{item['id']}")).status_code == 204


def test_the_409_is_in_the_delete_routes_openapi() -> None:
    responses = create_app(Settings()).openapi()["paths"]["/items/{item_id}"]["delete"]["responses"]
    assert responses["409"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorMessage"
    }
