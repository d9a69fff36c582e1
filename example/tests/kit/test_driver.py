"""Statements on the driver path (``ReadsDep``, ``WritesDep``): answered as SQLAlchemy would
answer them, and counted, timed, refused and failed as SQLAlchemy's are; writes commit whole
or not at all.

These tests use a table of their own, so they hold whatever models the service has.
"""

import asyncio
import inspect
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.exc import IntegrityError

from my_service import (
    InputSchema,
    QueryCountError,
    Reads,
    ReadsDep,
    Transaction,
    UTCDateTime,
    WritesDep,
    any_of,
    expect_queries,
    query_budget,
    record_queries,
)

from tests.harness.tokens import FULL_ACCESS

TABLES = sa.MetaData()
LABELS = itertools.count(1)
SHELF = sa.Table(
    "driver_shelf",
    TABLES,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("name", sa.String(20), unique=True, nullable=False),
    sa.Column("open", sa.Boolean, nullable=False),
    sa.Column("checked_at", UTCDateTime(), nullable=False),
    # Defaults Python gives an INSERT that leaves the column out: a value, and a function.
    sa.Column("floor", sa.Integer, nullable=False, default=1),
    sa.Column("label", sa.String(40), nullable=False, default=lambda: f"label {next(LABELS)}"),
)
CHECKED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
ROWS = [
    {"id": key, "name": f"shelf {key}", "open": key % 2 == 1, "checked_at": CHECKED}
    for key in range(1, 6)
]
SHELVES = sa.select(SHELF.c.id, SHELF.c.name, SHELF.c.open, SHELF.c.checked_at)
# Every way a value reaches a statement: a named parameter, a list, a literal of its own.
STATEMENTS: dict[str, tuple[sa.Select[Any], dict[str, Any]]] = {
    "by key": (SHELVES.where(SHELF.c.id == sa.bindparam("id")), {"id": 2}),
    "a list": (SHELVES.where(any_of(SHELF.c.id, "ids")).order_by(SHELF.c.id), {"ids": [1, 3, 9]}),
    "an empty list": (SHELVES.where(any_of(SHELF.c.id, "ids")), {"ids": []}),
    "literals": (SHELVES.where(SHELF.c.open.is_(True)).order_by(SHELF.c.id).limit(2), {}),
    "a page": (
        SHELVES.where(SHELF.c.id > sa.bindparam("after"))
        .order_by(SHELF.c.id)
        .limit(sa.bindparam("limit")),
        {"after": 1, "limit": 3},
    ),
    "a timestamp": (
        sa.select(sa.func.count()).where(
            SHELF.c.checked_at < sa.bindparam("before", type_=UTCDateTime())
        ),
        {"before": CHECKED + timedelta(seconds=1)},
    ),
}


@pytest.fixture
async def reads(app: FastAPI) -> AsyncIterator[Reads]:
    """The app's reads, with the table above holding ``ROWS``."""
    async with app.state.engine.begin() as connection:
        await connection.run_sync(TABLES.create_all)
        await connection.execute(sa.insert(SHELF), ROWS)
    yield app.state.reads
    async with app.state.engine.begin() as connection:
        await connection.run_sync(TABLES.drop_all)


@pytest.mark.parametrize("name", STATEMENTS)
async def test_a_statement_answers_the_rows_sqlalchemy_answers(reads: Reads, name: str) -> None:
    statement, parameters = STATEMENTS[name]
    async with reads.connect() as connection:
        expected = [tuple(row) for row in (await connection.execute(statement, parameters)).all()]
    with record_queries() as recorder:
        rows = await reads.all(statement, parameters)
    assert [tuple(row) for row in rows] == expected
    # The values are the columns' types: a timestamp with its zone, a boolean.
    for row in rows:
        assert [type(value) for value in row] == [type(value) for value in expected[0]]
    assert recorder.count == 1
    assert recorder.queries[0].duration > 0


async def test_first_and_scalar_answer_none_when_no_row_comes(reads: Reads) -> None:
    by_key, _ = STATEMENTS["by key"]
    assert await reads.first(by_key, {"id": 99}) is None
    assert await reads.scalar(by_key, {"id": 99}) is None
    assert await reads.scalar(by_key, {"id": 3}) == 3


async def test_a_statement_without_a_value_for_a_parameter_is_refused_naming_it(
    reads: Reads,
) -> None:
    by_key, _ = STATEMENTS["by key"]
    with pytest.raises(TypeError, match="no value for the parameter 'id'"):
        await reads.all(by_key, {"key": 2})


