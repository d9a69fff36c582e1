"""What the tests share: databases of their own, a client that holds every route to its query
budget, and the check that a route's statement count stays flat as its rows grow.

Import from here (``from tests.harness import ...``); ``conftest.py`` holds the fixtures.
"""

import asyncio
import contextlib
import functools
import itertools
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any

import annotated_types
import httpx
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIRouter
from polyfactory.factories.pydantic_factory import ModelFactory
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, create_model
from sqlalchemy import NullPool, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import SQLModel
from sqlmodel.main import default_registry
from starlette.routing import BaseRoute
from starlette.types import Message, Receive, Scope, Send

from my_service import (
    CoalescingRefresher,
    QueryCountError,
    QueryRecorder,
    Settings,
    budget_of,
    record_queries,
)

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"
# Nothing a test runs, in this process or in one it starts, may reach the service's database.
SERVICE_DATABASE_URL = os.environ.pop("DATABASE_URL", None)
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
# Nor does the service's configuration reach them: each test builds the settings it needs.
for _setting in Settings.model_fields:
    os.environ.pop(_setting.upper(), None)
Settings.model_config["env_file"] = None


# --- Databases of the tests' own -------------------------------------------------------------


def database_server() -> URL | None:
    """The PostgreSQL server the tests create their databases on; None means SQLite."""
    if not TEST_DATABASE_URL:
        return None
    try:
        url = Settings(database_url=TEST_DATABASE_URL).database_url.get_secret_value()
        server: URL | None = make_url(url)
    except ValueError:
        server = None
    if server is None or server.get_backend_name() != "postgresql":
        raise pytest.UsageError(
            "TEST_DATABASE_URL must name a PostgreSQL server whose user may create databases, "
            "for instance postgresql+asyncpg://postgres@127.0.0.1:5432/postgres; leave it unset "
            "to test on in-memory SQLite"
        )
    if SERVICE_DATABASE_URL is not None and _same_database(server, SERVICE_DATABASE_URL):
        raise pytest.UsageError(
            "TEST_DATABASE_URL names the database of the service's own DATABASE_URL, and the "
            "tests stay away from it. Point TEST_DATABASE_URL at another database of that "
            "server, such as .../postgres: the tests only connect to it to create a database "
            "of their own, which they drop at the end."
        )
    return server


def _same_database(server: URL, service_database_url: str) -> bool:
    try:
        url = Settings(database_url=service_database_url).database_url.get_secret_value()
    except ValueError:
        return False
    return _where(server) == _where(make_url(url))


def _where(url: URL) -> tuple[str, int, str | None]:
    return (url.host or "localhost", url.port or 5432, url.database)


