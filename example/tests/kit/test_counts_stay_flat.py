"""The test client replays every GET on more rows, and fails a route whose statement count
grows with them (an N+1), even when its own test used a single row.

These tests use tables of their own, so they hold whatever models the service has.
"""

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from my_service import QueryCountError, ReadsDep, query_budget

from tests.harness.budgets import budget_client

TABLES = sa.MetaData()
PARENT = sa.Table(
    "growth_parent",
    TABLES,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(20), unique=True, nullable=False),
)
CHILD = sa.Table(
    "growth_child",
    TABLES,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("parent_id", sa.ForeignKey("growth_parent.id"), index=True, nullable=False),
    sa.Column("label", sa.String(20), nullable=False),
)
CHILDREN = sa.select(CHILD.c.id, CHILD.c.label).where(CHILD.c.parent_id == sa.bindparam("parent"))


@query_budget(2)
async def children_one_by_one(parent_id: int, reads: ReadsDep) -> list[str]:
    """The N+1: the children's ids, then one statement per child."""
    async with reads.connect() as connection:
        ids = (await connection.execute(CHILDREN, {"parent": parent_id})).scalars().all()
        labels = [
            (await connection.execute(sa.select(CHILD.c.label).where(CHILD.c.id == id_))).scalar()
            for id_ in ids
        ]
    return [str(label) for label in labels]


@query_budget(1)
async def children_at_once(parent_id: int, reads: ReadsDep) -> list[str]:
    """The same answer in one statement."""
    async with reads.connect() as connection:
        rows = (await connection.execute(CHILDREN, {"parent": parent_id})).all()
    return [row.label for row in rows]


@query_budget(2)
async def children_of_a_busy_parent(parent_id: int, reads: ReadsDep) -> list[str]:
    """Children only of a parent with two or more: one statement to count them, and a second
    for their labels once there are that many. A step as rows appear, not growth.
    """
    async with reads.connect() as connection:
        count = sa.select(sa.func.count()).where(CHILD.c.parent_id == parent_id)
        if (await connection.execute(count)).scalar_one() < 2:
            return []
        rows = (await connection.execute(CHILDREN, {"parent": parent_id})).all()
    return [row.label for row in rows]


@pytest.fixture
async def growth_app(app: FastAPI) -> AsyncIterator[FastAPI]:
    """The app with the tables and routes above, and one parent with one child."""
    async with app.state.engine.begin() as connection:
        await connection.run_sync(TABLES.create_all)
        await connection.execute(sa.insert(PARENT).values(id=1, name="Ada"))
        await connection.execute(sa.insert(CHILD).values(id=1, parent_id=1, label="first"))
    app.get("/parents/{parent_id}/children-one-by-one")(children_one_by_one)
    app.get("/parents/{parent_id}/children")(children_at_once)
    app.get("/parents/{parent_id}/busy-children")(children_of_a_busy_parent)
    yield app
    async with app.state.engine.begin() as connection:
        await connection.run_sync(TABLES.drop_all)


async def get_and_replay(app: FastAPI, path: str) -> object:
    """GET ``path`` once through the budget client, within budget; its body. The client
    replays it on more rows as it closes.
    """
    async with budget_client(app, TABLES) as client:
        response = await client.get(path)
        assert response.status_code == 200, response.text
        body: object = response.json()
    return body


async def test_a_route_whose_count_grows_with_its_rows_fails_naming_it(
    growth_app: FastAPI,
) -> None:
    with pytest.raises(QueryCountError) as caught:
        await get_and_replay(growth_app, "/parents/1/children-one-by-one")
    report = str(caught.value)
    assert report.startswith(
        "GET /parents/{parent_id}/children-one-by-one sends more statements the more rows"
    )
    assert "sent 2, then 4, then 6, then 8" in report
    assert "repeated: 7 x SELECT growth_child.label FROM growth_child WHERE" in report
    assert "in children_one_by_one" in report


async def test_a_route_that_loads_its_rows_at_once_passes(growth_app: FastAPI) -> None:
    assert await get_and_replay(growth_app, "/parents/1/children") == ["first"]


async def test_a_route_that_steps_once_when_rows_appear_passes(growth_app: FastAPI) -> None:
    # One child: one statement. The copies give the parent three, five, seven: two
    # statements each time, however many there are.
    assert await get_and_replay(growth_app, "/parents/1/busy-children") == []


async def test_a_route_answering_an_error_is_not_replayed(growth_app: FastAPI) -> None:
    async with budget_client(growth_app, TABLES) as client:
        response = await client.get("/parents/x/children-one-by-one")
    assert response.status_code == 422