async def two_shelves(reads: Reads) -> list[Any]:
    """Two statements where one would do."""
    by_key, _ = STATEMENTS["by key"]
    shelves = []
    for key in (1, 2):
        shelves.append(await reads.first(by_key, {"id": key}))
    return shelves


async def test_a_driver_statement_over_a_count_is_reported_with_the_line_that_sent_it(
    reads: Reads,
) -> None:
    with pytest.raises(QueryCountError) as caught, expect_queries(1):
        await two_shelves(reads)
    report = str(caught.value)
    assert report.startswith("expected 1 query, 2 were sent:")
    line = inspect.getsourcelines(two_shelves)[1] + 5
    assert f"{inspect.getsourcefile(two_shelves)}:{line} in two_shelves" in report
    assert "repeated: 2 x SELECT" in report


async def test_a_route_over_its_budget_on_the_driver_path_is_logged_with_its_statements(
    app: FastAPI, reads: Reads, caplog: pytest.LogCaptureFixture
) -> None:
    @query_budget(1)
    async def greedy(reads: ReadsDep) -> int:
        return len(await two_shelves(reads))

    app.get("/greedy-reads")(greedy)
    transport = httpx.ASGITransport(app=app)  # not the test client: it would fail the request
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=FULL_ACCESS
    ) as raw_client:
        response = await raw_client.get("/greedy-reads")
    assert response.status_code == 200
    assert response.headers["server-timing"].endswith('desc="2 queries"')
    over_budget = [
        record.getMessage() for record in caplog.records if "over its budget" in record.getMessage()
    ]
    assert len(over_budget) == 1, over_budget
    assert over_budget[0].startswith("GET /greedy-reads sent 2 queries, over its budget of 1:")
    assert "repeated: 2 x SELECT driver_shelf.id" in over_budget[0]


async def test_a_failed_statement_is_timed_and_gives_its_connection_back(
    app: FastAPI, reads: Reads
) -> None:
    missing: sa.Select[Any] = sa.select(sa.column("id")).select_from(sa.table("no_such_table"))
    pool = app.state.engine.sync_engine.pool
    with record_queries() as recorder:
        # More failures than the pool has connections: none of them keeps one.
        for _ in range(pool.size() * 3):
            with pytest.raises(Exception, match="no_such_table"):
                await reads.all(missing)
        assert await reads.scalar(STATEMENTS["by key"][0], {"id": 1}) == 1
    assert recorder.count == pool.size() * 3 + 1
    assert all(query.duration > 0 for query in recorder.queries)
    assert pool.checkedout() == 0


async def test_a_constraint_refused_on_the_driver_path_is_an_integrity_error(
    reads: Reads,
) -> None:
    taken = {**ROWS[0], "id": 10}
    insert = sa.insert(SHELF).returning(SHELF.c.id)
    with pytest.raises(IntegrityError) as caught:
        await reads.all(insert, taken)
    # What the kit's error contract reads to answer a 409 naming the column.
    assert "name" in str(caught.value.orig)
    assert await reads.scalar(sa.select(sa.func.count()).select_from(SHELF)) == len(ROWS)


async def test_a_statement_cancelled_midway_gives_its_connection_back_at_once(
    app: FastAPI, reads: Reads
) -> None:
    if app.state.engine.dialect.name == "postgresql":
        slow = sa.select(sa.func.pg_sleep(5))
    else:
        # Counting to fifty million: seconds of work for SQLite.
        numbers = sa.select(sa.literal(1).label("n")).cte("numbers", recursive=True)
        numbers = numbers.union_all(
            sa.select((numbers.c.n + 1).label("n")).where(numbers.c.n < 50_000_000)
        )
        slow = sa.select(sa.func.count()).select_from(numbers)
    pool = app.state.engine.sync_engine.pool
    statement = asyncio.create_task(reads.all(slow))
    await asyncio.sleep(0.2)
    statement.cancel()
    # The request it was sent for ends now, not when the statement would have.
    done, _ = await asyncio.wait({statement}, timeout=2)
    assert done, "the cancelled statement still holds its request"
    assert statement.cancelled()
    assert pool.checkedout() == 0
    # Every connection the pool hands out answers at once, the cancelled one's included: the
    # pool hands them out in turn.
    async with asyncio.timeout(2):
        for _ in range(pool.size() + 1):
            assert await reads.scalar(STATEMENTS["by key"][0], {"id": 4}) == 4


