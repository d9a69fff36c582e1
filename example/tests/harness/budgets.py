"""The test client: every request held to its route's query budget, and every GET replayed on
ever more rows, failing if its statement count grows with them.
"""

import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel
from starlette.types import Message, Receive, Scope, Send

from my_service import (
    QueryCountError,
    QueryRecorder,
    budget_of,
    record_queries,
)

from tests.harness.databases import assigned_by_database
from tests.harness.tokens import full_access

# Every route any test called, as (method, path template): the suite fails, once it has run
# whole, if a route was never called (see conftest.py).
EXERCISED_ROUTES: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Request:
    """A GET a test made, to be made again on more rows."""

    route: str
    target: str
    headers: tuple[tuple[str, str], ...]


@dataclass
class BudgetEnforcer:
    """The app as the test client sees it: a request over its route's budget fails, and every
    GET that answered 200 is kept, to be replayed on more rows.
    """

    app: FastAPI
    requests: dict[Request, int] = field(default_factory=dict)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status = 0
        sent_before_body: list[int] = []
        with record_queries(call_sites=True) as recorder:

            async def noting_send(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    sent_before_body.append(recorder.count)
                await send(message)

            await self.app(scope, receive, noting_send)
        route = scope.get("route")
        if not isinstance(route, APIRoute):
            return
        EXERCISED_ROUTES.add((scope["method"], route.path))
        # A streamed response's budget covers what its route sends before the body starts.
        sent = sent_before_body[0] if sent_before_body else recorder.count
        budget = budget_of(route.endpoint)
        if budget is not None and sent > budget:
            raise QueryCountError(
                f"{scope['method']} {route.path} sent {sent} queries, "
                f"over its budget of {budget}:\n{recorder.report()}"
            )
        if scope["method"] == "GET" and status == 200:
            self.requests.setdefault(_request_of(scope, route), sent)


def _request_of(scope: Scope, route: APIRoute) -> Request:
    target = scope["raw_path"].decode("latin-1")
    if scope["query_string"]:
        target += "?" + scope["query_string"].decode("latin-1")
    headers = tuple(
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in scope["headers"]
        if name not in (b"host", b"content-length")
    )
    return Request(f"GET {route.path}", target, headers)


@contextlib.asynccontextmanager
async def budget_client(
    app: FastAPI, tables: sa.MetaData = SQLModel.metadata
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app`` that fails any request over its route's query budget, and, once
    the block ends, any GET whose statement count grows with the rows in ``tables``. It
    calls with a token holding every scope the routes ask for (``tests.harness.tokens``).
    """
    enforcer = BudgetEnforcer(app)
    transport = httpx.ASGITransport(app=enforcer)
    headers = full_access(app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=headers
    ) as client:
        yield client
    await assert_counts_stay_flat(app, enforcer.requests, tables)


# Each round adds this many copies of every row the test made, three rounds in all: a count
# that rises in every round grows with the rows. (A correct route may step once, when a
# page that was empty gets rows; it cannot rise twice.)
COPIES_PER_ROUND = 2
ROUNDS = 3


async def assert_counts_stay_flat(
    app: FastAPI, requests: dict[Request, int], tables: sa.MetaData = SQLModel.metadata
) -> None:
    """Replay each GET on the same database with ever more rows in every table; fail, naming
    the route and its repeated statement, if its statement count rises each time.
    """
    if not requests:
        return
    growth = RowGrowth(app.state.engine, tables)
    if not await growth.snapshot():
        return
    counts: dict[Request, list[int]] = {request: [sent] for request, sent in requests.items()}
    reports: dict[Request, str] = {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for _ in range(ROUNDS):
            await growth.add_copies(COPIES_PER_ROUND)
            for request in requests:
                replayed = await _replay(app, client, request)
                if replayed is None:
                    counts[request].append(-1)
                else:
                    counts[request].append(replayed.count)
                    reports[request] = replayed.report()
    growing = [
        request
        for request, sent in counts.items()
        if -1 not in sent and all(before < after for before, after in itertools.pairwise(sent[1:]))
    ]
    if growing:
        raise QueryCountError(
            "\n\n".join(
                f"{request.route} sends more statements the more rows there are: "
                f"GET {request.target} sent {', then '.join(map(str, counts[request]))} as every "
                f"table got {COPIES_PER_ROUND} more copies of each row, {ROUNDS} times. Load "
                f"the rows a response needs in one statement (a join, or one IN/ANY for all of "
                f"them), not one statement per row. Its statements on the most rows:\n"
                f"{reports[request]}"
                for request in growing
            )
        )


async def _replay(
    app: FastAPI, client: httpx.AsyncClient, request: Request
) -> QueryRecorder | None:
    cache = getattr(app.state, "cache", None)
    if cache is not None:
        cache.clear()  # a cached answer would send no statement at all
    with record_queries(call_sites=True) as recorder:
        response = await client.get(request.target, headers=list(request.headers))
    return recorder if response.status_code == 200 else None


class RowGrowth:
    """Copies of the rows a test made, added to every table a few at a time.

    A copy keeps its row's values (so it matches the filters the original matched) and its
    parents (so the parent's collection grows), but for what must stay unique: its own key,
    unique text (suffixed), and foreign keys that are part of a key, which point at copies
    of their parents (so a link table links the copies too). Of a large table, the first
    ``MAX_COPIED_ROWS`` rows are copied.
    """

    MAX_COPIED_ROWS = 20

    def __init__(self, engine: AsyncEngine, tables: sa.MetaData) -> None:
        self.engine = engine
        self.tables = tables
        self.originals: dict[sa.Table, list[dict[str, Any]]] = {}
        self.copies: dict[sa.Table, dict[Any, list[Any]]] = {}
        self.serial = 0

    async def snapshot(self) -> bool:
        """Note the rows the test made; False when there are none."""
        async with self.engine.connect() as connection:
            for table in self.tables.sorted_tables:
                first = sa.select(table).order_by(*table.primary_key.columns)
                rows = await connection.execute(first.limit(self.MAX_COPIED_ROWS))
                self.originals[table] = [dict(row) for row in rows.mappings()]
                self.copies[table] = {}
        return any(self.originals.values())

    async def add_copies(self, count: int) -> None:
        """Add ``count`` copies of every row noted, parents first, a table at a time."""
        for table in self.tables.sorted_tables:
            copies: list[tuple[Any, dict[str, Any]]] = []
            for row in self.originals[table]:
                for _ in range(count):
                    self.serial += 1
                    copies += [(row, values) for values in self._copies(table, row)]
            if copies:
                await self._insert(table, copies)

    def _copies(self, table: sa.Table, row: dict[str, Any]) -> Iterator[dict[str, Any]]:
        keys = _unique_column_sets(table)
        unique = set().union(*keys) if keys else set()
        base = {
            name: self._unique_text(table.c[name], value) if name in unique else value
            for name, value in row.items()
            if not assigned_by_database(table.c[name])
        }
        in_a_key = [
            column for column in table.columns if column.foreign_keys and column.name in unique
        ]
        if not in_a_key:
            yield base
            return
        for size in range(1, len(in_a_key) + 1):
            for replaced in itertools.combinations(in_a_key, size):
                values = dict(base)
                for column in replaced:
                    parent = next(iter(column.foreign_keys)).column.table
                    copies = self.copies.get(parent, {}).get(row[column.name])
                    if not copies:
                        break
                    values[column.name] = copies[-1]
                else:
                    yield values

    def _unique_text(self, column: sa.Column[Any], value: Any) -> Any:
        if not isinstance(value, str):
            return value
        suffix = f"~{self.serial}"
        length = getattr(column.type, "length", None) or len(value) + len(suffix)
        return value[: length - len(suffix)] + suffix

    async def _insert(self, table: sa.Table, copies: list[tuple[Any, dict[str, Any]]]) -> None:
        key_columns = list(table.primary_key.columns)
        statement = sa.insert(table).returning(*key_columns, sort_by_parameter_order=True)
        try:
            async with self.engine.begin() as connection:
                result = await connection.execute(statement, [values for _, values in copies])
                added = [(row, key) for (row, _), (key, *_) in zip(copies, result, strict=True)]
        except IntegrityError:
            # A constraint some copy cannot meet: add them one at a time, leaving it out.
            added = []
            for row, values in copies:
                with contextlib.suppress(IntegrityError):
                    async with self.engine.begin() as connection:
                        added.append(
                            (row, (await connection.execute(statement, [values])).scalar())
                        )
        if len(key_columns) == 1:
            for row, key in added:
                self.copies[table].setdefault(row[key_columns[0].name], []).append(key)


def _unique_column_sets(table: sa.Table) -> list[set[str]]:
    sets = [{column.name for column in table.primary_key.columns}]
    sets += [
        {column.name for column in constraint.columns}
        for constraint in table.constraints
        if isinstance(constraint, sa.UniqueConstraint)
    ]
    sets += [{column.name for column in index.columns} for index in table.indexes if index.unique]
    sets += [{column.name} for column in table.columns if column.unique]
    return [
        names for names in sets if not any(assigned_by_database(table.c[name]) for name in names)
    ]