@contextlib.contextmanager
def throwaway_database(purpose: str) -> Iterator[str]:
    """A new, empty database on the test server, named for this run alone, dropped afterwards."""
    server = database_server()
    assert server is not None, "throwaway databases are made on the TEST_DATABASE_URL server"
    name = f"test_my_service_{purpose}_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_on_server(server, f'CREATE DATABASE "{name}"'))
    except (OSError, SQLAlchemyError) as exc:
        where = server.render_as_string(hide_password=True)
        pytest.fail(f"cannot create a test database on TEST_DATABASE_URL ({where}): {exc}")
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_on_server(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _on_server(server: URL, statement: str) -> None:
    engine = create_async_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.exec_driver_sql(statement)
    finally:
        await engine.dispose()


@contextlib.contextmanager
def empty_database(directory: Path, purpose: str) -> Iterator[str]:
    """A new, empty database of the kind the suite runs on: a SQLite file in ``directory``,
    or a throwaway PostgreSQL database.
    """
    if database_server() is None:
        yield f"sqlite+aiosqlite:///{directory / f'{purpose}.db'}"
    else:
        with throwaway_database(purpose) as url:
            yield url


def migration_engine(url: str) -> AsyncEngine:
    """An engine to run migrations with: each run has an event loop of its own, so no pool."""
    return create_async_engine(url, poolclass=NullPool)


def alembic_config(engine: AsyncEngine) -> Config:
    """alembic.ini's configuration, to run Alembic's commands on the database of ``engine``."""
    config = Config(ALEMBIC_INI)
    config.attributes["connection"] = engine
    return config


def upgrade_to_head(engine: AsyncEngine) -> None:
    """Run every migration on the database of ``engine``."""
    command.upgrade(alembic_config(engine), "head")


def sqlite_file_at_head(path: Path) -> str:
    """A new SQLite file at ``path`` with the schema, recorded at the migrations' head, and no
    rows; its URL, for a service to start on (it refuses a database behind the migrations).
    """
    # create_all is far quicker than running every revision, and builds the same schema
    # (test_migrations proves it); the stamp records it as the migrations' head.
    engine = sa.create_engine(f"sqlite:///{path}", poolclass=NullPool)
    try:
        with engine.begin() as connection:
            SQLModel.metadata.create_all(connection)
            MigrationContext.configure(connection).stamp(_scripts(), "head")
    finally:
        engine.dispose()
    return f"sqlite+aiosqlite:///{path}"


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(Config(ALEMBIC_INI))


async def empty_every_table(engine: AsyncEngine) -> None:
    """Make the database of ``engine`` hold the schema and no rows."""
    # An in-memory SQLite database starts empty, and create_all is the quickest way to its
    # schema (the migration tests prove it is the migrations' schema); on a file made by
    # sqlite_file_at_head it finds every table there. The PostgreSQL database was migrated
    # once for the session: emptying its tables is far quicker than a new one.
    async with engine.begin() as connection:
        if engine.dialect.name != "postgresql":
            await connection.run_sync(SQLModel.metadata.create_all)
            return
        tables = ", ".join(f'"{table.name}"' for table in SQLModel.metadata.sorted_tables)
        if tables:
            await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


async def fill_every_table(engine: AsyncEngine, rows: int = 3, seed: int = 0) -> None:
    """Give every table ``rows`` rows of generated values that its model accepts, each foreign
    key pointing at a row of the table it refers to.

    The keys are the database's, so rows created later get the next ones.
    """
    models = {mapper.local_table: mapper.class_ for mapper in default_registry.mappers}
    keys: dict[sa.Table, list[Any]] = {}
    for table in SQLModel.metadata.sorted_tables:
        model = models.get(table)
        if model is None:
            continue
        factory = ModelFactory.create_factory(_values_of(model))
        factory.seed_random(seed)
        references = _references(table, keys)
        added = keys[table] = []
        for number, parents in zip(range(rows), references, strict=False):
            generated = factory.build().model_dump()
            values = {
                column.name: generated[column.name]
                for column in table.columns
                if column.name in generated and not _assigned_by_database(column)
            }
            values.update(parents)
            statement = sa.insert(table).values(values).returning(*table.primary_key.columns)
            try:
                async with engine.begin() as connection:
                    added.append((await connection.execute(statement)).one()[0])
            except SQLAlchemyError as exc:
                raise AssertionError(
                    f"cannot fill table {table.name} (row {number + 1}): {exc}; if the table is "
                    "missing, write its revision (see the README's migrations section)"
                ) from exc


def _values_of(model: type[SQLModel]) -> type[BaseModel]:
    # A model of the table model's fields and their constraints (lengths, bounds), without
    # the columns SQLModel keeps beside them, which the factory cannot copy.
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        bounds = [item for item in info.metadata if isinstance(item, annotated_types.BaseMetadata)]
        fields[name] = (Annotated[(info.annotation, *bounds)] if bounds else info.annotation, ...)
    return create_model(f"{model.__name__}Values", **fields)


def _references(table: sa.Table, keys: dict[sa.Table, list[Any]]) -> Iterator[dict[str, Any]]:
    # The foreign keys of each row to add: every combination of parent rows, in order, so
    # that a key made of foreign keys (a link table's) never repeats.
    foreign = [
        (column.name, keys.get(next(iter(column.foreign_keys)).column.table, []))
        for column in table.columns
        if column.foreign_keys
    ]
    if not foreign:
        yield from itertools.repeat({})
        return
    names = [name for name, _ in foreign]
    for combination in itertools.product(*(parents for _, parents in foreign)):
        yield dict(zip(names, combination, strict=True))


def _assigned_by_database(column: sa.Column[Any]) -> bool:
    return bool(
        column.primary_key and column.autoincrement is not False and not column.foreign_keys
    )


# --- Indexes ---------------------------------------------------------------------------------


def is_partial(index: sa.Index) -> bool:
    """True for an index of only the rows its WHERE clause selects."""
    return any(options.get("where") is not None for options in index.dialect_options.values())


def indexed_columns(table: sa.Table, *, partial: bool) -> set[str]:
    """Columns that lead an index, a primary key or a unique constraint of ``table``;
    leading a partial index counts only if ``partial``.
    """
    leading = {
        next(iter(index.columns)).name
        for index in table.indexes
        if partial or not is_partial(index)
    }
    leading |= {column.name for column in table.columns if column.unique}
    if table.primary_key.columns:
        leading.add(next(iter(table.primary_key.columns)).name)
    return leading


def unindexed_foreign_keys(metadata: sa.MetaData) -> list[str]:
    """Foreign keys that lead no index over every row.

    A partial index does not count: a join or an ON DELETE cascade reaches the rows it
    leaves out, and the database would scan the whole table for them.
    """
    return [
        f"{table.name}.{key.parent.name}"
        for table in metadata.sorted_tables
        for key in table.foreign_keys
        if key.parent.name not in indexed_columns(table, partial=False)
    ]


def unindexed_columns(columns: Iterable[tuple[str, str]]) -> list[str]:
    """The (table, column) pairs that lead no index, a primary key or a unique constraint
    (partial indexes included), as "table.column".
    """
    return [
        f"{table}.{column}"
        for table, column in columns
        if column not in indexed_columns(SQLModel.metadata.tables[table], partial=True)
    ]


# --- The test client: budgets, and counts that stay flat -------------------------------------


def api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    """Every API route, including those of included routers."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        # Recent FastAPI versions keep an included router whole instead of copying its routes.
        elif isinstance(included := getattr(route, "original_router", None), APIRouter):
            yield from api_routes(included.routes)


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
    the block ends, any GET whose statement count grows with the rows in ``tables``.
    """
    enforcer = BudgetEnforcer(app)
    transport = httpx.ASGITransport(app=enforcer)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
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
            if not _assigned_by_database(table.c[name])
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
        names for names in sets if not any(_assigned_by_database(table.c[name]) for name in names)
    ]


