"""The kit's statements: written once for both databases (``any_of``, ``on_conflict_update``),
and answered from their rows by column name (``RowAnswer``).
"""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from my_service import (
    RowAnswer,
    Settings,
    any_of,
    create_engine,
    on_conflict_update,
    record_queries,
)

from tests.harness import empty_database

# A table of the tests' own, in a metadata of its own: the service's tables stay as they are.
METADATA = sa.MetaData()
STOCK = sa.Table(
    "statement_stock",
    METADATA,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
)
STOCK_OF = sa.select(STOCK.c.id, STOCK.c.count).where(any_of(STOCK.c.id, "ids")).order_by("id")
SET_STOCK = sa.insert(STOCK).ext(on_conflict_update(["id"], ["count"]))
# Each database's dialect, to render the statements without connecting to either.
POSTGRESQL = create_async_engine("postgresql+asyncpg://").dialect
SQLITE = create_async_engine("sqlite+aiosqlite://").dialect


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    """A database of the test's own."""
    with empty_database(tmp_path, "statements") as url:
        yield url


@pytest.fixture
async def engine(url: str) -> AsyncIterator[AsyncEngine]:
    """The kit's engine on the test's database, holding the table."""
    engine = create_engine(Settings(database_url=url))
    async with engine.begin() as connection:
        await connection.run_sync(METADATA.create_all)
    yield engine
    await engine.dispose()


def test_a_list_binds_as_one_array_on_postgresql_and_as_an_in_list_on_sqlite() -> None:
    on_postgresql = str(STOCK_OF.compile(dialect=POSTGRESQL))
    assert "WHERE statement_stock.id = ANY ($1::BIGINT[]) ORDER BY" in on_postgresql
    on_sqlite = str(STOCK_OF.compile(dialect=SQLITE))
    # Not "IN (...) = 1": a comparison, which SQLite's index on the key serves.
    assert "WHERE statement_stock.id IN (__[POSTCOMPILE_ids]) ORDER BY" in on_sqlite


def test_an_upsert_is_the_on_conflict_clause_both_databases_speak() -> None:
    expected = "ON CONFLICT (id) DO UPDATE SET count = excluded.count"
    for dialect in (POSTGRESQL, SQLITE):
        assert str(SET_STOCK.compile(dialect=dialect)).endswith(expected), dialect.name


async def test_the_statements_run_as_written_on_the_suites_database(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.execute(SET_STOCK, [{"id": 1, "count": 1}, {"id": 2, "count": 2}])
        with record_queries() as recorder:
            await connection.execute(SET_STOCK, [{"id": 2, "count": 20}, {"id": 3, "count": 3}])
            one = (await connection.execute(STOCK_OF, {"ids": [2]})).all()
            several = (await connection.execute(STOCK_OF, {"ids": [1, 2, 3, 4]})).all()
            none = (await connection.execute(STOCK_OF, {"ids": []})).all()
    assert [tuple(row) for row in one] == [(2, 20)]
    assert [tuple(row) for row in several] == [(1, 1), (2, 20), (3, 3)]
    assert none == []
    assert recorder.count == 4, recorder.report()
    if engine.dialect.name == "postgresql":
        # One statement text, and so one prepared plan, for every length of the list.
        texts = {query.statement for query in recorder.queries[1:]}
        assert len(texts) == 1, texts


class ShelfRead(BaseModel):
    id: int
    name: str


class StockRead(BaseModel):
    id: int
    count: int
    shelf: ShelfRead
    notes: list[str]


STOCK_WITH_SHELF = sa.select(
    sa.literal("north").label("shelf_name"),
    STOCK.c.count,
    STOCK.c.id,
    sa.literal(7).label("shelf_id"),
)


def test_an_answer_is_built_by_column_name_in_the_models_field_order() -> None:
    answer = RowAnswer(StockRead, STOCK_WITH_SHELF, given=["notes"])
    built = answer(("north", 3, 1, 7), notes=["by the door"])
    shelf = {"id": 7, "name": "north"}
    assert built == {"id": 1, "count": 3, "shelf": shelf, "notes": ["by the door"]}
    assert list(built) == list(StockRead.model_fields)
    assert StockRead.model_validate(built).shelf.name == "north"


def test_a_field_the_statement_does_not_select_stops_the_answer_being_built() -> None:
    without_shelf_name = sa.select(STOCK.c.id, STOCK.c.count, sa.literal(7).label("shelf_id"))
    with pytest.raises(TypeError, match=r"no column for \['shelf_name'\]"):
        RowAnswer(StockRead, without_shelf_name, given=["notes"])
    with pytest.raises(TypeError, match=r"no column for \['notes'\]"):
        RowAnswer(StockRead, STOCK_WITH_SHELF)
    with pytest.raises(TypeError, match=r"StockRead has no fields \['remarks'\]"):
        RowAnswer(StockRead, STOCK_WITH_SHELF, given=["notes", "remarks"])
