"""A constraint the database enforces, answered by the error contract for every route: a 409
for a conflict with stored rows, a 422 naming the field whose value the stored rows rule out.

The routes and tables here are a team's as the error contract sees them: two tables of the
test's own, one referring to the other, in a database of the test's own.
"""

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

from my_service import InputSchema, SessionDep, Settings, create_app, query_budget

from tests.harness import empty_database, migration_engine, upgrade_to_head
from tests.harness.tokens import FULL_ACCESS


class ShelfCreate(InputSchema):
    """Lax on purpose: the database's constraints are what is tested."""

    name: str | None
    stock: int = 0


class BookMove(InputSchema):
    shelf_id: int


@pytest.fixture
def database(tmp_path: Path) -> Iterator[tuple[str, sa.Table, sa.Table]]:
    """A migrated database of the test's own with two more tables, shelves and their books,
    known to the models' metadata (as a team's are) until the test ends.
    """
    shelves = sa.Table(
        "probe_shelf",
        SQLModel.metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(50), nullable=False, unique=True),
        sa.Column("stock", sa.Integer, sa.CheckConstraint("stock >= 0", name="stock_not_negative")),
    )
    books = sa.Table(
        "probe_book",
        SQLModel.metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("shelf_id", sa.Integer, sa.ForeignKey("probe_shelf.id"), nullable=False),
    )
    try:
        with empty_database(tmp_path, "integrity") as url:
            upgrade_to_head(migration_engine(url))
            asyncio.run(_create(url, shelves, books))
            yield url, shelves, books
    finally:
        SQLModel.metadata.remove(books)
        SQLModel.metadata.remove(shelves)


async def _create(url: str, *tables: sa.Table) -> None:
    engine = migration_engine(url)
    async with engine.begin() as connection:
        for table in tables:
            await connection.run_sync(table.create)
    await engine.dispose()


@pytest.fixture
async def client(database: tuple[str, sa.Table, sa.Table]) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the service with routes that write shelves and books, and do nothing to
    catch what the database refuses.
    """
    url, shelves, books = database
    app = create_app(Settings(database_url=url))

    @app.post("/shelves", status_code=201)
    @query_budget(1)
    async def add_shelf(body: ShelfCreate, session: SessionDep) -> dict[str, int]:
        insert = sa.insert(shelves).values(name=body.name, stock=body.stock)
        connection = await session.connection()
        shelf_id = (await connection.execute(insert.returning(shelves.c.id))).scalar_one()
        await session.commit()
        return {"id": shelf_id}

    @app.delete("/shelves/{shelf_id}", status_code=204)
    @query_budget(1)
    async def remove_shelf(shelf_id: int, session: SessionDep) -> None:
        connection = await session.connection()
        await connection.execute(sa.delete(shelves).where(shelves.c.id == shelf_id))
        await session.commit()

    @app.post("/shelves/{shelf_id}/books", status_code=201)
    @query_budget(1)
    async def add_book(shelf_id: int, session: SessionDep) -> dict[str, int]:
        insert = sa.insert(books).values(shelf_id=shelf_id).returning(books.c.id)
        book_id = (await (await session.connection()).execute(insert)).scalar_one()
        await session.commit()
        return {"id": book_id}

    @app.patch("/books/{book_id}")
    @query_budget(1)
    async def move_book(book_id: int, body: BookMove, session: SessionDep) -> None:
        update = sa.update(books).where(books.c.id == book_id).values(shelf_id=body.shelf_id)
        await (await session.connection()).execute(update)
        await session.commit()

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=FULL_ACCESS
        ) as client:
            yield client


async def shelf_with_a_book(client: httpx.AsyncClient) -> tuple[int, int]:
    shelf = await client.post("/shelves", json={"name": "Poetry"})
    assert shelf.status_code == 201, shelf.text
    book = await client.post(f"/shelves/{shelf.json()['id']}/books")
    assert book.status_code == 201, book.text
    return shelf.json()["id"], book.json()["id"]


async def test_a_duplicate_is_a_409_naming_the_column(client: httpx.AsyncClient) -> None:
    await shelf_with_a_book(client)
    response = await client.post("/shelves", json={"name": "Poetry"})
    assert response.status_code == 409, response.text
    assert response.json() == {"detail": "probe_shelf already has a row with this name"}


async def test_deleting_a_row_that_rows_refer_to_is_a_409_naming_their_table(
    client: httpx.AsyncClient,
) -> None:
    shelf_id, _ = await shelf_with_a_book(client)
    response = await client.delete(f"/shelves/{shelf_id}")
    assert response.status_code == 409, response.text
    assert response.json() == {"detail": "rows of probe_book still refer to this probe_shelf"}
    # Nothing was deleted: a book can still be put on it.
    assert (await client.post(f"/shelves/{shelf_id}/books")).status_code == 201


async def test_a_reference_to_a_missing_row_is_a_422_naming_the_field(
    client: httpx.AsyncClient,
) -> None:
    _, book_id = await shelf_with_a_book(client)
    from_path = await client.post("/shelves/99/books")
    assert from_path.status_code == 422, from_path.text
    assert from_path.json() == {
        "detail": [
            {
                "loc": ["path", "shelf_id"],
                "msg": "no probe_shelf has id 99",
                "type": "not_found",
                "input": 99,
            }
        ]
    }
    from_body = await client.patch(f"/books/{book_id}", json={"shelf_id": 98})
    assert from_body.status_code == 422, from_body.text
    [error] = from_body.json()["detail"]
    assert (error["loc"], error["type"]) == (["body", "shelf_id"], "not_found")
    # PostgreSQL's error gives the value; SQLite's does not, nor can the body be read again.
    assert error["msg"] in ("no probe_shelf has id 98", "no probe_shelf has this id")


async def test_a_null_or_a_broken_check_is_a_422(client: httpx.AsyncClient) -> None:
    null = await client.post("/shelves", json={"name": None})
    assert null.status_code == 422, null.text
    [error] = null.json()["detail"]
    assert (error["loc"], error["type"]) == (["body", "name"], "not_null")
    negative = await client.post("/shelves", json={"name": "Prose", "stock": -1})
    assert negative.status_code == 422, negative.text
    [error] = negative.json()["detail"]
    assert error["type"] == "check"
    assert error["msg"] == "breaks the rule stock_not_negative of probe_shelf"