# --- A real server ----------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def serving(
    directory: Path, source: str, settings: Mapping[str, str], *options: str
) -> Iterator[int]:
    """Run the app module ``source``, written to ``directory``, under uvicorn on a free port
    of 127.0.0.1 with these settings, until the block ends; the port.

    The server's database is a SQLite file in ``directory`` at the migrations' head, unless
    ``settings`` name one.
    """
    (directory / "served_app.py").write_text(source)
    # Beside the module, as in the project: the service checks its database against them.
    (directory / "migrations").symlink_to(ALEMBIC_INI.parent / "migrations")
    port = free_port()
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(directory), str(Path.cwd())]),
        **settings,
    }
    if "DATABASE_URL" not in settings:
        environment["DATABASE_URL"] = sqlite_file_at_head(directory / "served.db")
    command = [sys.executable, "-m", "uvicorn", "served_app:app", "--port", str(port), *options]
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--no-access-log"],
        env=environment,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    log: list[str] = []
    for line in process.stderr:  # until it listens, or the process ends
        log.append(line)
        if "Uvicorn running on" in line:
            break
    else:
        pytest.fail("uvicorn did not start:\n" + "".join(log))
    # Keep reading its log (a line per request): a full pipe would stop the server.
    threading.Thread(target=log.extend, args=(process.stderr,), daemon=True).start()
    try:
        yield port
        assert process.poll() is None, "the server died:\n" + "".join(log[-20:])
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # connections still open: do not wait for them
            process.kill()
            process.wait()


# --- A network that fails ---------------------------------------------------------------------


class TcpProxy:
    """Relays each connection to the database server ``database_url`` names, until told to fail
    as a network does; ``url`` is the same database, reached through the proxy.

    ``silence()`` stops the connections open now from passing anything either way, without
    closing them: no FIN, no RST, as when a host dies or its address moves. New connections
    pass. ``resume()`` lets the silenced ones pass again, with what they held back.
    ``refuse()`` cuts every connection and turns new ones away, as a restarting server does,
    until ``accept()``. Use it as an async context manager; ``port`` is where it listens.
    """

    def __init__(self, database_url: str) -> None:
        self.database_url = make_url(database_url)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._gates: list[asyncio.Event] = []
        self._transports: list[asyncio.WriteTransport] = []
        self._relays: set[asyncio.Task[None]] = set()
        self._refusing = False

    @property
    def url(self) -> str:
        url = self.database_url.set(host="127.0.0.1", port=self.port)
        return url.render_as_string(hide_password=False)

    async def __aenter__(self) -> "TcpProxy":
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.refuse()
        if self._relays:
            await asyncio.wait(self._relays)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def silence(self) -> None:
        """Hold back everything the connections open now send, either way."""
        for gate in self._gates:
            gate.clear()

    def resume(self) -> None:
        """Let the silenced connections pass again, what they held back first."""
        for gate in self._gates:
            gate.set()

    def refuse(self) -> None:
        """Cut every connection, and cut new ones as soon as they are made."""
        self._refusing = True
        for transport in self._transports:
            transport.abort()
        self._transports.clear()
        self.resume()
        self._gates.clear()

    def accept(self) -> None:
        """Relay new connections again."""
        self._refusing = False

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.transport.abort()
            return
        try:
            target_reader, target_writer = await asyncio.open_connection(
                self.database_url.host or "127.0.0.1", self.database_url.port or 5432
            )
        except OSError:
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        gate = asyncio.Event()
        gate.set()
        self._gates.append(gate)
        self._transports += [writer.transport, target_writer.transport]
        try:
            await asyncio.gather(
                _pump(reader, target_writer, gate), _pump(target_reader, writer, gate)
            )
        finally:
            self._relays.discard(task)


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: asyncio.Event
) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            await gate.wait()
            writer.write(data)
            await writer.drain()
        # A silent network passes no end of stream either.
        await gate.wait()
    writer.close()


# --- Waiting and metrics ---------------------------------------------------------------------


async def eventually(condition: Callable[[], bool]) -> None:
    """Let the other tasks run until ``condition`` holds; fail if it never does."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def flushed(refresher: CoalescingRefresher) -> None:
    """Flush the refresher, failing rather than hanging if its worker is broken."""
    async with asyncio.timeout(10):
        await refresher.flush()


async def scrape(client: httpx.AsyncClient) -> dict[str, float]:
    """The service's /metrics, parsed: each sample without labels, by name."""
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if not sample.labels
    }