async def test_a_write_commits_whole_or_leaves_the_database_and_the_cache_as_they_were(
    app: FastAPI, reads: Reads
) -> None:
    cache = app.state.cache
    rename = (
        sa.update(SHELF)
        .where(SHELF.c.id == sa.bindparam("key"))
        .values(name=sa.bindparam("new_name"))
        .returning(SHELF.c.name)
    )
    name_of = sa.select(SHELF.c.name).where(SHELF.c.id == sa.bindparam("key"))

    async def load() -> str:
        return str(await reads.scalar(name_of, {"key": 1}))

    assert await cache.get_or_load("shelf", 1, load) == "shelf 1"
    async with Transaction(reads) as writes:
        assert await writes.scalar(rename, {"key": 1, "new_name": "moved"}) == "moved"
        cache.invalidate_on_commit(writes, "shelf", 1)
        # The request ends here, uncommitted: rolled back, and nothing dropped.
    assert await reads.scalar(name_of, {"key": 1}) == "shelf 1"
    loads = cache.stats.loads
    assert await cache.get_or_load("shelf", 1, load) == "shelf 1"
    assert cache.stats.loads == loads
    async with Transaction(reads) as writes:
        await writes.scalar(rename, {"key": 1, "new_name": "moved"})
        cache.invalidate_on_commit(writes, "shelf", 1)
        await writes.commit()
    assert await cache.get_or_load("shelf", 1, load) == "moved"
    assert cache.stats.loads == loads + 1
    assert app.state.engine.sync_engine.pool.checkedout() == 0


class ShelfCreate(InputSchema):
    name: str
    open: bool


@query_budget(1)
async def add_shelf(body: ShelfCreate, writes: WritesDep) -> dict[str, int]:
    """A write that a unique name may refuse: the kit's error contract answers it."""
    row = {**body.model_dump(), "id": 99, "checked_at": CHECKED}
    key = await writes.scalar(sa.insert(SHELF).returning(SHELF.c.id), row)
    await writes.commit()
    return {"id": key}


async def test_a_constraint_refused_on_the_driver_path_is_the_contracts_409(
    app: FastAPI, reads: Reads
) -> None:
    app.post("/shelves")(add_shelf)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=FULL_ACCESS
    ) as raw_client:
        taken = await raw_client.post("/shelves", json={"name": "shelf 1", "open": True})
        added = await raw_client.post("/shelves", json={"name": "new", "open": False})
    assert taken.status_code == 409, taken.text
    assert taken.json() == {"detail": "driver_shelf already has a row with this name"}
    assert added.status_code == 200, added.text
    assert await reads.scalar(sa.select(sa.func.count()).select_from(SHELF)) == len(ROWS) + 1


async def test_an_insert_of_many_rows_is_a_statement_per_thousand_rows_answering_in_order(
    reads: Reads,
) -> None:
    rows = [
        {"id": 100 + n, "name": f"batch {n}", "open": n % 2 == 0, "checked_at": CHECKED}
        for n in range(2500)
    ]
    insert = sa.insert(SHELF).returning(SHELF.c.id, SHELF.c.open, SHELF.c.checked_at)
    async with Transaction(reads) as writes:
        with record_queries() as recorder:
            returned = await writes.all(insert, rows)
        await writes.commit()
    assert recorder.count == 3, recorder.report()
    expected = [(row["id"], row["open"], CHECKED) for row in rows]
    assert [tuple(row) for row in returned] == expected
    stored = sa.select(sa.func.count()).select_from(SHELF)
    assert await reads.scalar(stored) == len(ROWS) + len(rows)


async def test_a_column_left_out_gets_its_python_default_for_each_row(reads: Reads) -> None:
    insert = sa.insert(SHELF).returning(SHELF.c.floor, SHELF.c.label)
    one = {"name": "one", "open": True, "checked_at": CHECKED}
    async with Transaction(reads) as writes:
        first = await writes.first(insert, {**one, "id": 50})
        many = await writes.all(
            insert, [{**one, "id": 51, "name": "two"}, {**one, "id": 52, "name": "three"}]
        )
        await writes.commit()
    assert first is not None
    labels = [first[1], *(row[1] for row in many)]
    assert [first[0], *(row[0] for row in many)] == [1, 1, 1]
    assert len(set(labels)) == 3, labels


async def test_a_commit_with_nothing_sent_still_drops_what_it_names(
    app: FastAPI, reads: Reads
) -> None:
    cache = app.state.cache

    async def load() -> str:
        return "stored"

    await cache.get_or_load("shelf", 7, load)
    async with Transaction(reads) as writes:
        cache.invalidate_on_commit(writes, "shelf", 7)
        await writes.commit()
    loads = cache.stats.loads
    await cache.get_or_load("shelf", 7, load)
    assert cache.stats.loads == loads + 1
