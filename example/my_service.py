"""My Service: A FastAPI + SQLModel service.

Create or upgrade its tables with ``alembic upgrade head``, run it with
``uvicorn my_service:app`` and test it with ``pytest``. Every setting comes from an
environment variable or ``.env``; see ``.env.example``.

The module has two halves, one fence between them. Above it, the template's: ``copier
update`` keeps improving it, and you rarely need to edit it.
    Settings                   how every part's settings are read, and refused
    Metrics                    the kit's counters for Prometheus
    Database                   async engine, write sessions, AUTOCOMMIT reads, readiness, breaker
    Query budgets              every statement counted per request
    Server-Timing              where a request's time went, in a response header
    Request log                one line per request, with its id
    Capacity                   one 503 with Retry-After for "no capacity now"
    TTL cache                  in memory, one load per key, invalidated after commit
    Invalidation               cache invalidations across processes (PostgreSQL)
    Offload                    blocking code in a bounded thread pool of its own
    Work after the response    refreshes coalesced into one task
    Overload guard             requests in flight bounded, the rest refused at once
    Request bodies             bounded in size and time, read before admission
    Slow clients               deadlines on headers and on responses nobody reads
    Probes                     /health and /ready on a port of their own, ahead of traffic
    Profiling                  one request's profile, in development
    Access                     bearer tokens checked, each route's rule enforced
    Error contract             the one error shape; every route's statuses in OpenAPI
    App factory                ``KitSettings`` and ``build_app``: the parts, in order
    For your routes            dependencies, ``@query_budget(n)``, ``@access``, types,
                               statements for both databases, answers
Each part's section holds all of it: its settings, its counters, its classes, and the
function that installs it into the app.
Below it, yours: your settings, models, routes, background work, and ``create_app``, which
hands them to ``build_app``. Add a model and its routes as the README's recipe says.
"""

import asyncio
import csv
import functools
import importlib.util
import io
import logging
import math
import os
import random
import re
import secrets
import sqlite3
import sys
import sysconfig
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import (
    AbstractAsyncContextManager,
    asynccontextmanager,
    contextmanager,
    nullcontext,
    suppress,
)
from contextvars import Context, ContextVar
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from types import FrameType, MappingProxyType
from typing import Annotated, Any, ClassVar, Literal, ParamSpec, Self, TypeVar, cast
from urllib.parse import parse_qs

import aiosqlite
import anyio
import anyio.to_thread
import asyncpg
import greenlet
import httpx
import jwt
import orjson
import sqlalchemy as sa
from cachetools import LRUCache, TLRUCache
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import (
    ErrorDetails,
    PydanticCustomError,
    PydanticSerializationError,
    from_json,
    to_json,
    to_jsonable_python,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Identity,
    Index,
    Integer,
    Select,
    TypeDecorator,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection, ExceptionContext, ExecutionContext
from sqlalchemy.exc import ArgumentError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import QueryableAttribute, SessionTransaction
from sqlalchemy.orm import Session as SyncSession
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.sql.base import SyntaxExtension
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.util import await_only, greenlet_spawn
from sqlmodel import Field, Relationship, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.datastructures import State
from starlette.middleware import Middleware
from starlette.responses import StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import Config as UvicornConfig
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

# What tests, migrations and other modules may import: the kit's API for your code (see
# For your routes), the parts tests exercise, and the service's entry points.
__all__ = [
    "AUTHENTICATED",
    "GAUGE",
    "MAX_ECHOED_INPUT",
    "PUBLIC",
    "UNGUARDED_PATHS",
    "Access",
    "AccessSettings",
    "AsyncTTLCache",
    "BigKey",
    "BoundedHttpToolsProtocol",
    "CacheDep",
    "CacheListener",
    "Caller",
    "CallerDep",
    "CoalescingRefresher",
    "ConcurrencyLimit",
    "Cursor",
    "DatabaseUnavailable",
    "DriverConnection",
    "Id",
    "InputSchema",
    "Int4",
    "JsonLogFormatter",
    "KitSettings",
    "Name",
    "NonNegativeInt4",
    "OffloadDep",
    "Offloader",
    "OverloadGuard",
    "Overloaded",
    "PartialUpdate",
    "PlainText",
    "QueryCountError",
    "QueryRecorder",
    "Reads",
    "ReadsDep",
    "RequestBodyLimit",
    "RequestBodyStats",
    "RequestObserver",
    "RowAnswer",
    "SchemaBehind",
    "SendDeadline",
    "SessionDep",
    "Settings",
    "SettingsError",
    "Transaction",
    "UTCDateTime",
    "WholeNumber",
    "WritesDep",
    "access",
    "access_of",
    "any_of",
    "api_routes",
    "app",
    "budget_of",
    "build_app",
    "check_schema",
    "create_app",
    "create_engine",
    "dump_json",
    "error_responses",
    "expect_queries",
    "get_session",
    "get_writes",
    "invalidation_sender",
    "json_response",
    "key_column",
    "mint_token",
    "on_conflict_update",
    "query_budget",
    "record_queries",
    "router",
    "unprocessable",
]

logger = logging.getLogger("my_service")
# The result and the parameters of a function the kit wraps (the cache's loads, offloaded
# calls).
_Result = TypeVar("_Result")
_Params = ParamSpec("_Params")


# --- Settings ---------------------------------------------------------------------------


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot run with."""


class PartSettings(BaseSettings):
    """The settings of one part of the kit, declared in that part's section; ``KitSettings``
    (App factory) combines them. Each field is read from its upper-cased environment
    variable, or from ``.env`` in the working directory, the environment first.
    """

    # Errors never carry the raw input: a database URL holds a password. from_env shows
    # each refused value itself, with any password masked. Variables of .env that are not
    # settings (the deployment's own) are left alone, as the environment's are. No setting
    # is infinite or NaN: an endless deadline is one no wait ever reaches, and every bound
    # (each field's le=) says where a value stops being a choice and becomes a mistake.
    model_config = SettingsConfigDict(
        env_file=".env",
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
        allow_inf_nan=False,
    )

    @classmethod
    def from_env(cls) -> Self:
        """Read the settings from the environment and ``.env``, refusing invalid values."""
        try:
            return cls()
        except UnicodeDecodeError:
            # python-dotenv's own error names neither the file nor what it wants.
            raise SettingsError(
                f"cannot read {cls.model_config.get('env_file')}: it is not UTF-8 text; "
                "want one KEY=value a line"
            ) from None
        except OSError as exc:
            raise SettingsError(
                f"cannot read {cls.model_config.get('env_file')}: {exc.strerror}; want a file "
                "the service's user may read, or none"
            ) from None
        except ValidationError as exc:
            problems = "; ".join(cls._problem(error) for error in exc.errors())
            raise SettingsError(f"invalid settings: {problems}") from None

    @classmethod
    def _problem(cls, error: "ErrorDetails") -> str:
        if not error["loc"]:
            # A rule across settings: its message names them.
            return error["msg"].removeprefix("Value error, ")
        name = str(error["loc"][0])
        # A secret is never shown; a URL is, with its password masked.
        value = "***" if name.endswith("_secret") else repr(_masked(error["input"]))
        return f"{name.upper()}={value}: {error['msg']}"


def _masked(value: object) -> object:
    # A refused URL is shown with its password masked. Everything up to the last @ is taken
    # as user and password, without parsing: a password with an unencoded @ would otherwise
    # show its end as the host. An @ further on (in the query) masks more, never less.
    if not isinstance(value, str) or "://" not in value:
        return value
    scheme, rest = value.split("://", 1)
    credentials, at, location = rest.rpartition("@")
    if not at:
        return value
    user, colon, _ = credentials.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{location}"


# --- Metrics ----------------------------------------------------------------------------
# The kit's counters in the Prometheus text format. Every part of the kit keeps its numbers
# in a ``...Stats`` dataclass on ``app.state``, itself or as the ``stats`` attribute of what
# it put there; each field is exported as ``<part>_<field>``, the part named after the class
# (GuardStats: guard_...) unless the class names its ``metric_prefix``. A part with a number
# that is not a field (the cache's size) offers a ``collect_metrics()`` method as well.
# A field is a counter (``_total``, only ever goes up) unless it says it is a gauge (a level
# that goes up and down, such as requests in flight) with ``field(metadata=GAUGE)``.
# Declare each field with ``counter_field("...")`` or ``gauge_field("...")``: the text is its
# HELP line, what a dashboard shows beside the series.

GAUGE = MappingProxyType({"metric": "gauge"})


def counter_field(description: str) -> Any:
    """A ``...Stats`` field that counts up from 0, with ``description`` as its HELP line."""
    return field(default=0, metadata={"help": description})


def gauge_field(description: str, default: float = 0) -> Any:
    """A ``...Stats`` field that goes up and down, with ``description`` as its HELP line."""
    return field(default=default, metadata={**GAUGE, "help": description})


class KitCollector:
    """Reads the stats of every part of the kit on ``state`` each time /metrics is scraped."""

    def __init__(self, state: State) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        """One metric per numeric field of every ``stats`` dataclass, with its value now."""
        # State keeps its attributes in _state; older Starlette versions offer no other way
        # to list them.
        for part in list(self.state._state.values()):
            extra = getattr(part, "collect_metrics", None)
            if callable(extra):
                yield from extra()
            stats = getattr(part, "stats", part)
            if not is_dataclass(stats) or isinstance(stats, type):
                continue
            prefix = getattr(stats, "metric_prefix", None) or _snake_case(
                type(stats).__name__.removesuffix("Stats")
            )
            for stat in fields(stats):
                value = getattr(stats, stat.name)
                if not isinstance(value, int | float):
                    continue
                metric = f"{prefix}_{stat.name}"
                description = stat.metadata.get("help", f"{type(stats).__name__}.{stat.name}")
                if stat.metadata.get("metric") == "gauge":
                    yield GaugeMetricFamily(metric, description, value=value)
                else:
                    yield CounterMetricFamily(metric, description, value=value)


def install_metrics(app: FastAPI) -> None:
    """Serve ``GET /metrics`` from a registry of the app's own, with the kit's collector."""
    # Not the library's global registry: every app (and every test's app) counts for itself.
    app.state.metrics = registry = CollectorRegistry()
    registry.register(KitCollector(app.state))
    endpoint = access(PUBLIC)(query_budget(0)(metrics))
    app.add_api_route("/metrics", endpoint, response_class=PlainTextResponse)


async def metrics(request: Request) -> Response:
    """This process's counters and request durations, in the Prometheus text format."""
    registry: CollectorRegistry = request.app.state.metrics
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# --- Database ---------------------------------------------------------------------------


class DatabaseSettings(PartSettings):
    """Where the database is, and how long a request waits for it."""

    database_url: SecretStr = SecretStr(
        "sqlite+aiosqlite:///./my_service.db",
    )
    # Connections per worker, as many as GUARD_MAX_IN_FLIGHT may be (PostgreSQL allows 100
    # in all unless told otherwise).
    database_pool_size: int = Field(default=10, ge=1, le=1000)
    database_max_overflow: int = Field(default=0, ge=0, le=1000)
    # Seconds. A request waits on these: past a minute its client has long given up; a
    # statement (a report, say) may take ten.
    database_pool_timeout: float = Field(default=5.0, gt=0, le=60)
    database_connect_timeout: float = Field(default=5.0, gt=0, le=60)
    database_statement_timeout: float = Field(default=10.0, gt=0, le=600)
    database_ready_timeout: float = Field(default=1.0, gt=0, le=60)
    # Seconds a connection lives, at most a day; -1 for ever.
    database_pool_recycle: int = Field(default=1800, ge=-1, le=86_400)
    database_pool_pre_ping: bool = False
    database_echo: bool = False

    @field_validator("database_url", mode="before")
    @classmethod
    def _supported_driver(cls, value: object) -> object:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if not isinstance(value, str):
            return value  # refused as not a string
        # Plain postgres:// URLs (as hosting providers hand them out) get the async driver.
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                value = "postgresql+asyncpg://" + value.removeprefix(prefix)
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "want sqlite+aiosqlite:///path/to/file.db or "
                "postgresql+asyncpg://user@host:port/dbname"
            )
        try:
            url = make_url(value)
        except (ArgumentError, ValueError):
            raise ValueError(
                "not a valid URL; want postgresql+asyncpg://user:password@host:port/dbname"
            ) from None
        if url.host is not None and "@" in url.host:
            # An unencoded @ in the password ends it early: the rest would be taken as the host.
            raise ValueError("percent-encode each @ in the user name and password as %40")
        if url.get_backend_name() == "postgresql":
            url = _asyncpg_ssl(url)
        return url.render_as_string(hide_password=False)


# libpq's sslmode values, which asyncpg takes as its ssl argument.
_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# Certificate paths are libpq URL parameters that asyncpg does not take as arguments; it
# reads them from the environment variables libpq uses.
_SSL_FILES = {
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
}


def _asyncpg_ssl(url: URL) -> URL:
    # Hosting providers hand out libpq URLs (?sslmode=require); asyncpg calls it ssl.
    for name, variable in _SSL_FILES.items():
        if name in url.query:
            raise ValueError(
                f"asyncpg takes no {name} in the URL; remove it and set {variable} instead"
            )
    if "sslmode" not in url.query:
        return url
    mode = url.query["sslmode"]
    if "ssl" in url.query or mode not in _SSL_MODES:
        raise ValueError(f"want sslmode (or ssl) once, one of {', '.join(_SSL_MODES)}")
    return url.difference_update_query(["sslmode"]).update_query_dict({"ssl": mode})


def create_engine(settings: DatabaseSettings, *, deadlines: bool = True) -> AsyncEngine:
    """Create the async engine for ``settings.database_url``, with query counting attached.

    Every wait on the database has a deadline: a new connection ``DATABASE_CONNECT_TIMEOUT``,
    a pooled one (and SQLite's write lock) ``DATABASE_POOL_TIMEOUT``, and each PostgreSQL
    statement ``DATABASE_STATEMENT_TIMEOUT``, unless ``deadlines`` is false (migrations may
    rightly run for minutes). A deadline passed, a connection lost or refused: statements
    raise ``DatabaseUnavailable``, which requests answer with the kit's 503.
    """
    url = make_url(settings.database_url.get_secret_value())
    if url.get_backend_name() == "sqlite":
        engine = create_async_engine(url, echo=settings.database_echo)
        pragmas = _sqlite_pragmas(url, busy_timeout=settings.database_pool_timeout)
        event.listen(engine.sync_engine, "connect", pragmas)
        event.listen(engine.sync_engine, "begin", _begin_immediate)
    else:
        # A peer gone silent (a host dead, a virtual IP moved: no FIN, no RST) would be
        # awaited for ever; asyncpg gives it up after its connect timeout, or its command
        # timeout once connected.
        statements = {"command_timeout": settings.database_statement_timeout} if deadlines else {}
        engine = create_async_engine(
            url,
            echo=settings.database_echo,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            pool_timeout=settings.database_pool_timeout,
            pool_recycle=settings.database_pool_recycle,
            pool_pre_ping=settings.database_pool_pre_ping,
            connect_args={"timeout": settings.database_connect_timeout, **statements},
        )
        event.listen(engine.sync_engine, "do_connect", _connect_or_unavailable)
    event.listen(engine.sync_engine, "handle_error", _unavailable_on_failure)
    count_queries(engine.sync_engine)
    return engine


def _sqlite_pragmas(
    url: URL, busy_timeout: float
) -> Callable[[DBAPIConnection, ConnectionPoolEntry], None]:
    in_memory = url.database in (None, "", ":memory:")

    def on_connect(dbapi_connection: DBAPIConnection, _: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        # SQLite ignores foreign keys unless asked, and fails at once on a locked database
        # unless given a busy timeout; WAL lets readers run alongside the one writer. The
        # wait for the write lock is the wait for a connection on PostgreSQL: one deadline.
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA busy_timeout = {round(busy_timeout * 1000)}")
        if not in_memory:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    return on_connect


def _begin_immediate(connection: Connection) -> None:
    # A write transaction takes SQLite's write lock when it begins, not at its first write:
    # a transaction that read first and asks for the lock later may find that another
    # writer changed what it read (a lost update), or fail with "database is locked".
    # Writers so queue behind the busy timeout in the order they began, as a row lock
    # makes them on PostgreSQL. Reads run on the AUTOCOMMIT engine and take no lock.
    # The driver's cursor is used directly: like BEGIN on PostgreSQL, it is not counted.
    if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return
    cursor = connection.connection.cursor()
    try:
        cursor.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        # The begin event runs outside SQLAlchemy's error handling: translate here.
        if _sqlite_busy(exc):
            raise DatabaseUnavailable(f"the write lock is still taken: {exc}") from exc
        raise
    finally:
        cursor.close()


class DatabaseUnavailable(Exception):
    """The database cannot answer now; the client should retry a little later (a 503).

    Engines made by ``create_engine`` raise it in place of the driver's error when a wait
    passed its deadline (a connection, a statement, SQLite's write lock), the connection
    was lost or refused (a restart, a failover), or PostgreSQL rolled the transaction back
    for a concurrent one (a deadlock, a serialization failure).
    """


# PostgreSQL errors that mean "not now" rather than "never": a connection exception
# (class 08), no resources left (class 53: connection slots, memory, disk), a statement
# cancelled (57014), a server shutting down or starting up (57P01-57P03).
_UNAVAILABLE_SQLSTATES = ("08", "53", "57014", "57P01", "57P02", "57P03")
# A transaction the database rolled back to let a concurrent one finish: a deadlock's victim
# (40P01) or a serializable transaction that lost (40001). The same request sent again
# succeeds.
_ROLLED_BACK_SQLSTATES = ("40001", "40P01")


def _unavailable_on_failure(context: ExceptionContext) -> DatabaseUnavailable | None:
    # Returned, not raised: the listeners after this one (the breaker's) still see the
    # failure, and SQLAlchemy raises what the last of them returned.
    error = context.original_exception
    if context.is_pre_ping or not isinstance(error, Exception):
        return None  # pre-ping reconnects by itself, and a cancelled task stays cancelled
    if isinstance(error, TimeoutError):
        # asyncpg's command timeout: nothing came back in time. The pool's other connections
        # went the same way over the network, and may be as silent as this one: replace them
        # all now, rather than find each dead at the cost of one more request's deadline.
        context.invalidate_pool_on_disconnect = True
    return _unavailable(error, disconnect=context.is_disconnect)


def _unavailable(error: Exception, *, disconnect: bool) -> DatabaseUnavailable | None:
    # The driver's error as DatabaseUnavailable, if it means "not now" rather than "never".
    sqlstate = str(getattr(error, "sqlstate", ""))
    if isinstance(error, TimeoutError):
        reason = "no answer within DATABASE_STATEMENT_TIMEOUT"
    elif disconnect:
        reason = "the connection was lost"
    elif sqlstate.startswith(_UNAVAILABLE_SQLSTATES):
        reason = "the database refused the work for now"
    elif sqlstate in _ROLLED_BACK_SQLSTATES:
        reason = "the database rolled the transaction back for a concurrent one"
    elif _sqlite_busy(error):
        reason = "the write lock is still taken"
    else:
        return None
    return DatabaseUnavailable(f"{reason}: {error!r}")


def _sqlite_busy(error: Exception) -> bool:
    # Another connection holds the lock, and held it past the busy timeout.
    return str(getattr(error, "sqlite_errorname", "")).startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))


def _connect_or_unavailable(
    dialect: Dialect, record: ConnectionPoolEntry, cargs: tuple[Any, ...], cparams: dict[str, Any]
) -> DBAPIConnection:
    # A connection refused, a host unknown or a connect timeout is the driver's OSError or
    # TimeoutError, which SQLAlchemy passes on untouched; the database's own refusals (no
    # slot left, starting up) are its errors, and _unavailable_on_failure sees them.
    try:
        return dialect.connect(*cargs, **cparams)
    except (OSError, TimeoutError) as exc:
        raise DatabaseUnavailable(f"cannot connect: {exc!r}") from exc


_SELECT_ONE = text("SELECT 1")


class ReadinessCheck:
    """Whether the service can query its database now: the answer of ``GET /ready``.

    A check sends one statement through the pool, as a read would (give it the AUTOCOMMIT
    engine: on SQLite a transaction would take the write lock). Probes that arrive while one
    runs share its answer, so a flood of probes holds one connection at most. A probe waits
    ``timeout`` seconds, then answers "not ready"; the check goes on in the background,
    within the statement deadline, and a later probe may still share it.
    """

    def __init__(self, engine: AsyncEngine, timeout: float) -> None:
        self.engine = engine
        self.timeout = timeout
        self._running: asyncio.Task[None] | None = None

    async def confirm(self) -> None:
        """Return once the database answered; raise ``DatabaseUnavailable`` if it did not
        within ``timeout`` seconds, or failed.
        """
        running = self._running
        if running is None or running.done():
            running = self._running = asyncio.create_task(self._query())
            running.add_done_callback(_retrieve_exception)
        try:
            # Shielded: a probe that gives up leaves the check to finish cleanly.
            await asyncio.wait_for(asyncio.shield(running), self.timeout)
        except DatabaseUnavailable:
            raise
        except TimeoutError:
            message = f"no answer within {self.timeout:g} s (DATABASE_READY_TIMEOUT)"
            raise DatabaseUnavailable(message) from None
        except Exception as exc:
            raise DatabaseUnavailable(f"the readiness query failed: {exc!r}") from exc

    async def _query(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(_SELECT_ONE)


def _retrieve_exception(task: "asyncio.Task[Any]") -> None:
    # A load whose every caller went away may fail unobserved; reading the exception here
    # keeps asyncio from logging "exception was never retrieved".
    if not task.cancelled():
        task.exception()


@dataclass(slots=True)
class DatabaseStats:
    """How often the database was found down, and what the service did while it was:
    exported as ``database_...``, beside the gauge ``database_available``.
    """

    outages: int = counter_field("Times the database was found down")
    refused: int = counter_field("Connections refused at once while the database was down")
    probes: int = counter_field("Statements sent to find out whether the database is back")


class DatabaseBreaker:
    """A database known to be down answers at once: while it is, every connection the
    engine would make or hand out is refused with ``DatabaseUnavailable`` (a 503 with
    ``Retry-After``), without waiting and without asking the database, and one probe at a
    time (a statement of its own, after 0.25 s, then after waits doubling up to
    ``longest_wait``) finds out when it is back; the first that answers lets traffic flow
    again. As Envoy's outlier detection, resilience4j's circuit breaker and pgbouncer's
    ``server_login_retry`` do: a deadline bounds one wait, this spares the next requests
    the same one.

    What marks it down is a failure of the database as a whole: a new connection refused
    or not made in time, or refused by the database (shutting down, starting up). No
    answer within the statement deadline marks it down too, with a probe at once: it is
    the deadline on a silent network, whose every pooled connection would make a request
    wait as long, and also that of one slow statement on a live database, which the probe
    then finds answering within a round trip. Not an outage: a pooled connection lost (an
    idle connection closed by a proxy, one session terminated; the pool replaces it, and
    if the database is gone the new connection fails and counts), and contention, which
    fails one request while the next may well succeed: SQLite's write lock still taken, a
    deadlock's victim, a serialization failure, a statement the server cancelled, no
    connection slot or memory left.
    """

    first_wait = 0.25

    def __init__(self, engine: AsyncEngine, longest_wait: float = 2.0) -> None:
        self.engine = engine
        self.longest_wait = longest_wait
        # The probe's statement runs as a read: on SQLite a transaction would take the write
        # lock.
        self._reads = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.stats = DatabaseStats()
        self._prober: asyncio.Task[None] | None = None
        sync_engine = engine.sync_engine
        # The refusal comes before any connection is made: the engine's own connect
        # (create_engine's, on PostgreSQL) is called from the breaker's. The dialect's
        # events take no insert=True, hence the removal.
        if event.contains(sync_engine, "do_connect", _connect_or_unavailable):
            event.remove(sync_engine, "do_connect", _connect_or_unavailable)
        event.listen(sync_engine, "do_connect", self._connect)
        event.listen(sync_engine, "checkout", self._checkout)
        event.listen(sync_engine, "handle_error", self._failure)

    @property
    def down(self) -> bool:
        """Whether the database is known to be down now."""
        return self._prober is not None

    async def until_up(self) -> None:
        """Return once the database is not known to be down: at once, or when a probe
        finds it back.
        """
        if self._prober is not None:
            await asyncio.shield(self._prober)

    def refuse_if_down(self) -> None:
        """Raise ``DatabaseUnavailable`` at once while the database is known to be down."""
        if self._prober is not None and not _probing.get():
            self.stats.refused += 1
            raise DatabaseUnavailable("the database is down; a probe will tell when it is back")

    def found_down(self, first_probe_after: float = first_wait) -> None:
        """Note that the database failed as a whole: refuse connections until a probe
        finds it back, the first ``first_probe_after`` seconds from now.
        """
        if self._prober is not None:
            return  # the probe decides when it is back
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop to probe from (a thread of its own): not refused either
        self.stats.outages += 1
        logger.warning("the database is down: requests get a 503 at once until it answers")
        # A context of its own: the probe's statements are no request's.
        self._prober = loop.create_task(self._probe(first_probe_after), context=Context())

    def collect_metrics(self) -> Iterator[Metric]:
        """``database_available``: 1 while the database answers, 0 while it is known down."""
        description = "1 while the database answers, 0 while it is known to be down"
        yield GaugeMetricFamily("database_available", description, value=0 if self.down else 1)

    async def close(self) -> None:
        """Stop probing (the app stopping)."""
        if self._prober is not None:
            self._prober.cancel()
            with suppress(asyncio.CancelledError):
                await self._prober

    async def _probe(self, wait: float) -> None:
        _probing.set(True)
        while True:
            await asyncio.sleep(wait)
            self.stats.probes += 1
            try:
                # Within the engine's own deadlines: a connection not made in time, a
                # statement without an answer. One that is held up (a silent network)
                # answers the moment the network does.
                async with self._reads.connect() as connection:
                    await connection.execute(_SELECT_ONE)
            except Exception:
                wait = min(max(wait * 2, self.first_wait), self.longest_wait)
                continue
            break
        self._prober = None
        logger.info("the database answers again")

    def _connect(
        self,
        dialect: Dialect,
        record: ConnectionPoolEntry,
        cargs: tuple[Any, ...],
        cparams: dict[str, Any],
    ) -> DBAPIConnection:
        self.refuse_if_down()
        try:
            return _connect_or_unavailable(dialect, record, cargs, cparams)
        except DatabaseUnavailable:
            self.found_down()  # refused, unreachable, or no answer within the deadline
            raise

    def _checkout(
        self, dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, proxy: object
    ) -> None:
        # A pooled connection, which may have gone silent with the database: refused as a
        # new one would be (the pool then closes it, and the probe connects anew).
        self.refuse_if_down()

    def statement_failed(self, error: Exception) -> None:
        """Note a statement's failure: one without an answer within the deadline marks the
        database down, to be probed at once.
        """
        if isinstance(error, TimeoutError):
            self.found_down(first_probe_after=0)  # a silent network, or one slow statement

    def _failure(self, context: ExceptionContext) -> None:
        error = context.original_exception
        if context.is_pre_ping or not isinstance(error, Exception):
            return  # pre-ping reconnects by itself (a failed reconnection is seen)
        self.statement_failed(error)
        sqlstate = str(getattr(error, "sqlstate", ""))
        if context.connection is None and sqlstate.startswith(_DOWN_SQLSTATES):
            self.found_down()  # a new connection refused by the database itself


# What the database answers a new connection while it cannot serve: a connection exception
# (class 08), shutting down or starting up (57P01-57P03). Not "too many connections" (53300):
# it serves, and a connection comes free soon.
_DOWN_SQLSTATES = ("08", "57P01", "57P02", "57P03")
# Set in the probe's task: its connections pass while the others are refused.
_probing: ContextVar[bool] = ContextVar("probing", default=False)


class SchemaBehind(RuntimeError):
    """The database is behind the code: behind its migrations, or lacking what its models
    declare. The service does not start.
    """


async def check_schema(
    engine: AsyncEngine, versions: Path | None = None, tables: sa.MetaData = SQLModel.metadata
) -> None:
    """Raise ``SchemaBehind`` if the database is behind the revisions in ``versions`` (by
    default ``migrations/versions`` beside the module), or at their head with tables that
    differ from ``tables`` (every model's): a column or a table missing, a column's kind or
    nullability, an index. Warn if it is past the head, as when a newer release migrated it
    in a rolling deploy. Not checked: in-memory SQLite (it starts empty for whoever opens
    it) and a database unreachable now (``/ready`` tells of it)."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database not in (None, "", ":memory:"):
        # The files' text, read without importing Alembic: revision: str = "0002",
        # down_revision: str | None = "0001" (or a tuple of revisions).
        texts = [script.read_text() for script in (versions or _VERSIONS).glob("*.py")]
        known = {name for text in texts for name in _REVISION.findall(text)}
        downs = " ".join(down for text in texts for down in _DOWN.findall(text))
        replaced = set(_QUOTED.findall(downs))
        heads = known - replaced
        try:
            async with engine.connect() as connection:
                current, differences = await connection.run_sync(_schema_now, heads, tables)
        except DatabaseUnavailable as exc:
            logger.warning("the database's schema is not checked: %s", exc)
            current, differences = heads, []
        at = ", ".join(sorted(current)) or "no revision: never migrated"
        if current - known:
            logger.warning("the database is at revision %s, which this code does not know", at)
        elif current != heads:
            behind = f"the database (DATABASE_URL) is at {at}, behind this code's migrations"
            raise SchemaBehind(f"{behind} ({', '.join(sorted(heads))}): run `alembic upgrade head`")
        elif differences:
            raise SchemaBehind(
                f"the database (DATABASE_URL) is at this code's head ({at}), but its tables "
                f"differ from the models: {'; '.join(differences)}. If a model changed, write "
                'its revision with `alembic revision --autogenerate -m "what changed"`, review '
                "it, and run `alembic upgrade head`; if the database was changed by hand, "
                "restore what it lacks as migrations/versions/ builds it"
            )


_VERSIONS = Path(__file__).resolve().with_name("migrations") / "versions"
_REVISION = re.compile(r"^revision\b[^=\n]*=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_DOWN = re.compile(r"^down_revision\b[^=\n]*=([^\n]*)", re.MULTILINE)
_QUOTED = re.compile(r"['\"]([^'\"]+)['\"]")


def _schema_now(
    connection: Connection, heads: set[str], tables: sa.MetaData
) -> tuple[set[str], list[str]]:
    # The revisions recorded, and, at the head, how the tables differ from the models: a
    # database at the head whose tables are not the models' (a model changed without a
    # revision, a column dropped by hand) would answer 500s for what it lacks.
    current = _recorded_revisions(connection)
    return current, _differences(connection, tables) if current == heads else []


def _recorded_revisions(connection: Connection) -> set[str]:
    if not inspect(connection).has_table("alembic_version"):
        return set()
    return set(connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalars())


def _differences(connection: Connection, tables: sa.MetaData) -> list[str]:
    # The catalogue is read once for every table of a schema: two queries on PostgreSQL
    # (columns, indexes), a few PRAGMAs per table of the local file on SQLite.
    inspector = inspect(connection)
    by_schema: dict[str | None, list[sa.Table]] = {}
    for table in tables.sorted_tables:
        by_schema.setdefault(table.schema, []).append(table)
    differences: list[str] = []
    for schema, declared in by_schema.items():
        names = [table.name for table in declared]
        columns = inspector.get_multi_columns(schema=schema, filter_names=names)
        indexes = inspector.get_multi_indexes(schema=schema, filter_names=names)
        for table in declared:
            if (schema, table.name) not in columns:
                differences.append(f"table {table.fullname} is missing")
                continue
            stored = {column["name"]: column for column in columns[schema, table.name]}
            differences += _column_differences(table, stored, connection.dialect)
            differences += _index_differences(table, indexes.get((schema, table.name), []))
    return differences


def _column_differences(
    table: sa.Table, stored: dict[str, sa.engine.interfaces.ReflectedColumn], dialect: Dialect
) -> Iterator[str]:
    for column in table.columns:
        where = f"{table.fullname}.{column.name}"
        found = stored.get(column.name)
        if found is None:
            yield f"column {where} is missing"
            continue
        declared_type = column.type.dialect_impl(dialect)
        if not _same_kind(declared_type, found["type"], dialect):
            stored_ddl = found["type"].compile(dialect=dialect)
            declared_ddl = declared_type.compile(dialect=dialect)
            yield f"{where} is {stored_ddl} in the database, {declared_ddl} in the models"
        if found["nullable"] != column.nullable:
            nullable = {True: "NULL allowed", False: "NOT NULL"}
            yield (
                f"{where} is {nullable[found['nullable']]} in the database, "
                f"{nullable[bool(column.nullable)]} in the models"
            )
    for name in sorted(stored.keys() - set(table.columns.keys())):
        # A column no model knows is harmless, unless an insert cannot leave it out.
        found = stored[name]
        if not found["nullable"] and found["default"] is None and "identity" not in found:
            yield f"{table.fullname}.{name} is NOT NULL without a default, and in no model"


def _same_kind(
    declared: sa.types.TypeEngine[Any], found: sa.types.TypeEngine[Any], dialect: Dialect
) -> bool:
    # Kinds, not details: INTEGER and BIGINT, VARCHAR(50) and TEXT are alike (widths are
    # the migration tests' business). Where the kinds differ, the same column definition
    # still passes: SQLite stores a UUID as CHAR(32), which reads back as a string. A type
    # SQLite does not know reads back as NullType, and is left alone.
    if isinstance(found, sa.types.NullType) or declared._type_affinity is found._type_affinity:
        return True
    return _ddl(declared, dialect) == _ddl(found, dialect)


def _ddl(column_type: sa.types.TypeEngine[Any], dialect: Dialect) -> str:
    return " ".join(column_type.compile(dialect=dialect).upper().split())


def _index_differences(
    table: sa.Table, stored: list[sa.engine.interfaces.ReflectedIndex]
) -> Iterator[str]:
    # Indexes by their columns, whatever their names (a naming convention, PostgreSQL's
    # 63-character limit); an index of expressions is left to the migration tests.
    found = {(tuple(index["column_names"]), bool(index["unique"])) for index in stored}
    for index in table.indexes:
        names = tuple(column.name for column in index.columns)
        if len(names) == len(index.expressions) and (names, bool(index.unique)) not in found:
            unique = "unique index" if index.unique else "index"
            yield f"{unique} {index.name} on {table.fullname}({', '.join(names)}) is missing"


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """Yield a session for one request; whatever it did not commit is rolled back.

    A session is SQLAlchemy's ORM, for writes that need it (``session.add``, relationships);
    ``WritesDep`` sends statements faster. On SQLite, a session's transaction holds the
    database's write lock from its first statement to its end. Read through ``ReadsDep``.
    """
    breaker: DatabaseBreaker = request.app.state.breaker
    breaker.refuse_if_down()  # before the pool, where a request may wait for a connection
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session:
        yield session


async def get_reads(request: Request) -> "Reads":
    """The reads: each statement runs on a pooled connection in AUTOCOMMIT mode.

    A read needs no transaction of its own: under PostgreSQL's READ COMMITTED every
    statement sees its own snapshot anyway, and skipping BEGIN and ROLLBACK saves two
    round trips per request. Send with ``await reads.all(statement, parameters)``.
    """
    breaker: DatabaseBreaker = request.app.state.breaker
    breaker.refuse_if_down()  # before the pool, where a request may wait for a connection
    return cast(Reads, request.app.state.reads)


async def get_writes(request: Request) -> AsyncIterator["Transaction"]:
    """A write's transaction, on the driver like the reads: send with ``await
    writes.all(statement, parameters)``, then ``await writes.commit()``. Whatever it did not
    commit when the request ends is rolled back.
    """
    breaker: DatabaseBreaker = request.app.state.breaker
    breaker.refuse_if_down()  # before the pool, where a request may wait for a connection
    async with Transaction(request.app.state.reads) as writes:
        yield writes


@asynccontextmanager
async def open_database(app: FastAPI, settings: DatabaseSettings) -> AsyncIterator[None]:
    """Keep the engine, the write sessions, the reads, the readiness check and the
    breaker on ``app.state`` for the app's life; refuse to start on a database behind the
    migrations.
    """
    engine = create_engine(settings)
    app.state.engine = engine
    app.state.sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    app.state.readiness = ReadinessCheck(autocommit, settings.database_ready_timeout)
    app.state.breaker = DatabaseBreaker(engine)
    app.state.reads = Reads(autocommit, app.state.breaker)
    try:
        # The schema is the migrations' business (alembic upgrade head); start-up only
        # checks that the database is not behind them, nor its tables the models'.
        await check_schema(autocommit)
        yield
    finally:
        await app.state.breaker.close()
        await engine.dispose()


def install_database(app: FastAPI) -> None:
    """Answer ``DatabaseUnavailable`` with the kit's 503, and serve ``GET /ready``."""
    app.add_exception_handler(DatabaseUnavailable, _database_unavailable)
    endpoint = access(PUBLIC)(query_budget(1)(ready))
    app.add_api_route("/ready", endpoint, responses=error_responses(503))


async def ready(request: Request) -> dict[str, str]:
    """Answer 200 while the database answers a query, 503 while it does not.

    The readiness probe: an orchestrator sends this instance traffic only while it is ready.
    Unlike /health, it touches the database (one statement, shared by the probes that
    arrive meanwhile, within ``DATABASE_READY_TIMEOUT``); like it, the guard lets it through.
    """
    readiness: ReadinessCheck = request.app.state.readiness
    await readiness.confirm()
    return {"status": "ready"}


class _Throttle:
    # At most one event per interval: an outage fails every request at once, and a log
    # line for each would pile onto it.
    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last = float("-inf")

    def allow(self) -> bool:
        now = time.monotonic()
        if now - self._last < self.interval:
            return False
        self._last = now
        return True


_unavailable_warnings = _Throttle(1.0)


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    if _unavailable_warnings.allow():
        logger.warning("database unavailable, answering 503: %s", exc)
    return unavailable_response()


# --- Query budgets ----------------------------------------------------------------------


@dataclass(slots=True)
class CapturedQuery:
    """One statement sent to the database, with where it came from."""

    statement: str
    parameters: Any
    call_site: str | None = None
    duration: float = 0.0


@dataclass(slots=True)
class QueryRecorder:
    """The statements a block of code sent to the database, in order."""

    call_sites: bool = False
    queries: list[CapturedQuery] = field(default_factory=list)

    @property
    def count(self) -> int:
        """How many statements were sent."""
        return len(self.queries)

    @property
    def duration(self) -> float:
        """Seconds spent in the database driver, summed over the statements."""
        return sum(query.duration for query in self.queries)

    def report(self) -> str:
        """The statements, numbered, then the ones sent more than once: the usual N+1."""
        lines = []
        for number, query in enumerate(self.queries, 1):
            site = f"\n       at {query.call_site}" if query.call_site else ""
            lines.append(f"{number:3}. {_one_line(query.statement)}{site}")
        repeated = Counter(_one_line(query.statement) for query in self.queries)
        for statement, times in repeated.most_common():
            if times > 1:
                lines.append(f"repeated: {times} x {statement}")
        return "\n".join(lines)


class QueryCountError(AssertionError):
    """A block of code sent a different number of statements than expected."""


_recorders: ContextVar[tuple[QueryRecorder, ...]] = ContextVar("_recorders", default=())


@contextmanager
def record_queries(*, call_sites: bool = False) -> Iterator[QueryRecorder]:
    """Record every statement sent inside the block, in this task and the tasks it starts.

    Recorders nest: a test's recorder sees the statements of the requests it makes, while
    each request's own recorder feeds its ``Server-Timing`` header.
    """
    recorder = QueryRecorder(call_sites=call_sites)
    token = _recorders.set((*_recorders.get(), recorder))
    try:
        yield recorder
    finally:
        _recorders.reset(token)


@contextmanager
def expect_queries(expected: int) -> Iterator[QueryRecorder]:
    """Fail with the captured statements unless the block sends exactly ``expected``."""
    with record_queries(call_sites=True) as recorder:
        yield recorder
    if recorder.count != expected:
        raise QueryCountError(
            f"expected {_queries(expected)}, {recorder.count} were sent:\n{recorder.report()}"
        )


def count_queries(engine: Engine) -> None:
    """Feed every statement ``engine`` sends to the recorders active where it was sent.

    Counting at the cursor sees every read path (lazy loads, flushes, raw SQL) that
    helper-level counting would miss. SAVEPOINT statements are left out: they are the
    scaffolding of nested transactions, not the work of the code under test. So is the
    cache's invalidation notice (see ``AsyncTTLCache.invalidate_on_commit``).
    """
    event.listen(engine, "before_cursor_execute", _before_cursor_execute)
    event.listen(engine, "after_cursor_execute", _after_cursor_execute)
    # A statement that fails never reaches after_cursor_execute: handle_error ends its
    # timing instead, and check-in clears whatever is left, so nothing a failed statement
    # captured (its parameters are user input) outlives the connection's checkout.
    event.listen(engine, "handle_error", _statement_failed)
    event.listen(engine, "checkin", _forget_pending)


_PENDING = "_pending_capture"


def _before_cursor_execute(
    conn: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: ExecutionContext | None,
    executemany: bool,
) -> None:
    recorders = _recorders.get()
    if not recorders or statement.lstrip()[:9].upper() in _SAVEPOINT_PREFIXES:
        return
    if context is not None and context.execution_options.get("kit_notice"):
        return
    site = _call_site() if any(recorder.call_sites for recorder in recorders) else None
    query = CapturedQuery(statement, parameters, site)
    for recorder in recorders:
        recorder.queries.append(query)
    # One statement at a time runs on a connection: one pending capture at most.
    conn.info[_PENDING] = (query, time.perf_counter())


def _after_cursor_execute(
    conn: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: ExecutionContext | None,
    executemany: bool,
) -> None:
    _end_timing(conn.info)


def _statement_failed(context: ExceptionContext) -> None:
    if context.connection is not None:
        _end_timing(context.connection.info)


def _forget_pending(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
    record.info.pop(_PENDING, None)


def _end_timing(info: dict[Any, Any]) -> None:
    pending: tuple[CapturedQuery, float] | None = info.pop(_PENDING, None)
    if pending is not None:
        query, started = pending
        query.duration = time.perf_counter() - started


_SAVEPOINT_PREFIXES = ("SAVEPOINT", "RELEASE S", "ROLLBACK ")
_KIT_GLOBALS = globals()
_DRIVER_CLASSES = ("Reads.", "DriverConnection.", "Transaction.")
_LIBRARY_PATHS = tuple({sysconfig.get_paths()[key] for key in ("stdlib", "purelib", "platlib")})


def _call_site() -> str | None:
    # SQLAlchemy's driver runs in a greenlet of its own; the code that awaited the query is
    # in the parent greenlet's frames, so continue the walk there. The driver path's own
    # frames are the kit's, not the caller's.
    frame: FrameType | None = sys._getframe(2)
    parent = greenlet.getcurrent().parent
    while frame is not None:
        code = frame.f_code
        if not code.co_filename.startswith(("<", *_LIBRARY_PATHS)) and not (
            frame.f_globals is _KIT_GLOBALS and code.co_qualname.startswith(_DRIVER_CLASSES)
        ):
            return f"{code.co_filename}:{frame.f_lineno} in {code.co_name}"
        frame = frame.f_back
        if frame is None and parent is not None:
            frame, parent = parent.gr_frame, None
    return None


def _one_line(statement: str) -> str:
    return " ".join(statement.split())


_Endpoint = TypeVar("_Endpoint", bound=Callable[..., Any])
_budgets: dict[Callable[..., Any], int] = {}


def budget_of(endpoint: Callable[..., Any]) -> int | None:
    """The query budget declared for ``endpoint``, or None."""
    return _budgets.get(endpoint)


# --- Statements on the driver -----------------------------------------------------------
# Reads (ReadsDep) and writes (WritesDep) run on the driver's own connection (asyncpg's,
# aiosqlite's), as a hand-written service would run them: each statement built once with
# SQLModel/SQLAlchemy (the models stay the schema), compiled once per dialect, and sent
# without SQLAlchemy's per-statement execution (its execution context, Result and cursor
# adapter took 36-46% of a read's time on PostgreSQL). The pool, its deadlines and the
# breaker are the engine's; the recorders, budgets and Server-Timing see each statement as
# they see SQLAlchemy's, and its failures are DatabaseUnavailable and IntegrityError as
# there.


class Reads:
    """The reads (``ReadsDep``): each statement on a pooled connection, in AUTOCOMMIT mode.

    ``await reads.all(statement, {"id": 1})`` answers every row, ``first`` the first or
    None, ``scalar`` the first column of the first row or None; ``async with
    reads.connection() as connection`` sends several on one connection. Rows are sequences:
    unpack them, index them, or build answers with ``RowAnswer``. Parameters are the
    statement's bindparams by name; a list of ids goes through ``any_of``.

    ``reads.connect()`` is SQLAlchemy's connection, for what the driver path does not run
    (ORM queries, ``run_sync``); its statements are counted as well.
    """

    def __init__(self, engine: AsyncEngine, breaker: "DatabaseBreaker") -> None:
        self.engine = engine
        self.breaker = breaker
        self.dialect = engine.dialect
        self._pool = engine.sync_engine.pool
        self._plans: LRUCache[Hashable, tuple[Any, _Plan]] = LRUCache(maxsize=1000)

    def connect(self) -> AsyncConnection:
        """SQLAlchemy's AUTOCOMMIT connection: ``async with reads.connect() as connection``."""
        return self.engine.connect()

    def connection(self) -> "DriverConnection":
        """One pooled connection for several statements, until the block ends."""
        return DriverConnection(self)

    async def all(
        self, statement: sa.Executable, parameters: Mapping[str, Any] | None = None
    ) -> list[Sequence[Any]]:
        """Every row ``statement`` answers."""
        async with DriverConnection(self) as connection:
            return await connection.all(statement, parameters)

    async def first(
        self, statement: sa.Executable, parameters: Mapping[str, Any] | None = None
    ) -> Sequence[Any] | None:
        """The first row ``statement`` answers, or None."""
        async with DriverConnection(self) as connection:
            return await connection.first(statement, parameters)

    async def scalar(
        self, statement: sa.Executable, parameters: Mapping[str, Any] | None = None
    ) -> Any:
        """The first column of the first row ``statement`` answers, or None."""
        async with DriverConnection(self) as connection:
            return await connection.scalar(statement, parameters)

    def plan(self, statement: sa.Executable, parameters: Mapping[str, Any]) -> "_Plan":
        """``statement`` compiled for this database, once (per set of columns, for an
        INSERT or UPDATE that takes its columns from its parameters).
        """
        dml = isinstance(statement, sa.Insert | sa.Update)
        key: Hashable = (id(statement), frozenset(parameters)) if dml else id(statement)
        cached = self._plans.get(key)
        # Keyed by identity, and the statement kept alive with its plan: its id is not
        # reused while the entry lives.
        if cached is not None and cached[0] is statement:
            return cached[1]
        plan = _Plan.of(statement, self.dialect, list(parameters) if dml else None)
        self._plans[key] = (statement, plan)
        return plan


class DriverConnection:
    """A pooled connection on the driver: ``all``, ``first``, ``scalar`` and ``execute``."""

    __slots__ = ("_pooled", "_reads")

    def __init__(self, reads: Reads) -> None:
        self._reads = reads
        self._pooled: PoolProxiedConnection | None = None

    async def __aenter__(self) -> Self:
        self._pooled = await self._checkout()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._checkin()

    async def all(
        self,
        statement: sa.Executable,
        parameters: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Sequence[Any]]:
        """Every row ``statement`` answers. An INSERT takes a list of rows, sent as one
        statement of many VALUES rows (as many as the database takes at once, for a long
        list), and answers what each RETURNING row says, in the order sent.
        """
        if isinstance(parameters, Sequence):
            if not isinstance(statement, sa.Insert):
                raise TypeError("only an INSERT takes a list of rows; send others one by one")
            if not parameters:
                return []
            plan = self._reads.plan(statement, parameters[0])
            rows: list[Sequence[Any]] = []
            step = plan.rows_per_statement
            for start in range(0, len(parameters), step):
                batch = parameters[start : start + step]
                arguments = [value for row in batch for value in plan.bind(row)[1]]
                rows += plan.rows(await self._send(plan.with_rows(len(batch)), arguments))
            return rows
        given = parameters or {}
        plan = self._reads.plan(statement, given)
        return plan.rows(await self._send(*plan.bind(given)))

    async def first(
        self, statement: sa.Executable, parameters: Mapping[str, Any] | None = None
    ) -> Sequence[Any] | None:
        """The first row ``statement`` answers, or None."""
        rows = await self.all(statement, parameters)
        return rows[0] if rows else None

    async def scalar(
        self, statement: sa.Executable, parameters: Mapping[str, Any] | None = None
    ) -> Any:
        """The first column of the first row ``statement`` answers, or None."""
        rows = await self.all(statement, parameters)
        return rows[0][0] if rows else None

    async def execute(
        self, statement: sa.Executable, parameters: Sequence[Mapping[str, Any]]
    ) -> None:
        """Send ``statement`` once per parameter set, as one statement (executemany)."""
        if not parameters:
            return
        plan = self._reads.plan(statement, parameters[0])
        await self._send(plan.sql, [plan.bind(each)[1] for each in parameters], many=True)

    async def _checkout(self) -> PoolProxiedConnection:
        # The pool's own checkout: its deadline, pre-ping and the breaker's refusal.
        return await greenlet_spawn(self._reads._pool.connect)

    async def _checkin(self) -> None:
        pooled, self._pooled = self._pooled, None
        if pooled is not None:
            await _give_back(pooled)

    async def _connection(self) -> PoolProxiedConnection:
        if self._pooled is None:
            raise RuntimeError("send statements inside `async with reads.connection()`")
        return self._pooled

    async def _send(
        self, sql: str, arguments: list[Any], many: bool = False
    ) -> list[Sequence[Any]]:
        pooled = await self._connection()
        recorders = _recorders.get()
        query = None
        started = 0.0
        if recorders:
            site = _call_site() if any(recorder.call_sites for recorder in recorders) else None
            query = CapturedQuery(sql, arguments, site)
            for recorder in recorders:
                recorder.queries.append(query)
            started = time.perf_counter()
        try:
            return await self._run(pooled, sql, arguments, many)
        finally:
            if query is not None:
                query.duration = time.perf_counter() - started

    async def _run(
        self, pooled: PoolProxiedConnection, sql: str, arguments: list[Any], many: bool = False
    ) -> list[Sequence[Any]]:
        # The statement on the driver, its failure made what SQLAlchemy's would be.
        try:
            return await _on_driver(pooled, sql, arguments, many)
        except Exception as exc:
            raise self._failure(pooled, exc, sql, arguments) from exc
        except BaseException:
            await _abandon(pooled)
            raise

    def _failure(
        self, pooled: PoolProxiedConnection, error: Exception, sql: str, arguments: Any
    ) -> Exception:
        # What SQLAlchemy and the kit's listeners would make of the driver's error.
        reads = self._reads
        dbapi_connection = cast(DBAPIConnection, pooled.dbapi_connection)
        disconnect = reads.dialect.is_disconnect(cast(Any, error), dbapi_connection, None)
        if isinstance(error, TimeoutError):
            # As SQLAlchemy does for a listener's invalidate_pool_on_disconnect (see
            # _unavailable_on_failure): every pooled connection is replaced.
            reads._pool._invalidate(pooled, error)
        elif disconnect:
            pooled.invalidate(error)
        reads.breaker.statement_failed(error)
        unavailable = _unavailable(error, disconnect=disconnect)
        if unavailable is not None:
            return unavailable
        if _integrity_error(error):
            return IntegrityError(sql, arguments, error)
        return error


class Transaction(DriverConnection):
    """A write (``WritesDep``): its statements on one connection, in one transaction, which
    begins with the first and ends with ``await writes.commit()``. What is not committed
    when the request ends is rolled back.

    Concurrent writers of a row take turns as they would through a session: on PostgreSQL
    the row's lock, taken by the statement that changes it, is held until the commit; on
    SQLite the transaction takes the database's write lock as it begins.
    """

    __slots__ = ("info",)

    def __init__(self, reads: Reads) -> None:
        super().__init__(reads)
        # What commits here must do once it did: the cache's invalidations.
        self.info: dict[str, Any] = {}

    async def __aenter__(self) -> Self:
        return self  # the connection comes with the first statement

    async def __aexit__(self, *exc_info: object) -> None:
        # Rolled back or never committed: nothing is dropped from the cache.
        self.info.pop(_PENDING_INVALIDATIONS, None)
        try:
            await self._end("ROLLBACK")
        except Exception:
            logger.warning("a write's rollback failed; its connection is closed", exc_info=True)
        finally:
            await self._checkin()

    async def commit(self) -> None:
        """Commit, give the connection back, then drop the cache entries the write named
        (``invalidate_on_commit``) here and, once told, in every other process.
        """
        await self._end("COMMIT")
        await self._checkin()
        sent = _invalidate_committed(self.info, self._reads.engine.sync_engine)
        if sent is not None:
            # Acknowledged once the other processes were told; shielded, as with a session.
            started = time.perf_counter()
            await asyncio.shield(sent)
            note_timing("notify", time.perf_counter() - started)

    async def _connection(self) -> PoolProxiedConnection:
        if self._pooled is None:
            pooled = await self._checkout()
            # SQLite's write lock as the transaction begins (see _begin_immediate).
            begin = "BEGIN" if self._reads.dialect.name == "postgresql" else "BEGIN IMMEDIATE"
            try:
                await self._run(pooled, begin, [])
            except BaseException:
                await _give_back(pooled)
                raise
            self._pooled = pooled
        return self._pooled

    async def _end(self, how: str) -> None:
        # BEGIN, COMMIT and ROLLBACK are not counted, as SQLAlchemy's are not. Not sent on
        # a connection lost meanwhile: its transaction ended with it.
        pooled = self._pooled
        if pooled is None or not pooled.is_valid:
            return
        try:
            await self._run(pooled, how, [])
        except Exception as exc:
            if pooled.is_valid:
                # A connection that cannot say where its transaction stands is not reused.
                pooled.invalidate(exc)
            raise


async def _on_driver(
    pooled: PoolProxiedConnection, sql: str, arguments: list[Any], many: bool
) -> list[Sequence[Any]]:
    driver = pooled.driver_connection
    if isinstance(driver, asyncpg.Connection):
        if many:
            await driver.executemany(sql, arguments)
            return []
        return cast(list[Sequence[Any]], await driver.fetch(sql, *arguments))
    sqlite = cast(aiosqlite.Connection, driver)
    if many:
        await (await sqlite.executemany(sql, arguments)).close()
        return []
    return list(await sqlite.execute_fetchall(sql, arguments))


async def _abandon(pooled: PoolProxiedConnection) -> None:
    # A statement cancelled midway (its client gone, its deadline passed). asyncpg cancels it
    # on the server, and its connection waits for that before the next statement; SQLite's
    # would run on to its end in aiosqlite's thread, holding the connection and the request
    # that gives it back, so it is interrupted there.
    driver = pooled.driver_connection
    if isinstance(driver, aiosqlite.Connection):
        await driver.interrupt()


async def _give_back(pooled: PoolProxiedConnection) -> None:
    if pooled.is_valid:
        # In a greenlet: the pool's reset may roll back, which awaits on SQLite.
        await greenlet_spawn(pooled.close)
    else:
        pooled.close()  # closed already: nothing to reset


_NUMBERED = re.compile(r"\$(\d+)")


def _renumbered(row: str, by: int) -> str:
    return _NUMBERED.sub(lambda number: f"${int(number[1]) + by}", row) if by else row


def _closing_parenthesis(sql: str, opening: int) -> int:
    depth = 0
    for place in range(opening, len(sql)):
        depth += {"(": 1, ")": -1}.get(sql[place], 0)
        if depth == 0:
            return place
    raise ValueError(f"no closing parenthesis in: {sql}")


def _integrity_error(error: Exception) -> bool:
    # A constraint refused the statement: SQLSTATE class 23, or SQLite's IntegrityError.
    return isinstance(error, sqlite3.IntegrityError) or str(
        getattr(error, "sqlstate", "")
    ).startswith("23")


@dataclass(frozen=True, slots=True)
class _Plan:
    """A statement compiled for one database: its SQL, and how its parameters and rows
    are converted on their way to and from the driver.
    """

    compiled: SQLCompiler
    sql: str
    names: tuple[str, ...]
    # Each parameter's bind processor (the type's conversion for the driver), if any.
    processors: tuple[Callable[[Any], Any] | None, ...]
    # Values the statement holds itself (a literal compared to, a Python-side default), and
    # those Python computes for each execution (a default's function).
    fixed: Mapping[str, Any]
    computed: Mapping[str, Callable[[], Any]]
    # The columns whose type converts the driver's value (SQLite's timestamps, say), by place.
    results: tuple[tuple[int, Callable[[Any], Any]], ...]
    # SQLite has no arrays: a list is expanded into the SQL at each execution.
    expanding: bool
    # An INSERT's SQL for as many VALUES rows as it was last sent with.
    _with_rows: dict[int, str] = field(default_factory=dict)

    @classmethod
    def of(cls, statement: sa.Executable, dialect: Dialect, columns: list[str] | None) -> Self:
        clause = cast(sa.ClauseElement, statement)
        compiled = cast(SQLCompiler, clause.compile(dialect=dialect, column_keys=columns))
        names = tuple(compiled.positiontup or ())
        fixed: dict[str, Any] = {}
        computed: dict[str, Callable[[], Any]] = {}
        for name, bind in compiled.binds.items():
            if bind.callable is not None:
                computed[name] = bind.callable
            elif not bind.required:
                fixed[name] = bind.value
        # The columns an INSERT or UPDATE leaves out whose default (onupdate) Python gives:
        # a value, or a function SQLAlchemy calls with its execution context, here None.
        prefetched = [(column, column.default) for column in compiled.insert_prefetch]
        prefetched += [(column, column.onupdate) for column in compiled.update_prefetch]
        for column, default in prefetched:
            given = cast(Any, default).arg
            if cast(Any, default).is_callable:
                fixed.pop(column.key, None)
                computed[column.key] = functools.partial(given, None)
            else:
                fixed[column.key] = given
        processors = tuple(
            compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in names
        )
        exported = getattr(statement, "exported_columns", None)
        converters = (
            (place, column.type.dialect_impl(dialect).result_processor(dialect, None))
            for place, column in enumerate(exported or ())
        )
        return cls(
            compiled,
            compiled.string,
            names,
            processors,
            MappingProxyType(fixed),
            MappingProxyType(computed),
            tuple((place, convert) for place, convert in converters if convert is not None),
            any(bind.expanding for bind in compiled.binds.values()),
        )

    @property
    def rows_per_statement(self) -> int:
        """How many rows one INSERT sends: a thousand, as SQLAlchemy sends them, within both
        databases' limit on a statement's parameters (32,767 on PostgreSQL; SQLite's is
        close).
        """
        return max(1, min(1000, 30_000 // max(1, len(self.names))))

    def with_rows(self, count: int) -> str:
        """This INSERT's SQL with ``count`` rows of VALUES, each taking its parameters in
        turn after the row before it.
        """
        sql = self._with_rows.get(count)
        if sql is None:
            start = self.sql.index(" VALUES (") + len(" VALUES ")
            end = _closing_parenthesis(self.sql, start)
            row = self.sql[start : end + 1]
            numbered = _NUMBERED.findall(row)
            if self.expanding or len(numbered or row.split("?")[1:]) != len(self.names):
                raise TypeError(f"an INSERT of many rows takes VALUES parameters only: {self.sql}")
            # $1, $2, ... numbered on, row after row; SQLite's ? are in order already.
            width = len(self.names)
            rows = [_renumbered(row, index * width) for index in range(count)]
            sql = self.sql[:start] + ", ".join(rows) + self.sql[end + 1 :]
            if len(self._with_rows) >= 8:
                self._with_rows.clear()  # a few counts recur; any count is cheap to build
            self._with_rows[count] = sql
        return sql

    def bind(self, parameters: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """The SQL to send and its positional arguments, converted for the driver."""
        if self.expanding:
            state = self.compiled.construct_expanded_state(dict(parameters), escape_names=False)
            processors = state.processors
            return state.statement, [
                processors[name](state.parameters[name])
                if name in processors
                else state.parameters[name]
                for name in state.positiontup or ()
            ]
        arguments = []
        for name, process in zip(self.names, self.processors, strict=True):
            if name in parameters:
                value = parameters[name]
            elif name in self.fixed:
                value = self.fixed[name]
            elif name in self.computed:
                value = self.computed[name]()
            else:
                raise TypeError(f"no value for the parameter {name!r} of: {self.sql}")
            arguments.append(value if process is None else process(value))
        return self.sql, arguments

    def rows(self, rows: list[Sequence[Any]]) -> list[Sequence[Any]]:
        """The driver's rows, with the columns' types applied where they convert."""
        if not self.results:
            return rows
        converted: list[Sequence[Any]] = []
        for row in rows:
            values = list(row)
            for place, convert in self.results:
                values[place] = convert(values[place])
            converted.append(values)
        return converted


# --- Server-Timing ----------------------------------------------------------------------
# What a request spent where, visible in any browser's network panel.

_timings: ContextVar[list[str] | None] = ContextVar("_timings", default=None)


def note_timing(name: str, seconds: float | None = None, *, description: str = "") -> None:
    """Add a metric to the ``Server-Timing`` header of the response being served."""
    timings = _timings.get()
    if timings is not None:
        duration = f";dur={seconds * 1000:.2f}" if seconds is not None else ""
        detail = f';desc="{description}"' if description else ""
        timings.append(f"{name}{duration}{detail}")


def _queries(count: int) -> str:
    return "1 query" if count == 1 else f"{count} queries"


# --- Request log ------------------------------------------------------------------------
# Requests are named by their route template (/items/{item_id}), never by their raw
# path: a label or field per distinct URL would grow without bound.


class RequestLogSettings(PartSettings):
    """How requests are logged, and when one counts as slow."""

    # At most the longest a statement may run (DATABASE_STATEMENT_TIMEOUT's ceiling).
    slow_request_ms: float = Field(default=500.0, ge=0, le=600_000)
    log_format: Literal["plain", "json"] = "plain"


_request_log = logging.getLogger(f"{logger.name}.requests")
_request_ids: ContextVar[str | None] = ContextVar("_request_ids", default=None)
# Ids from clients and proxies (UUIDs, trace ids) fit this; anything else, too long or
# able to forge a log line, is replaced by an id of our own.
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_UNMATCHED_ROUTE = "unmatched"


def _printable(text: str) -> str:
    # A path comes from the client, percent-decoded: "%0D%0A" in it would end the log line
    # and let the client write one of its own. Control characters are escaped instead.
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _note_request_id(record: logging.LogRecord) -> bool:
    # Runs as the line is logged, inside the request: a handler may format it later.
    record.request_id = _request_ids.get()
    return True


logger.addFilter(_note_request_id)


class RequestObserver:
    """Observes each request once for all the kit reports of it: its id, its
    ``Server-Timing`` header (database time and query count, cache, queue, offload), its
    duration in the request histogram, one log line, and a warning when it went over its
    query budget or took longer than ``slow_request``.

    The request id comes from the ``X-Request-ID`` header when it is a short token of
    safe characters, else it is made here; the response carries it back.

    An exception the app did not handle is logged here with its traceback and the request
    id, and answered as every error is: a JSON 500 carrying the id (never the exception's
    text, which may hold data), with both headers. If the response had started, the
    exception goes on to the server, which closes the connection: the client gets a
    cut-off response, and the log line says why.
    """

    def __init__(self, app: ASGIApp, durations: Histogram, slow_request: float) -> None:
        self.app = app
        self.durations = durations
        self.slow_request = slow_request
        self._series: dict[tuple[str, str, str], Any] = {}
        self._paths: dict[Callable[..., Any], str] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope["headers"])
        timings: list[str] = []
        status_code = 500  # what the client gets if the app fails before it answers
        started_response = completed_response = send_failed = False
        sent_before_body: int | None = None
        id_token = _request_ids.set(request_id)
        timings_token = _timings.set(timings)
        with record_queries() as recorder:

            async def send_observed(message: Message) -> None:
                nonlocal status_code, started_response, completed_response, send_failed
                nonlocal sent_before_body
                if message["type"] == "http.response.body":
                    completed_response = not message.get("more_body", False)
                elif message["type"] == "http.response.start":
                    started_response = True
                    status_code = message["status"]
                    sent_before_body = recorder.count
                    queries = _queries(recorder.count)
                    metrics = [f'db;dur={recorder.duration * 1000:.2f};desc="{queries}"', *timings]
                    if "queue_wait" in scope:
                        metrics.append(f"queue;dur={scope['queue_wait'] * 1000:.2f}")
                    message = {
                        **message,
                        "headers": [
                            *message.get("headers", []),
                            (b"x-request-id", request_id.encode()),
                            (b"server-timing", ", ".join(metrics).encode()),
                        ],
                    }
                try:
                    await send(message)
                except Exception:
                    send_failed = True
                    raise

            try:
                await self.app(scope, receive, send_observed)
            except Exception:
                # One that send raised (the client not reading, as SendDeadline says) is the
                # outer middleware's to handle.
                if send_failed:
                    raise
                logger.exception(
                    "%s %s failed, request %s",
                    scope["method"],
                    _printable(scope["path"]),
                    request_id,
                )
                # Answered here, so Starlette's ServerErrorMiddleware neither answers its
                # plain-text 500 nor logs the traceback a second time. A response cut off
                # midway is raised on, for the server to close its connection.
                if not started_response:
                    await _send_server_error(send_observed, request_id)
                elif not completed_response:
                    raise
            finally:
                _timings.reset(timings_token)
                elapsed = time.perf_counter() - started
                # Budgets count what was sent before the answer: a statement after it (a
                # background task's) is not the route's.
                sent = recorder.count if sent_before_body is None else sent_before_body
                self._warn_if_over(scope, recorder, sent, elapsed)
                _request_ids.reset(id_token)
                self._record(scope, status_code, elapsed, recorder, request_id)

    def _warn_if_over(
        self, scope: Scope, recorder: QueryRecorder, sent: int, elapsed: float
    ) -> None:
        endpoint = scope.get("endpoint")
        budget = budget_of(endpoint) if endpoint is not None else None
        if budget is not None and sent > budget:
            logger.warning(
                "%s %s sent %s, over its budget of %d:\n%s",
                scope["method"],
                _printable(scope["path"]),
                _queries(sent),
                budget,
                recorder.report(),
            )
        if elapsed > self.slow_request:
            logger.warning(
                "slow request: %s %s took %.0f ms, %s in %.0f ms",
                scope["method"],
                _printable(scope["path"]),
                elapsed * 1000,
                _queries(recorder.count),
                recorder.duration * 1000,
            )

    def _record(
        self,
        scope: Scope,
        status_code: int,
        elapsed: float,
        recorder: QueryRecorder,
        request_id: str,
    ) -> None:
        route = self._route_template(scope)
        # Clients may send any method name; only the standard ones become label values.
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        key = (method, route, str(status_code))
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self.durations.labels(*key)
        series.observe(elapsed)
        if _request_log.isEnabledFor(logging.INFO):
            _request_log.info(
                "%s %s %d %.1f ms, %s, request %s",
                method,
                route,
                status_code,
                elapsed * 1000,
                _queries(recorder.count),
                request_id,
                extra={
                    "request": {
                        "method": method,
                        "route": route,
                        "status": status_code,
                        "duration_ms": round(elapsed * 1000, 3),
                        "queries": recorder.count,
                        "request_id": request_id,
                    }
                },
            )

    def _route_template(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is not None:
            return cast(str, route.path)
        # FastAPI names the route of its own endpoints only; plain Starlette routes (the
        # docs, /openapi.json) leave just their endpoint, whose path the app's routes know.
        endpoint = scope.get("endpoint")
        if endpoint is None:
            return _UNMATCHED_ROUTE
        if endpoint not in self._paths:
            for candidate in scope["app"].routes:
                if isinstance(candidate, Route):
                    self._paths.setdefault(candidate.endpoint, candidate.path)
        return self._paths.get(endpoint, _UNMATCHED_ROUTE)


async def _send_server_error(send: Send, request_id: str) -> None:
    body = to_json(
        {
            "detail": "the service failed to answer; its log tells why under this request_id",
            "request_id": request_id,
        }
    )
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def request_observer(app: FastAPI, settings: RequestLogSettings) -> list[Middleware]:
    """Log to stderr, and observe every request (``RequestObserver``)."""
    configure_logging(settings.log_format)
    durations = Histogram(
        "http_request_duration_seconds",
        "Time to serve a request, by method, route template and status",
        ["method", "route", "status"],
        registry=app.state.metrics,
    )
    slow_request = settings.slow_request_ms / 1000
    return [Middleware(RequestObserver, durations=durations, slow_request=slow_request)]


def _request_id(headers: Sequence[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"x-request-id":
            if _VALID_REQUEST_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return secrets.token_hex(16)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, for log collectors: time, level, logger, message, and
    the request's fields (method, route, status, duration_ms, queries, request_id).
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        # A request's own line carries all its fields; any other line, the id of its request.
        request = getattr(record, "request", None)
        entry.update(request or {"request_id": getattr(record, "request_id", None)})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return to_json(entry).decode()


class _StderrHandler(logging.Handler):
    # Writes to whatever sys.stderr is when a line is logged, not when the handler was made,
    # so that a test runner's capture of stderr sees the lines.
    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


_log_handler = _StderrHandler()


def configure_logging(log_format: Literal["plain", "json"]) -> None:
    """Send the service's log lines, one per request among them, to stderr."""
    _log_handler.setFormatter(
        JsonLogFormatter()
        if log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    if _log_handler not in logger.handlers:
        logger.addHandler(_log_handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


# --- Capacity ---------------------------------------------------------------------------
# One answer for "no capacity now", whichever part ran out.


class Overloaded(Exception):
    """The service cannot take this work in time; the client should retry a little later."""


_OVERLOADED_BODY = b'{"detail":"the service is overloaded; retry after the delay in Retry-After"}'
# Rejected clients are told to come back after 1, 2 or 3 seconds, at random, so that they do
# not all return at the same instant and overload the service again. The connection is
# closed: a client that retries at once, ignoring Retry-After, pays for a new connection
# each time instead of turning the service's event loop into a rejection loop.
_OVERLOADED_HEADERS = [
    [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_OVERLOADED_BODY)).encode()),
        (b"retry-after", str(seconds).encode()),
        (b"cache-control", b"no-store"),
        (b"connection", b"close"),
    ]
    for seconds in (1, 2, 3)
]


async def send_overloaded(send: Send) -> None:
    """Answer 503 with Retry-After, without reading the request."""
    headers = random.choice(_OVERLOADED_HEADERS)
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": _OVERLOADED_BODY})


def overloaded_response() -> Response:
    """The same 503 as a response, for exception handlers."""
    headers = random.choice(_OVERLOADED_HEADERS)
    return Response(
        _OVERLOADED_BODY, 503, {name.decode(): value.decode() for name, value in headers}
    )


_UNAVAILABLE_BODY = (
    b'{"detail":"the database is unavailable; retry after the delay in Retry-After"}'
)


def unavailable_response(body: bytes = _UNAVAILABLE_BODY) -> Response:
    """The 503 of a part that cannot answer now (by default the database's,
    ``DatabaseUnavailable``): the overload's headers, so clients retry it the same way, with
    a body that says why.
    """
    headers = random.choice(_OVERLOADED_HEADERS)
    return Response(
        body,
        503,
        {name.decode(): value.decode() for name, value in headers if name != b"content-length"},
    )


def install_capacity(app: FastAPI) -> None:
    """Answer every "no capacity now" with the same 503, whichever part ran out: the
    guard's line, the offload pool's line, or the wait for a database connection.
    """
    app.add_exception_handler(Overloaded, _overloaded)
    app.add_exception_handler(PoolTimeoutError, _overloaded)


async def _overloaded(request: Request, exc: Exception) -> Response:
    return overloaded_response()


# --- TTL cache --------------------------------------------------------------------------


class CacheSettings(PartSettings):
    """The cache's size and lifetimes, and how invalidations reach other processes."""

    # At most a day, and ten million entries per worker (each a serialized response).
    cache_ttl_seconds: float = Field(default=30, gt=0, le=86_400)
    cache_max_entries: int = Field(default=1024, ge=1, le=10_000_000)
    cache_notify: bool = True
    cache_channel: str = "my_service_cache"

    @field_validator("cache_channel")
    @classmethod
    def _channel_name(cls, value: str) -> str:
        # LISTEN takes an identifier, which PostgreSQL cuts at 63 bytes.
        if not (value.isascii() and value.isidentifier() and len(value) <= 63):
            raise ValueError("want at most 63 letters, digits and underscores, like my_cache")
        return value


@dataclass(slots=True)
class CacheStats:
    """What the cache did since the app started."""

    hits: int = counter_field("Lookups answered from the cache")
    misses: int = counter_field("Lookups the cache did not hold")
    loads: int = counter_field("Loads started for missing keys")
    coalesced: int = counter_field(
        "Misses that waited for a load already under way instead of starting one"
    )
    load_errors: int = counter_field("Loads that failed (never stored)")
    bypassed: int = counter_field(
        "Lookups sent straight to the database while invalidations could be missed"
    )
    notifications_sent: int = counter_field(
        "Invalidation notices sent to other processes, one per committed transaction"
    )
    invalidations_sent: int = counter_field("Keys named in the invalidation notices sent")
    notification_failures: int = counter_field("Invalidation notices that could not be sent")
    notifications_received: int = counter_field(
        "Invalidation notices received from other processes"
    )
    listener_reconnects: int = counter_field(
        "Times the invalidation listener connected again, clearing the cache"
    )
    listener_silences: int = counter_field(
        "Times the invalidation listener's connection stopped answering its heartbeat"
    )


@dataclass(slots=True)
class _Entry:
    generation: int
    value: Any


@dataclass(slots=True)
class _Loading:
    generation: int
    task: "asyncio.Task[Any]"


class AsyncTTLCache:
    """An in-memory cache for async loaders: bounded, expiring, one load per key at a time.

    Keys live in namespaces ("item", 42). Concurrent misses of one key share a single load;
    a failed load is shared with its waiters and never stored. A write calls
    ``invalidate_on_commit`` before it commits, and the key (or a whole namespace) is dropped
    once the commit succeeded; a load that started before that still answers its waiters but
    does not write its value back.

    Each process has its own cache. Given a ``channel`` (PostgreSQL), the invalidations also
    reach every process and instance on the same database, where a ``CacheListener``
    applies them. Without one (SQLite), a write drops its own process's entries only, and
    the TTL bounds how stale the other processes' can be. The cache belongs to the event
    loop's thread; offloaded code must not call it.
    """

    def __init__(
        self,
        max_entries: int,
        ttl: float,
        *,
        jitter: float = 0.1,
        timer: Callable[[], float] = time.monotonic,
        channel: str | None = None,
    ) -> None:
        self.ttl = ttl
        self.jitter = jitter
        self.channel = channel
        # Tells this cache's own notifications apart when they come back on the channel.
        self.origin = secrets.token_hex(8)
        # True while invalidations may be going astray (the listener is not listening):
        # every call then loads, and nothing is stored.
        self.bypass = False
        self.stats = CacheStats()
        # TLRUCache, unlike TTLCache, takes each entry's lifetime from a function: entries
        # get a little jitter, so those written together do not expire together, and a
        # cached "not found" can live shorter than a value.
        self._entries: TLRUCache[tuple[str, Hashable], _Entry, float] = TLRUCache(
            maxsize=max_entries, ttu=self._expires, timer=timer
        )
        self._lifetimes: dict[tuple[str, Hashable], float] = {}
        self._loading: dict[tuple[str, Hashable], _Loading] = {}
        self._generations: dict[str, int] = {}
        self._thread = threading.get_ident()

    def __len__(self) -> int:
        return len(self._entries)

    def collect_metrics(self) -> Iterator[Metric]:
        """The cache's size now, for /metrics beside its counters."""
        yield GaugeMetricFamily("cache_entries", "Entries in the cache now", len(self))

    async def get_or_load(
        self,
        namespace: str,
        key: Hashable,
        load: Callable[[], Awaitable[_Result]],
        *,
        none_ttl: float | None = None,
    ) -> _Result:
        """The cached value of ``(namespace, key)``, calling ``load`` on a miss.

        A None result is cached for ``none_ttl`` seconds if given, else not at all.
        """
        self._check_thread()
        if self.bypass:
            self.stats.bypassed += 1
            note_timing("cache", description="bypass")
            return await load()
        full_key = (namespace, key)
        generation = self._generations.get(namespace, 0)
        entry = self._entries.get(full_key)
        if entry is not None and entry.generation == generation:
            self.stats.hits += 1
            note_timing("cache", description="hit")
            return cast(_Result, entry.value)
        self.stats.misses += 1
        note_timing("cache", description="miss")
        loading = self._loading.get(full_key)
        if loading is not None and loading.generation == generation:
            self.stats.coalesced += 1
        else:
            task = asyncio.create_task(self._load(full_key, generation, load, none_ttl))
            task.add_done_callback(_retrieve_exception)
            loading = self._loading[full_key] = _Loading(generation, task)
        # Shielded: a caller that goes away does not cancel the load the others wait for.
        return cast(_Result, await asyncio.shield(loading.task))

    def cached(
        self, namespace: str, *, none_ttl: float | None = None
    ) -> Callable[[Callable[_Params, Awaitable[_Result]]], Callable[_Params, Awaitable[_Result]]]:
        """Decorate an async function so its results are cached by its arguments."""

        def decorate(
            function: Callable[_Params, Awaitable[_Result]],
        ) -> Callable[_Params, Awaitable[_Result]]:
            @functools.wraps(function)
            async def cached_function(*args: _Params.args, **kwargs: _Params.kwargs) -> _Result:
                key = (args, tuple(sorted(kwargs.items())))
                return await self.get_or_load(
                    namespace, key, lambda: function(*args, **kwargs), none_ttl=none_ttl
                )

            return cached_function

        return decorate

    def invalidate(self, namespace: str, key: Hashable) -> None:
        """Drop one key; call it once the write that made it stale has committed."""
        self._check_thread()
        self._entries.pop((namespace, key), None)
        self._loading.pop((namespace, key), None)

    def invalidate_namespace(self, namespace: str) -> None:
        """Drop every key of ``namespace`` at once, for writes that touch many of them."""
        self._check_thread()
        self._generations[namespace] = self._generations.get(namespace, 0) + 1

    def invalidate_on_commit(
        self, session: "AsyncSession | Transaction", namespace: str, key: Hashable
    ) -> None:
        """Drop ``(namespace, key)`` here and in every listening process once ``session``
        (or a ``Transaction``) commits; if it rolls back, nothing is dropped anywhere.

        Call it before the commit. Keys sent to other processes must be str or int.
        """
        if not isinstance(key, str | int):
            raise TypeError(
                f"invalidate_on_commit() takes str or int keys, which other processes can "
                f"read back; got {type(key).__name__}"
            )
        self._pending(session).keys.add((namespace, key))

    def clear(self) -> None:
        """Drop every entry; loads under way still answer their callers but store nothing."""
        self._check_thread()
        self._entries.clear()
        self._loading.clear()

    def _pending(self, session: "AsyncSession | Transaction") -> "_PendingInvalidations":
        self._check_thread()
        pending = session.info.get(_PENDING_INVALIDATIONS)
        if pending is None:
            pending = session.info[_PENDING_INVALIDATIONS] = _PendingInvalidations(self)
        return cast(_PendingInvalidations, pending)

    def _expires(self, key: tuple[str, Hashable], entry: _Entry, now: float) -> float:
        lifetime = self._lifetimes.pop(key, self.ttl)
        return now + lifetime * (1 + random.uniform(0, self.jitter))

    async def _load(
        self,
        key: tuple[str, Hashable],
        generation: int,
        load: Callable[[], Awaitable[_Result]],
        none_ttl: float | None,
    ) -> _Result:
        self.stats.loads += 1
        task = asyncio.current_task()
        try:
            value = await load()
        except Exception:
            self.stats.load_errors += 1
            raise
        finally:
            loading = self._loading.get(key)
            # Not current if the key was invalidated (or reloaded) while this load ran.
            current = loading is not None and loading.task is task
            if current:
                del self._loading[key]
        if current and (value is not None or none_ttl is not None):
            if value is None and none_ttl is not None:
                self._lifetimes[key] = none_ttl
            self._entries[key] = _Entry(generation, value)
        return value

    def _check_thread(self) -> None:
        if threading.get_ident() != self._thread:
            raise RuntimeError(
                "AsyncTTLCache belongs to the event loop's thread; offloaded code must return "
                "its result to the caller, which reads or invalidates the cache"
            )


# Async, so FastAPI calls it on the event loop: a plain def would cost each request a hop
# through the shared thread pool.
async def get_cache(request: Request) -> AsyncTTLCache:
    """The app's TTL cache."""
    return cast(AsyncTTLCache, request.app.state.cache)


# --- Invalidation -----------------------------------------------------------------------
# The cache stays in each process: a hit is a dict lookup, which no network cache matches.
# On PostgreSQL, invalidations reach every process and instance on the same database through
# the database itself. A write's keys wait in its session until it commits; then they are
# dropped here and handed to the process's InvalidationSender, which sends the keys of every
# write committed meanwhile in one pg_notify, and the write is acknowledged once its keys
# went out. Each process listens on a connection of its own (CacheListener) and drops the
# keys it is sent. A write that rolls back sends nothing.
#
# Why after the commit and not inside the writing transaction, where PostgreSQL would
# deliver the notice exactly at commit: a transaction that notified takes a database-wide
# lock at commit, which serializes the commits of every writer (measured: transactions that
# notified committed at 0.28x the rate of plain ones with 32 connections). Sent after
# commit, one notice per batch takes that lock once for many writes, and a write is still
# acknowledged only after its notice was sent: a read elsewhere after the acknowledgement
# sees the old value no longer than before, while the notice travels. If the process dies
# between the commit and the send, or the database refuses the notice three times, other
# processes keep those entries until CACHE_TTL_SECONDS runs out.
#
# On SQLite (one file, so one machine) there is no such channel: each worker process keeps
# its own cache, a write drops its own process's entries only, and the other workers serve
# what they cached until CACHE_TTL_SECONDS (plus jitter) runs out. Writes themselves are
# safe across workers: SQLite lets one writer at a time commit, and the others wait.

_PENDING_INVALIDATIONS = "cache_invalidations"
_SENDING_INVALIDATIONS = "cache_invalidations_sending"
# PostgreSQL refuses a payload of 8000 bytes or more.
_MAX_PAYLOAD_BYTES = 7999
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")
# The notice is left out of query counts and budgets, on purpose. A budget states what a
# route's own code sends, and must hold on every database the route runs on; the notice is
# the kit's, sent after the commit for many writes at once on PostgreSQL, never on SQLite.
# Its wait shows as "notify" in Server-Timing, and benchmarks/ measures what it costs.
_NOTICE_OPTIONS = {"kit_notice": True}


@dataclass(slots=True)
class _PendingInvalidations:
    cache: AsyncTTLCache
    keys: set[tuple[str, Hashable]] = field(default_factory=set)

    def apply(self) -> None:
        for namespace, key in self.keys:
            self.cache.invalidate(namespace, key)


class CacheListener:
    """Applies the invalidations that other processes send to ``cache.channel``.

    It listens on a connection of its own, outside the engine's pool: a pooled connection
    would stop listening when released. While it is not listening (starting, or after the
    connection dropped), notifications sent meanwhile are lost for good, so the cache is
    cleared and bypassed until it listens again; it reconnects with backoff. A heartbeat
    checks the connection every ``heartbeat`` seconds, since one whose network died looks
    alive until it is used: a heartbeat unanswered for ``heartbeat`` seconds bypasses the
    cache until its reply comes (so a silent channel is noticed within two heartbeats), and
    one unanswered for ``timeout`` seconds gives the connection up. The cache's own
    notifications come back on the channel too, and are ignored.
    """

    def __init__(
        self,
        cache: AsyncTTLCache,
        connect: Callable[[], Awaitable["asyncpg.Connection[Any]"]],
        *,
        heartbeat: float = 0.5,
        timeout: float = 5.0,
        max_backoff: float = 5.0,
    ) -> None:
        if cache.channel is None:
            raise ValueError("the cache has no channel to listen on")
        self.cache = cache
        self.channel = cache.channel
        self.connect = connect
        self.heartbeat = heartbeat
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.listening = False
        self.backend_pid: int | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, within: float) -> None:
        """Start listening in the background, waiting up to ``within`` seconds for the
        first LISTEN.

        Until it listens, the cache is bypassed: the service runs, only without its cache.
        """
        self.cache.bypass = True
        self._task = asyncio.create_task(self._listen())
        try:
            async with asyncio.timeout(within):
                await self.wait_until(lambda: self.listening)
        except TimeoutError:
            logger.warning("cache: not listening for invalidations yet; serving uncached")

    async def close(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Return once ``condition()`` holds, checking it at each notification and each
        change of the connection; for tests.
        """
        while not condition():
            await self._changed.wait()

    async def _listen(self) -> None:
        backoff, listened = 0.1, False
        while True:
            try:
                connection = await self.connect()
            except Exception as exc:
                logger.warning("cache: cannot listen (%r); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                backoff = min(backoff * 2, self.max_backoff)
                continue
            try:
                await connection.add_listener(self.channel, self._apply)
                # From here on every commit notifies this connection, and whatever was
                # committed before, a load reads from the database: caching is safe again.
                self.listening, self.backend_pid = True, connection.get_server_pid()
                self.cache.bypass = False
                if listened:
                    self.cache.stats.listener_reconnects += 1
                listened = True
                self._notify_change()
                await self._watch(connection)
            except asyncio.CancelledError:
                await connection.close(timeout=self.heartbeat)
                raise
            except Exception as exc:
                logger.warning("cache: lost the listening connection (%r); reconnecting", exc)
            finally:
                # Whatever was sent while nobody listened is lost: forget everything.
                self.listening, self.backend_pid = False, None
                self.cache.bypass = True
                self.cache.clear()
                self._notify_change()
                connection.terminate()
            backoff = 0.1
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))

    async def _watch(self, connection: "asyncpg.Connection[Any]") -> None:
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _: lost.set())
        if connection.is_closed():
            lost.set()
        while not lost.is_set():
            try:
                async with asyncio.timeout(self.heartbeat):
                    await lost.wait()
            except TimeoutError:
                await self._beat(connection)
        raise ConnectionError("the listening connection was closed")

    async def _beat(self, connection: "asyncpg.Connection[Any]") -> None:
        reply = asyncio.ensure_future(connection.execute("SELECT 1"))
        try:
            await asyncio.wait((reply,), timeout=self.heartbeat)
            if not reply.done():
                # What holds up the reply may hold up notifications too: serve uncached until
                # it comes. The connection delivers in order, so by then every notification
                # sent before it has been applied, and the cache is current again.
                self.cache.bypass = True
                self.cache.stats.listener_silences += 1
                self._notify_change()
                async with asyncio.timeout(self.timeout - self.heartbeat):
                    await reply
                self.cache.bypass = False
                self._notify_change()
            reply.result()
        finally:
            # Stopped meanwhile (the app shutting down): the heartbeat stops with it.
            reply.cancel()

    def _apply(self, connection: object, backend_pid: int, channel: str, payload: object) -> None:
        try:
            notice = from_json(str(payload))
            if notice["origin"] == self.cache.origin:
                return
            for namespace, key in notice["keys"]:
                self.cache.invalidate(namespace, key)
            for namespace in notice["namespaces"]:
                self.cache.invalidate_namespace(namespace)
        except (ValueError, TypeError, KeyError):
            # Not a notice this cache sent: whatever it meant to drop, drop everything.
            logger.warning("cache: unreadable invalidation on %s; clearing the cache", channel)
            self.cache.clear()
        self.cache.stats.notifications_received += 1
        self._notify_change()

    def _notify_change(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


class InvalidationSender:
    """Sends the keys of committed writes to the other processes, many writes per notice.

    ``send(keys)`` returns at once a future that is done when a notice with those keys went
    out. One notice is under way at a time; the keys of writes that commit meanwhile wait
    and go out together in the next, so the batches grow with the write rate and a lone
    write waits for nothing but its own notice. A notice the database refuses is tried
    ``attempts`` times; then its keys are given up (the other processes' TTL bounds how long
    they serve those entries) and logged. It counts in the cache's stats: notices sent, the
    keys in them, failed attempts.
    """

    def __init__(self, cache: AsyncTTLCache, engine: AsyncEngine, *, attempts: int = 3) -> None:
        if cache.channel is None:
            raise ValueError("the cache has no channel to send on")
        self.cache = cache
        self.channel = cache.channel
        # AUTOCOMMIT: the notice is a transaction of its own, delivered as it is sent.
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.attempts = attempts
        self.stats = cache.stats
        self._keys: set[tuple[str, Hashable]] = set()
        self._next: asyncio.Future[None] | None = None
        self._sending: asyncio.Task[None] | None = None

    def send(self, keys: Iterable[tuple[str, Hashable]]) -> "asyncio.Future[None]":
        """Queue ``keys`` for the next notice; the future is done once it went out."""
        self._keys.update(keys)
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        sent = self._next
        if self._sending is None:
            # A context of its own: the notices are no request's work, whichever started them.
            self._sending = asyncio.create_task(self._send_batches(), context=Context())
        return sent

    async def _send_batches(self) -> None:
        try:
            while self._next is not None:
                keys, sent = self._keys, self._next
                self._keys, self._next = set(), None
                await self._notify(keys)
                sent.set_result(None)
        finally:
            self._sending = None
            if self._next is not None and not self._next.done():
                # Cancelled (the app stopping): nobody waits for a notice that will not go.
                self._next.set_result(None)

    async def _notify(self, keys: set[tuple[str, Hashable]]) -> None:
        parameters = {"channel": self.channel, "payload": _payload(self.cache.origin, keys)}
        for attempt in range(self.attempts):
            try:
                async with self.engine.connect() as connection:
                    await connection.execute(_NOTIFY, parameters, execution_options=_NOTICE_OPTIONS)
            except Exception as exc:
                self.stats.notification_failures += 1
                if attempt + 1 == self.attempts:
                    logger.error(
                        "cache: could not send %d invalidations (%r); other processes keep "
                        "those entries until CACHE_TTL_SECONDS runs out",
                        len(keys),
                        exc,
                    )
                    return
                await asyncio.sleep(0.05 * 2**attempt)
            else:
                self.stats.notifications_sent += 1
                self.stats.invalidations_sent += len(keys)
                return


def _payload(origin: str, keys: set[tuple[str, Hashable]]) -> str:
    payload = to_json({"origin": origin, "keys": list(keys), "namespaces": []})
    if len(payload) > _MAX_PAYLOAD_BYTES:
        # Too many keys for one notice: drop their namespaces whole instead.
        namespaces = list({namespace for namespace, _ in keys})
        payload = to_json({"origin": origin, "keys": [], "namespaces": namespaces})
    return payload.decode()


# One sender per cache (so per app and event loop), made by its first commit with keys.
_SENDERS: "weakref.WeakKeyDictionary[AsyncTTLCache, InvalidationSender]" = (
    weakref.WeakKeyDictionary()
)


def invalidation_sender(cache: AsyncTTLCache) -> InvalidationSender | None:
    """The sender of ``cache``'s invalidations, once a commit with keys has made it."""
    return _SENDERS.get(cache)


def _invalidate_committed(info: dict[Any, Any], engine: Engine) -> "asyncio.Future[None] | None":
    # A write committed: drop the keys it named here, and hand them to the sender for the
    # other processes. The future is done once they went out.
    pending: _PendingInvalidations | None = info.pop(_PENDING_INVALIDATIONS, None)
    if pending is None:
        return None
    pending.apply()
    if pending.cache.channel is None or not pending.keys:
        return None
    sender = _SENDERS.get(pending.cache)
    if sender is None:
        sender = _SENDERS[pending.cache] = InvalidationSender(pending.cache, AsyncEngine(engine))
    return sender.send(pending.keys)


@event.listens_for(SyncSession, "after_commit")
def _apply_invalidations(session: SyncSession) -> None:
    # A savepoint released is not the end of the transaction: wait for the real commit.
    if session.in_nested_transaction():
        return
    sent = _invalidate_committed(session.info, cast(Engine, session.get_bind()))
    if sent is not None:
        session.info[_SENDING_INVALIDATIONS] = sent


@event.listens_for(SyncSession, "after_transaction_end")
def _forget_invalidations(session: SyncSession, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:
        return
    # Rolled back or closed without a commit: nothing to drop, and nothing is sent.
    session.info.pop(_PENDING_INVALIDATIONS, None)
    sent: asyncio.Future[None] | None = session.info.pop(_SENDING_INVALIDATIONS, None)
    if sent is not None:
        # Committed: wait for the notice, after the session gave its connection back (the
        # sender may need one from the same pool). The commit returns once it went out, so
        # the write is not acknowledged before the other processes were told. Shielded: a
        # request that goes away does not cancel the other writes' notice.
        started = time.perf_counter()
        await_only(asyncio.shield(sent))
        note_timing("notify", time.perf_counter() - started)


@asynccontextmanager
async def open_cache(app: FastAPI, settings: "KitSettings") -> AsyncIterator[None]:
    """Keep the cache on ``app.state`` for the app's life, with its listener on PostgreSQL.

    Made here, not at import: it belongs to the event loop that serves the app.
    """
    engine: AsyncEngine = app.state.engine
    shared = settings.cache_notify and engine.dialect.name == "postgresql"
    app.state.cache = cache = AsyncTTLCache(
        settings.cache_max_entries,
        settings.cache_ttl_seconds,
        channel=settings.cache_channel if shared else None,
    )
    app.state.cache_listener = None
    if not shared:
        yield
        return
    listener = CacheListener(cache, _listening_connection(engine, settings))
    app.state.cache_listener = listener
    await listener.start(within=settings.database_pool_timeout)
    try:
        yield
    finally:
        await listener.close()


def _listening_connection(
    engine: AsyncEngine, settings: "KitSettings"
) -> Callable[[], Awaitable["asyncpg.Connection[Any]"]]:
    # The engine's own connection arguments (host, user, password, database, URL options),
    # for a connection outside its pool; prepared_statement_cache_size is the dialect's own.
    _, arguments = engine.dialect.create_connect_args(engine.url)
    arguments.pop("prepared_statement_cache_size", None)
    application = {"application_name": f"{settings.cache_channel} listener"}
    return functools.partial(
        asyncpg.connect,
        timeout=settings.database_connect_timeout,
        server_settings=application,
        **arguments,
    )


# --- Offload ----------------------------------------------------------------------------


class OffloadSettings(PartSettings):
    """The offload pool's threads, and the line in front of them."""

    # Each thread holds a stack of its own; anyio's shared pool has 40.
    offload_threads: int = Field(default=4, ge=1, le=256)
    offload_max_waiting: int = Field(default=16, ge=0, le=10_000)
    offload_wait_timeout: float = Field(default=5.0, gt=0, le=60)


@dataclass(slots=True)
class OffloadStats:
    """What the offload pool did since the app started."""

    threads: int = gauge_field("Worker threads in the offload pool")
    running: int = gauge_field("Offloaded calls running in a worker thread now")
    waiting: int = gauge_field("Offloaded calls waiting for a worker thread now")
    completed: int = counter_field("Offloaded calls that ran to their end")
    rejected: int = counter_field(
        "Offloaded calls refused with a 503: the waiting line was full or too slow"
    )


class Offloader:
    """Runs blocking functions in worker threads of the service's own bounded pool.

    Never FastAPI's shared default pool: its 40 threads also serve every sync dependency
    and route, and exhausting it stalls the whole app. Calls beyond the pool's threads
    wait in a bounded line for a bounded time; past either, ``Overloaded`` (a 503).
    Context variables flow into the thread. Hand the function plain data, never the
    async session.
    """

    def __init__(self, threads: int, max_waiting: int, wait_timeout: float) -> None:
        self.max_waiting = max_waiting
        self.wait_timeout = wait_timeout
        self.stats = OffloadStats(threads=threads)
        self._admission = anyio.Semaphore(threads)
        # A second limiter of the same size for the threads themselves: admission already
        # bounds them, and anyio wants a limiter no caller holds a token of.
        self._threads = anyio.CapacityLimiter(threads)

    async def run(
        self, function: Callable[_Params, _Result], *args: _Params.args, **kwargs: _Params.kwargs
    ) -> _Result:
        """Call ``function(*args, **kwargs)`` in a worker thread and return its result."""
        started = time.perf_counter()
        await self._admit()
        return await self._run_admitted(started, functools.partial(function, *args, **kwargs))

    async def run_when_free(
        self, function: Callable[_Params, _Result], *args: _Params.args, **kwargs: _Params.kwargs
    ) -> _Result:
        """Like ``run``, but wait for a thread however long the line is and the wait takes.

        For work a client has already been promised, such as the next part of a response
        that has started: refusing it then would cut the response off, not answer 503.
        """
        started = time.perf_counter()
        if self._admission.value > 0:
            await self._admission.acquire()
        else:
            self.stats.waiting += 1
            try:
                await self._admission.acquire()
            finally:
                self.stats.waiting -= 1
        return await self._run_admitted(started, functools.partial(function, *args, **kwargs))

    async def _run_admitted(self, started: float, call: Callable[[], _Result]) -> _Result:
        try:
            self.stats.running += 1
            # abandon_on_cancel=False: a cancelled caller still waits for its thread, so
            # the pool never runs more threads than its size.
            return await anyio.to_thread.run_sync(
                call, limiter=self._threads, abandon_on_cancel=False
            )
        finally:
            self.stats.running -= 1
            self.stats.completed += 1
            self._admission.release()
            note_timing("offload", time.perf_counter() - started)

    async def _admit(self) -> None:
        if self._admission.value > 0:
            await self._admission.acquire()
            return
        if self.stats.waiting >= self.max_waiting:
            self.stats.rejected += 1
            raise Overloaded("the offload pool's waiting line is full")
        self.stats.waiting += 1
        try:
            with anyio.fail_after(self.wait_timeout):
                await self._admission.acquire()
        except TimeoutError:
            self.stats.rejected += 1
            raise Overloaded("no offload thread became free in time") from None
        finally:
            self.stats.waiting -= 1


@asynccontextmanager
async def open_offloader(app: FastAPI, settings: OffloadSettings) -> AsyncIterator[None]:
    """Keep the offload pool on ``app.state`` for the app's life."""
    app.state.offloader = Offloader(
        settings.offload_threads, settings.offload_max_waiting, settings.offload_wait_timeout
    )
    yield


async def get_offloader(request: Request) -> Offloader:
    """The app's offload pool."""
    return cast(Offloader, request.app.state.offloader)


# --- Work after the response ------------------------------------------------------------


@dataclass(slots=True)
class RefreshStats:
    """What a coalescing refresher did since the app started."""

    marked: int = counter_field("Keys marked for a refresh by writes")
    pending: int = gauge_field("Keys marked and not yet refreshed")
    runs: int = counter_field("Refreshes that succeeded")
    keys_refreshed: int = counter_field("Keys the successful refreshes covered")
    failures: int = counter_field("Refreshes that failed, their keys kept for the next")
    retries: int = counter_field("Refreshes started again after a failure")
    abandoned: int = counter_field("Keys left unrefreshed when the app stopped")


class CoalescingRefresher:
    """Runs ``refresh(keys)`` after the responses that asked for it, once per burst of writes.

    ``mark(key)``, called once a write has committed, costs the request nothing: no task, no
    query. One worker task, started with the app, waits ``max_delay`` seconds after the first
    mark of a burst, then refreshes every key marked meanwhile in one call: N writes, one
    refresh, and what it maintains is at most ``max_delay`` plus one refresh behind. A
    failed refresh is logged, counted and retried on its own: after ``max_delay`` (a tenth
    of a second at least), then twice as long each time up to ``max_retry_delay``; a write
    meanwhile takes its keys along sooner. ``stop`` runs what is pending, for at most its
    grace period, then cancels the rest.

    Per process and in memory: a mark not yet refreshed when the process dies is lost. Work
    that must survive a crash, or that needs more than one task, wants a real queue.
    """

    def __init__(
        self,
        name: str,
        refresh: Callable[[frozenset[Any]], Awaitable[None]],
        max_delay: float,
        *,
        max_retry_delay: float = 30.0,
    ) -> None:
        self.name = name
        self.refresh = refresh
        self.max_delay = max_delay
        self.max_retry_delay = max_retry_delay
        self._backoff = 0.0
        self._retry: asyncio.TimerHandle | None = None
        self.stats = RefreshStats()
        self._pending: set[Hashable] = set()
        self._running: frozenset[Hashable] = frozenset()
        self._marked = asyncio.Event()
        self._hurry = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the worker task; the app's lifespan calls it, and ``stop``."""
        self._task = asyncio.create_task(self._work(), name=f"refresh {self.name}")

    def mark(self, key: Hashable) -> None:
        """Ask for ``key`` to be refreshed soon; call it once the write has committed."""
        self.stats.marked += 1
        self._pending.add(key)
        self.stats.pending = len(self._pending)
        self._idle.clear()
        self._marked.set()

    async def settled(self) -> None:
        """Wait until every key marked so far has had its refresh (or its failure)."""
        await self._idle.wait()

    async def flush(self) -> None:
        """Refresh what is pending now (keys waiting for a retry too), without waiting out
        the delay, and wait for it.
        """
        if self._pending or not self._idle.is_set():
            self._idle.clear()
            self._hurry.set()
            self._marked.set()
            await self._idle.wait()

    async def stop(self, grace: float) -> None:
        """Refresh what is pending, for at most ``grace`` seconds, then end the worker."""
        task = self._task
        if task is None:
            return
        self._stopping = True
        self._hurry.set()
        self._marked.set()
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            task.cancel()
            await asyncio.wait({task})
        if self._retry is not None:
            self._retry.cancel()
        abandoned = self._pending | self._running
        if abandoned:
            self.stats.abandoned += len(abandoned)
            logger.error("%s: stopped with %d keys not refreshed", self.name, len(abandoned))

    async def _work(self) -> None:
        while not self._stopping or self._marked.is_set():
            await self._marked.wait()
            if not self._hurry.is_set():
                # Let the burst gather: every write in this window shares one refresh.
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), self.max_delay)
            self._marked.clear()
            self._hurry.clear()
            self._running = frozenset(self._pending)
            self._pending.clear()
            self.stats.pending = 0
            if self._running:
                await self._refresh(self._running)
            self._running = frozenset()
            if not self._marked.is_set():
                self._idle.set()

    async def _refresh(self, keys: frozenset[Hashable]) -> None:
        try:
            await self.refresh(keys)
        except Exception:
            self.stats.failures += 1
            # Not lost: the keys go with the next refresh, the retry's or a write's.
            self._pending |= keys
            self.stats.pending = len(self._pending)
            logger.exception(
                "%s: refreshing %d keys failed; they wait for the next refresh",
                self.name,
                len(keys),
            )
            if not self._stopping:
                self._retry_later()
        else:
            self.stats.runs += 1
            self.stats.keys_refreshed += len(keys)
            self._backoff = 0.0
            if self._retry is not None:
                self._retry.cancel()
                self._retry = None

    def _retry_later(self) -> None:
        # Never sooner than a tenth of a second (a delay of 0 would retry in a busy loop),
        # and with jitter, so that processes that failed together do not retry in step.
        ceiling = max(self.max_retry_delay, self.max_delay)
        self._backoff = min(max(self._backoff * 2, self.max_delay, 0.1), ceiling)
        if self._retry is not None:
            self._retry.cancel()
        delay = self._backoff * random.uniform(0.75, 1.25)
        self._retry = asyncio.get_running_loop().call_later(delay, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        self.stats.retries += 1
        self._idle.clear()
        self._hurry.set()
        self._marked.set()


# --- Overload guard ---------------------------------------------------------------------


class GuardSettings(PartSettings):
    """How many requests run at once, and how long the others may wait."""

    guard_enabled: bool = True
    # As many as the database pool may hold; a line at most ten times that.
    guard_max_in_flight: int = Field(default=10, ge=1, le=1000)
    guard_max_waiting: int = Field(default=20, ge=0, le=10_000)
    # Seconds; a line is for bursts, and a wait of minutes only turns overload into timeouts.
    guard_wait_timeout: float = Field(default=0.1, gt=0, le=60)
    guard_min_in_flight: int = Field(default=5, ge=1, le=1000)
    guard_standing_wait_timeout: float = Field(default=0.005, gt=0, le=1)
    guard_adaptive: bool = True


@dataclass(slots=True)
class GuardStats:
    """What the overload guard did since the app started."""

    limit: int = gauge_field("Requests the guard admits at once now (its adaptive limit)")
    in_flight: int = gauge_field("Requests admitted and not yet answered")
    waiting: int = gauge_field("Requests waiting in line for a place")
    admitted: int = counter_field("Requests given a place")
    rejected_full: int = counter_field("Requests refused with a 503 because the line was full")
    rejected_waited_too_long: int = counter_field(
        "Requests refused with a 503 after waiting GUARD_WAIT_TIMEOUT in line"
    )
    rejected_standing_line: int = counter_field(
        "Requests refused with a 503 after the short wait of a standing line"
    )
    rejected_kept_connection: int = counter_field(
        "Requests on a kept-alive connection refused at once while the line overflowed"
    )
    gone_while_waiting: int = counter_field("Requests whose client went away while they waited")
    loop_lag_ms: float = gauge_field(
        "How late the event loop runs a timer now, in milliseconds", default=0.0
    )


@dataclass(slots=True)
class _Waiter:
    place: "asyncio.Future[bool]"
    since: float
    cut: bool = False
    deadline: asyncio.TimerHandle | None = None


class ConcurrencyLimit:
    """Admits as many requests at once as the service serves quickly; a short line waits.

    ``acquire`` returns True once admitted, False when refused; every True is paired with
    one ``release``, given the holder's arrival time (on ``clock``) so that its latency
    feeds the limit.

    The limit adapts between ``min_in_flight`` and ``max_in_flight`` (the database pool) as
    Netflix's Gradient2 does: over each window of ``window`` (at least 10) admitted requests
    it compares their average latency with a baseline, shrinks the limit when latency rises
    past ``tolerance`` times the baseline, and grows it a little each window while it does
    not. Averages, not minimums: a minimum latency would shed too much.
    The line follows "Fail at Scale", which tells a burst from a standing queue. A burst
    drains: it is served in order, in as many rounds of work as it needs, and a waiter is
    refused only once nothing in flight has finished for ``wait_timeout`` (the line is
    stuck: a silent database, say). A line that has not been empty for ``wait_timeout``
    and still takes in requests stands: the service is not keeping up, so a request waits
    at most ``standing_wait_timeout`` and the newest is served first, since it is the
    likeliest still to have a client waiting for it. After ``idle_reset`` seconds with
    nothing in flight the limit starts again from its ceiling: an idle worker has nothing
    queued, and the next burst should find the room it has.
    """

    def __init__(
        self,
        max_in_flight: int,
        max_waiting: int,
        wait_timeout: float,
        *,
        min_in_flight: int = 1,
        standing_wait_timeout: float = 0.005,
        adaptive: bool = True,
        window: int = 10,
        tolerance: float = 1.5,
        smoothing: float = 0.2,
        idle_reset: float = 1.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not 1 <= min_in_flight <= max_in_flight:
            raise ValueError(
                f"want 1 <= min_in_flight <= max_in_flight, got {min_in_flight} and {max_in_flight}"
            )
        if window < 10:
            raise ValueError(f"want a window of at least 10 samples, got {window}")
        self.max_in_flight = max_in_flight
        self.min_in_flight = min_in_flight
        self.max_waiting = max_waiting
        self.wait_timeout = wait_timeout
        self.standing_wait_timeout = standing_wait_timeout
        self.adaptive = adaptive
        self.window = window
        self.tolerance = tolerance
        self.smoothing = smoothing
        self.idle_reset = idle_reset
        self.clock = clock
        self.stats = GuardStats(limit=max_in_flight)
        self._estimate = float(max_in_flight)
        self._baseline: float | None = None
        self._window_total = 0.0
        self._window_count = 0
        self._window_peak = 0
        self._line: deque[_Waiter] = deque()
        self._line_since = 0.0
        self._stands = False
        self._moved = clock()
        self._overflowed = -math.inf
        self._idle_since = clock()

    @property
    def limit(self) -> int:
        """How many requests may be in flight now."""
        return self.stats.limit

    def try_acquire(self) -> bool:
        """Take a place if one is free and nobody waits for it; never waits."""
        stats = self.stats
        if stats.in_flight == 0 and stats.limit < self.max_in_flight:
            self._reset_if_idle()
        if stats.in_flight < stats.limit and not self._line:
            stats.in_flight += 1
            stats.admitted += 1
            self._window_peak = max(self._window_peak, stats.in_flight)
            return True
        return False

    def line_is_full(self, *, waited: bool = True) -> bool:
        """True, and counted as a refusal, when this request may not wait: the line is full,
        or it has overflowed within ``wait_timeout`` and the request has not ``waited``
        unseen before it got here (the places left are kept for those that may have)."""
        now = self.clock()
        if self._line and now - self._line_since >= self.wait_timeout:
            # Requests keep coming to a line that has not emptied for wait_timeout: it stands.
            self._stands = True
        self._cut_standing_line(now)
        if len(self._line) >= self.max_waiting:
            self._overflowed = now
            self.stats.rejected_full += 1
            return True
        if not waited and now - self._overflowed < self.wait_timeout:
            self.stats.rejected_kept_connection += 1
            return True
        return False

    async def acquire(self) -> bool:
        """Wait for a place; True when admitted, False when refused."""
        if self.try_acquire():
            return True
        if self.line_is_full():
            return False
        stats = self.stats
        loop = asyncio.get_running_loop()
        now = self.clock()
        if not self._line:
            self._line_since = now
            self._stands = False
        waiter = _Waiter(loop.create_future(), now)
        self._line.append(waiter)
        stats.waiting += 1
        waiter.deadline = loop.call_later(self.wait_timeout, self._give_up_if_stuck, waiter)
        try:
            admitted = await waiter.place
        except asyncio.CancelledError:
            # The place may have been handed over just as the waiter was cancelled.
            place = waiter.place
            if place.done() and not place.cancelled() and place.result():
                self.release()
            stats.gone_while_waiting += 1
            raise
        finally:
            if waiter.deadline is not None:
                waiter.deadline.cancel()
            stats.waiting -= 1
            if waiter in self._line:
                self._line.remove(waiter)
        if admitted:
            stats.admitted += 1
        elif waiter.cut:
            stats.rejected_standing_line += 1
        else:
            stats.rejected_waited_too_long += 1
        return admitted

    def release(self, arrived: float | None = None) -> None:
        """Give the place back; ``arrived`` (on ``clock``) makes the request a sample."""
        now = self.clock()
        if arrived is not None and self.adaptive:
            self._sample(now - arrived)
        self._moved = now
        self.stats.in_flight -= 1
        self._cut_standing_line(now)
        self._hand_over(now)
        if self.stats.in_flight == 0:
            self._idle_since = now

    def _reset_if_idle(self) -> None:
        if self.clock() - self._idle_since >= self.idle_reset:
            self._estimate = float(self.max_in_flight)
            self.stats.limit = self.max_in_flight

    def _hand_over(self, now: float) -> None:
        stats = self.stats
        line = self._line
        while line and stats.in_flight < stats.limit:
            # Oldest first while the line is a passing burst, newest first once it stands.
            waiter = line.pop() if self._standing() else line.popleft()
            if not waiter.place.done():
                stats.in_flight += 1
                self._window_peak = max(self._window_peak, stats.in_flight)
                waiter.place.set_result(True)
        if not line:
            self._line_since = now

    def _standing(self) -> bool:
        return self._stands and bool(self._line)

    def _give_up_if_stuck(self, waiter: _Waiter) -> None:
        # A waiter counts its wait from its arrival or from the last request to finish,
        # whichever is later: a line that moves is a burst draining, however long it is.
        if waiter.place.done():
            return
        still = self.clock() - max(waiter.since, self._moved)
        if still >= self.wait_timeout:
            _expire(waiter.place)
        else:
            loop = asyncio.get_running_loop()
            waiter.deadline = loop.call_later(
                self.wait_timeout - still, self._give_up_if_stuck, waiter
            )

    def _cut_standing_line(self, now: float) -> None:
        # In a standing line the oldest have waited longest and are at the front: refuse
        # them once past the short deadline, rather than serve requests nobody awaits.
        line = self._line
        if not self._standing():
            return
        while line and now - line[0].since >= self.standing_wait_timeout:
            waiter = line.popleft()
            waiter.cut = True
            _expire(waiter.place)
        if not line:
            self._line_since = now

    def _sample(self, latency: float) -> None:
        self._window_total += latency
        self._window_count += 1
        if self._window_count < self.window:
            return
        recent = self._window_total / self._window_count
        unloaded = self._window_peak <= self.min_in_flight
        self._window_total, self._window_count = 0.0, 0
        self._window_peak = self.stats.in_flight
        # The baseline is the latency of unloaded service: it follows any better window, and
        # windows served at the minimum concurrency, where queueing cannot inflate it. It
        # never creeps up with the load it is meant to detect.
        if self._baseline is None or recent < self._baseline or unloaded:
            self._baseline = recent
        gradient = min(1.0, max(0.5, self.tolerance * self._baseline / recent))
        wanted = self._estimate * gradient + 1
        smoothed = self._estimate * (1 - self.smoothing) + wanted * self.smoothing
        self._estimate = min(max(smoothed, self.min_in_flight), self.max_in_flight)
        self.stats.limit = int(self._estimate)


def _expire(place: "asyncio.Future[bool]") -> None:
    if not place.done():
        place.set_result(False)


class LoopLag:
    """How late the event loop runs a timer: the wait a new request has before any code sees it.

    A request that reaches the guard has already waited for the loop to finish the turn in
    progress; middleware cannot time that wait, but a timer that should fire every
    ``interval`` seconds shows it, so the guard counts a request as arrived that much earlier.
    """

    def __init__(self, stats: GuardStats, interval: float = 0.025) -> None:
        self.stats = stats
        self.interval = interval
        self.seconds = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self) -> None:
        """Start measuring on the running loop, once."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            loop.call_at(loop.time() + self.interval, self._tick, loop, loop.time() + self.interval)

    def _tick(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        now = loop.time()
        self.seconds = max(0.0, now - due)
        self.stats.loop_lag_ms = round(self.seconds * 1000, 3)
        if self._loop is loop and not loop.is_closed():
            loop.call_at(now + self.interval, self._tick, loop, now + self.interval)


# Health checks and metrics must answer under any load, so the guard lets them through.
# Readiness too: a probe refused for load would take a busy instance out of service, and
# the others would then take its load as well.
UNGUARDED_PATHS = ("/health", "/metrics", "/ready")


class OverloadGuard:
    """Sheds load before it queues up: a 503 with Retry-After at once, not a timeout later.

    Pure ASGI and outermost but for the body limit, so a refused request costs no routing,
    body parsing or database session, and a write is either refused before it starts or
    runs to its end. Health and metrics paths bypass it: a health check that fails under
    load turns overload into restarts. Why not uvicorn's ``--limit-concurrency``: it counts
    open connections (idle keep-alives too), has no waiting line, answers plain-text 503s
    without Retry-After, and cannot exempt the health check.

    Once the line has overflowed (within its wait timeout), a request on a connection the
    guard has answered before is refused rather than queued: its client sent it the moment
    the last answer came, so it has waited for nothing. A request on a new connection may
    have waited unseen in the kernel's accept queue for as long as the worker was busy (each
    503 closes its connection, so a refused client comes back on a new one): the line's
    places go to those, and a refusal costs the client that has waited least. Behind a proxy
    that rewrites the client address (port 0), every request counts as new.
    """

    def __init__(
        self,
        app: ASGIApp,
        limit: ConcurrencyLimit,
        exempt: Sequence[str],
        remembered_connections: int = 4096,
    ) -> None:
        self.app = app
        self.limit = limit
        self.exempt = frozenset(exempt)
        self.lag = LoopLag(limit.stats)
        self.remembered_connections = remembered_connections
        # The client addresses of the connections answered last, oldest first.
        self._answered: dict[tuple[str, int], None] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        limit = self.limit
        self.lag.watch()
        # Latency counts from arrival: the loop's current lag is how long ago that was.
        arrived = limit.clock() - self.lag.seconds
        client = _connection(scope)
        if not limit.try_acquire():
            # A full line refuses at once: no task, no timer, nothing read.
            if limit.line_is_full(waited=client is None or client not in self._answered):
                await send_overloaded(send)
                return
            started = time.perf_counter()
            admitted, receive = await _wait_in_line(limit, receive)
            scope["queue_wait"] = time.perf_counter() - started
            if not admitted:
                await send_overloaded(send)
                return
        try:
            await self.app(scope, receive, send)
        finally:
            limit.release(arrived)
            if client is not None:
                self._remember(client)

    def _remember(self, client: tuple[str, int]) -> None:
        answered = self._answered
        answered.pop(client, None)
        answered[client] = None
        if len(answered) > self.remembered_connections:
            del answered[next(iter(answered))]


def overload_guard(app: FastAPI, settings: GuardSettings) -> list[Middleware]:
    """The guard and its limit (``app.state.guard``), unless ``GUARD_ENABLED`` is false."""
    if not settings.guard_enabled:
        return []
    app.state.guard = limit = ConcurrencyLimit(
        settings.guard_max_in_flight,
        settings.guard_max_waiting,
        settings.guard_wait_timeout,
        # The floor never exceeds the ceiling: GUARD_MAX_IN_FLIGHT=1 needs no other change.
        min_in_flight=min(settings.guard_min_in_flight, settings.guard_max_in_flight),
        standing_wait_timeout=settings.guard_standing_wait_timeout,
        adaptive=settings.guard_adaptive,
    )
    return [Middleware(OverloadGuard, limit=limit, exempt=UNGUARDED_PATHS)]


def _connection(scope: Scope) -> tuple[str, int] | None:
    # The client's address and port name its connection; port 0 is a proxy's rewrite.
    client = scope.get("client")
    return (client[0], client[1]) if client and client[1] else None


async def _wait_in_line(limit: ConcurrencyLimit, receive: Receive) -> tuple[bool, Receive]:
    # While a request waits, its client may give up: watch for the disconnect, so that a
    # client gone does not hold a place in the line. Messages read meanwhile (the body)
    # are replayed to the app.
    received: list[Message] = []
    waiting = asyncio.ensure_future(limit.acquire())
    try:
        while not waiting.done():
            receiving = asyncio.ensure_future(receive())
            await asyncio.wait((waiting, receiving), return_when=asyncio.FIRST_COMPLETED)
            if not receiving.done():
                receiving.cancel()
                break
            message = receiving.result()
            if message["type"] == "http.disconnect":
                _leave_line(limit, waiting)
                await asyncio.wait((waiting,))
                return False, receive
            received.append(message)
    except asyncio.CancelledError:
        _leave_line(limit, waiting)
        raise
    admitted = waiting.result()

    async def replay() -> Message:
        return received.pop(0) if received else await receive()

    return admitted, replay


def _leave_line(limit: ConcurrencyLimit, waiting: "asyncio.Future[bool]") -> None:
    if not waiting.done():
        # acquire() leaves the line, and gives back a place handed to it meanwhile.
        waiting.cancel()
    elif not waiting.cancelled() and waiting.result():
        limit.release()


# --- Request bodies ---------------------------------------------------------------------
# Bounded in size and in time, and read before the guard admits the request.


class BodyLimitSettings(PartSettings):
    """How large a request body may be, and how long it may take to arrive."""

    # A body is held in memory whole: at most 512 MiB, and ten minutes to arrive.
    max_body_bytes: int = Field(default=1_048_576, ge=1, le=536_870_912)
    body_read_timeout: float = Field(default=10.0, gt=0, le=600)


@dataclass(slots=True)
class RequestBodyStats:
    """What the body limit did since the app started."""

    # Exported as guard_...: the guard kept these until the body limit had counters of its
    # own, and dashboards know them by that name.
    metric_prefix: ClassVar[str] = "guard"
    reading_bodies: int = gauge_field("Request bodies being read now, before admission")
    bodies_too_large: int = counter_field("Requests refused with a 413: body over MAX_BODY_BYTES")
    bodies_too_slow: int = counter_field(
        "Requests refused with a 408: body not read within BODY_READ_TIMEOUT"
    )


class RequestBodyLimit:
    """Reads each request body whole before the app (and the guard) sees the request.

    A place in the guard is for work, not for waiting on a slow client: a body that
    trickles in is read here, outside the limit, and one that has not arrived within
    ``timeout`` seconds is answered 408. A body over ``max_bytes`` is answered 413, from
    its Content-Length before any of it is read, or as soon as a chunked body passes it.
    Requests without a body pass straight through.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, timeout: float, stats: RequestBodyStats
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.stats = stats
        self._too_large = _error_response(
            413, f"the request body is larger than the limit of {max_bytes} bytes (MAX_BODY_BYTES)"
        )
        self._too_slow = _error_response(
            408, f"the request body did not arrive within {timeout:g} s (BODY_READ_TIMEOUT)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _announced_body(scope)
        if length == 0:
            await self.app(scope, receive, send)
            return
        if length is not None and length > self.max_bytes:
            self.stats.bodies_too_large += 1
            await self._send(send, self._too_large)
            return
        stats = self.stats
        stats.reading_bodies += 1
        try:
            body = await self._read(receive)
        except TimeoutError:
            stats.bodies_too_slow += 1
            await self._send(send, self._too_slow)
            return
        except _BodyTooLarge:
            stats.bodies_too_large += 1
            await self._send(send, self._too_large)
            return
        finally:
            stats.reading_bodies -= 1
        if body is None:
            return  # the client went away
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        async with asyncio.timeout(self.timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunk: bytes = message.get("body", b"")
                size += len(chunk)
                if size > self.max_bytes:
                    raise _BodyTooLarge  # enough to know; the rest is never read
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)

    @staticmethod
    async def _send(send: Send, response: tuple[int, list[tuple[bytes, bytes]], bytes]) -> None:
        status_code, headers, body = response
        await send({"type": "http.response.start", "status": status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def body_limit(app: FastAPI, settings: BodyLimitSettings) -> list[Middleware]:
    """The body limit, its counters on ``app.state.request_bodies``."""
    app.state.request_bodies = stats = RequestBodyStats()
    return [
        Middleware(
            RequestBodyLimit,
            max_bytes=settings.max_body_bytes,
            timeout=settings.body_read_timeout,
            stats=stats,
        )
    ]


class _BodyTooLarge(Exception):
    pass


def _announced_body(scope: Scope) -> int | None:
    # The body's length if the headers give it, None for a chunked body of unknown length.
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
        if name == b"transfer-encoding":
            return None
    return 0


def _error_response(status_code: int, detail: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    # The connection is closed after it: the rest of the body is never read.
    body = to_json({"detail": detail})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    return status_code, headers, body


# --- Slow clients -----------------------------------------------------------------------
# A client that does not read its response holds nothing for long; one that sends its
# headers slowly, or too many of them, holds no connection for long.


class SlowClientSettings(PartSettings):
    """How long a client may take to send its headers and to read its response."""

    # Seconds: a response may take ten minutes to be read, headers a minute to arrive, and
    # they may fill 1 MiB (nginx allows 32 KiB, h11 16 KiB).
    send_timeout: float = Field(default=10.0, gt=0, le=600)
    header_read_timeout: float = Field(default=10.0, gt=0, le=60)
    max_header_bytes: int = Field(default=32_768, ge=1024, le=1_048_576)


@dataclass(slots=True)
class SlowClientStats:
    """What the send deadline did since the app started."""

    # Exported as guard_..., as the body limit's counters are.
    metric_prefix: ClassVar[str] = "guard"
    responses_not_read: int = counter_field(
        "Requests ended because their client did not read the response within SEND_TIMEOUT"
    )


class SendDeadline:
    """Abandons a request whose client does not take its response within ``timeout`` s.

    A server's ``send`` waits while the connection's write buffer is full, so a client that
    stops reading (or pipelines requests and never reads the answers) would keep the request
    running, with its place in the guard and whatever else it holds, for as long as it keeps
    the connection open. Past the deadline the request ends and releases what it holds; the
    connection stays, idle, until its client goes, unless the server drops it (as
    ``BoundedHttpToolsProtocol`` does). The deadline is per ``send``, as nginx's send_timeout
    is between two writes: a slow download that keeps reading is never cut.
    """

    def __init__(self, app: ASGIApp, timeout: float, stats: SlowClientStats) -> None:
        self.app = app
        self.timeout = timeout
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        abandoned = False

        async def send_in_time(message: Message) -> None:
            nonlocal abandoned
            if abandoned:  # the app caught the first one: nothing more goes out
                raise _ResponseNotRead
            try:
                async with asyncio.timeout(self.timeout):
                    await send(message)
            except TimeoutError:
                abandoned = True
                raise _ResponseNotRead from None

        try:
            await self.app(scope, receive, send_in_time)
        except _ResponseNotRead:
            self.stats.responses_not_read += 1
            # Everything the request held is released by now. The server could only try to
            # answer 500 into the same full buffer, so wait for the client to go instead:
            # this costs a suspended coroutine, nothing more.
            while (await receive())["type"] != "http.disconnect":
                pass


def send_deadline(app: FastAPI, settings: SlowClientSettings) -> list[Middleware]:
    """The send deadline, its counters on ``app.state.slow_clients``."""
    app.state.slow_clients = stats = SlowClientStats()
    return [Middleware(SendDeadline, timeout=settings.send_timeout, stats=stats)]


class _ResponseNotRead(Exception):
    # Not an OSError (as TimeoutError is): frameworks turn those into a client disconnect.
    pass


# HTTP connections: the bounds a production HTTP front puts on them.


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds nginx and h11 put on a connection.

    Run the service with it::

        uvicorn my_service:app --http my_service:BoundedHttpToolsProtocol

    httptools takes headers of any size, and parses a long one in time that grows with the
    square of its length, and uvicorn gives a connection that has not finished sending its
    headers no deadline at all: one client could freeze the worker, a few hundred hold all
    its connections. Here headers over ``MAX_HEADER_BYTES`` are answered 431, headers not in
    within ``HEADER_READ_TIMEOUT`` seconds of the connection or of their first byte 408, and
    a connection whose client reads nothing of its response for ``SEND_TIMEOUT`` is dropped.
    The settings come from the environment, as the app's do.
    """

    def __init__(
        self,
        config: UvicornConfig,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        settings = _connection_settings()
        self.max_header_bytes = settings.max_header_bytes
        self.header_read_timeout = settings.header_read_timeout
        self.send_timeout = settings.send_timeout
        self._header_bytes = 0
        self._header_tail = b""
        self._reading_headers = True
        self._header_deadline: asyncio.TimerHandle | None = None
        self._send_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the header deadline: a connection that sends nothing is closed too."""
        super().connection_made(cast(asyncio.Transport, transport))
        self._header_deadline = self.loop.call_later(
            self.header_read_timeout, self._headers_too_slow
        )

    def data_received(self, data: bytes) -> None:
        """Parse ``data``, unless it takes the request's headers past the limit."""
        if self._reading_headers:
            # Counted up to the blank line that ends them (it may straddle two reads):
            # a body in the same read is not headers.
            seen = self._header_tail + data
            end = seen.find(b"\r\n\r\n")
            self._header_bytes += len(data) if end < 0 else end + 4 - len(self._header_tail)
            self._header_tail = seen[-3:]
            if self._header_bytes > self.max_header_bytes:
                self._refuse(431, f"the request's headers exceed {self.max_header_bytes} bytes")
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        """A request's first byte: its headers are due within the deadline."""
        super().on_message_begin()
        self._reading_headers = True
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(
                self.header_read_timeout, self._headers_too_slow
            )

    def on_headers_complete(self) -> None:
        """The headers are in: the request runs with the app's own deadlines."""
        self._reading_headers = False
        self._header_bytes = 0
        self._header_tail = b""
        self._cancel_header_deadline()
        super().on_headers_complete()

    def pause_writing(self) -> None:
        """The client has stopped reading: it has ``send_timeout`` seconds to resume."""
        super().pause_writing()
        if self._send_deadline is None:
            self._send_deadline = self.loop.call_later(self.send_timeout, self.transport.abort)

    def resume_writing(self) -> None:
        """The client reads again."""
        super().resume_writing()
        if self._send_deadline is not None:
            self._send_deadline.cancel()
            self._send_deadline = None

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the deadlines with the connection."""
        self._cancel_header_deadline()
        if self._send_deadline is not None:
            self._send_deadline.cancel()
        super().connection_lost(exc)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self._header_bytes:
            self._refuse(408, "the request's headers did not arrive in time")
        else:
            self.transport.close()  # nothing asked, so nothing to answer

    def _refuse(self, status_code: int, detail: str) -> None:
        self._reading_headers = False
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A response is on its way out; another one cannot be put in the middle of it.
            self.transport.abort()
            return
        body = to_json({"detail": detail})
        head = (
            f"HTTP/1.1 {status_code} {HTTPStatus(status_code).phrase}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()


@functools.cache
def _connection_settings() -> SlowClientSettings:
    # Read once per process: uvicorn makes a protocol for every connection.
    return SlowClientSettings.from_env()


# --- Probes -----------------------------------------------------------------------------
# An overloaded instance accepts new connections late: each waits its turn behind the
# clients that reconnect after their 503s, a quarter of a second and more on two cores, and
# a liveness probe opens a new connection every time. On a port of its own a probe waits
# behind no one, so a busy instance is not restarted for being busy; a stuck event loop
# still fails it, since the port is served on the same loop.


class ProbeSettings(PartSettings):
    """Where the probes are answered besides the service's own port."""

    # /health and /ready on this port too, on every interface (probes come from the node,
    # not from localhost); each worker process listens on it (SO_REUSEPORT). Unset: only
    # on the service's port.
    probe_port: int | None = Field(default=None, ge=1, le=65535)

    @field_validator("probe_port", mode="before")
    @classmethod
    def _no_probe_port(cls, value: object) -> object:
        # PROBE_PORT= in .env, as .env.example has it, leaves it unset.
        return None if value == "" else value


# A probe sends one short request and reads the answer; anything else is cut short.
PROBE_READ_TIMEOUT = 5.0
_PROBE_MAX_REQUEST = 8192


class _ProbeProtocol(asyncio.Protocol):
    """One request per connection: GET or HEAD of /health or /ready, answered as the
    service's own routes answer them, then the connection closed.
    """

    def __init__(self, readiness: ReadinessCheck) -> None:
        self._readiness = readiness
        self._received = bytearray()
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._check: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(PROBE_READ_TIMEOUT, self._transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        if self._check is not None:
            self._check.cancel()  # the readiness check itself is shielded and goes on

    def data_received(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing() or self._check is not None:
            return
        self._received += data
        head, complete, _ = bytes(self._received).partition(b"\r\n\r\n")
        if len(head) > _PROBE_MAX_REQUEST:
            self._answer(431, to_json({"detail": "the request's headers are too large"}))
            return
        if not complete:
            return
        method, _, rest = head.partition(b"\r\n")[0].partition(b" ")
        path = rest.partition(b" ")[0].partition(b"?")[0]
        bodiless = method == b"HEAD"
        if method not in (b"GET", b"HEAD"):
            self._answer(405, to_json({"detail": "the probes answer GET and HEAD"}))
        elif path == b"/health":
            self._answer(200, to_json({"status": "ok"}), bodiless=bodiless)
        elif path == b"/ready":
            self._check = asyncio.create_task(self._ready(bodiless))
        else:
            self._answer(404, to_json({"detail": "this port answers /health and /ready"}))

    async def _ready(self, bodiless: bool) -> None:
        try:
            await self._readiness.confirm()
        except DatabaseUnavailable:
            retry_after = random.choice((b"1", b"2", b"3"))
            self._answer(503, _UNAVAILABLE_BODY, bodiless=bodiless, retry_after=retry_after)
        else:
            self._answer(200, to_json({"status": "ready"}), bodiless=bodiless)

    def _answer(
        self, status_code: int, body: bytes, *, bodiless: bool = False, retry_after: bytes = b""
    ) -> None:
        assert self._transport is not None
        if self._transport.is_closing():
            return
        head = (
            f"HTTP/1.1 {status_code} {HTTPStatus(status_code).phrase}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "cache-control: no-store\r\nconnection: close\r\n"
        ).encode()
        if retry_after:
            head += b"retry-after: " + retry_after + b"\r\n"
        self._transport.write(head + b"\r\n" + (b"" if bodiless else body))
        self._transport.close()


@asynccontextmanager
async def open_probes(app: FastAPI, settings: ProbeSettings) -> AsyncIterator[None]:
    """Answer the probes on ``PROBE_PORT`` while the app runs, if it is set."""
    if settings.probe_port is None:
        yield
        return
    readiness: ReadinessCheck = app.state.readiness
    server = await asyncio.get_running_loop().create_server(
        lambda: _ProbeProtocol(readiness), port=settings.probe_port, reuse_port=True
    )
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


# --- Profiling --------------------------------------------------------------------------


class ProfilingSettings(PartSettings):
    """Whether a request may ask for its profile (development only)."""

    profiling_enabled: bool = False


class ProfileRequest:
    """Answers a request that asks ``?profile=1`` with pyinstrument's report of it (HTML, or
    plain text for ``?profile=text``) instead of its response.

    For development: ``create_app`` adds it only when ``PROFILING_ENABLED`` is true, so in
    production the parameter means nothing and costs nothing. The request runs in full,
    writes included; ``x-profiled-status`` carries the status it would have answered.
    One request is profiled at a time, since every profiler samples the whole thread;
    others asking meanwhile get a 503 with Retry-After.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._profiling = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        asked = parse_qs(scope["query_string"].decode("latin-1")).get("profile", [""])[-1]
        if asked not in _PROFILE_FORMATS:
            await self.app(scope, receive, send)
            return
        if self._profiling:
            await send({"type": "http.response.start", "status": 503, "headers": _PROFILER_BUSY})
            await send({"type": "http.response.body", "body": _PROFILER_BUSY_BODY})
            return
        from pyinstrument import Profiler

        status_code = 500

        async def hold_response(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]

        # pyinstrument's own 1 ms interval, not less: a sample taken after a shorter interval
        # than its own cost (a deep stack, a busy machine) makes every next call a sample,
        # and the request crawls while its samples fill the memory.
        profiler = Profiler(interval=0.001, async_mode="enabled")
        self._profiling = True
        profiler.start()
        try:
            await self.app(scope, receive, hold_response)
        finally:
            profiler.stop()
            self._profiling = False
        if _PROFILE_FORMATS[asked] == "text":
            body = profiler.output_text(unicode=True, color=False).encode()
            media_type = b"text/plain; charset=utf-8"
        else:
            body = profiler.output_html().encode()
            media_type = b"text/html; charset=utf-8"
        headers = [
            (b"content-type", media_type),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            (b"x-profiled-status", str(status_code).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def request_profiler(app: FastAPI, settings: ProfilingSettings) -> list[Middleware]:
    """The profiler, if ``PROFILING_ENABLED`` is true."""
    if not settings.profiling_enabled:
        return []
    if importlib.util.find_spec("pyinstrument") is None:
        raise SettingsError(
            "PROFILING_ENABLED=true needs pyinstrument: pip install pyinstrument "
            "(the dev group has it)"
        )
    return [Middleware(ProfileRequest)]


_PROFILE_FORMATS = {"1": "html", "html": "html", "text": "text"}
_PROFILER_BUSY_BODY = b'{"detail":"another request is being profiled; retry after Retry-After"}'
_PROFILER_BUSY = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_PROFILER_BUSY_BODY)).encode()),
    (b"retry-after", b"1"),
    (b"cache-control", b"no-store"),
]


# --- Access -----------------------------------------------------------------------------
# Who may call each route. Callers send bearer tokens (RFC 6750): JWTs as RFC 9068 profiles
# them, issued by an identity provider and checked here, against its published keys (or, in
# development and tests, a shared secret). Every route declares its rule with @access (For
# your routes); the check runs before the route's own dependencies, sends no SQL statement,
# and makes no network call on the request path.


class AccessSettings(PartSettings):
    """Where the keys that sign callers' tokens come from, and what a token must say."""

    # production refuses to start without AUTH_JWKS_URL or AUTH_SECRET. development, with
    # neither, checks tokens against a secret made on this machine (DEVELOPMENT_SECRET_FILE),
    # which dev_token.py signs with.
    environment: Literal["development", "production"] = "development"
    # The identity provider's JSON Web Key Set: RS256, ES256 and EdDSA keys.
    auth_jwks_url: str | None = None
    # A shared HS256 secret, for development and tests; 32 bytes at least (RFC 7518).
    auth_secret: SecretStr | None = Field(default=None, min_length=32)
    # What a token's iss must be (required with AUTH_JWKS_URL) and what its aud must hold.
    auth_issuer: str | None = None
    auth_audience: str = "my_service"
    # Seconds of clock difference allowed on exp and nbf.
    auth_leeway: float = Field(default=30.0, ge=0, le=300)
    # Seconds to fetch the key set, and at least between two fetches for an unknown key id.
    auth_jwks_timeout: float = Field(default=5.0, gt=0, le=60)
    auth_jwks_refresh_interval: float = Field(default=60.0, ge=1, le=86_400)
    # A longer Authorization header is refused unread; verified tokens kept, until they expire.
    auth_max_token_bytes: int = Field(default=8192, ge=256, le=65_536)
    auth_verified_tokens: int = Field(default=10_000, ge=0, le=1_000_000)

    @field_validator("auth_jwks_url", "auth_secret", "auth_issuer", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # AUTH_SECRET= in .env leaves the secret unset, as leaving the line out does.
        return None if value == "" else value

    @field_validator("auth_jwks_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is None:
            return value
        url = httpx.URL(value)
        local = url.host in ("localhost", "127.0.0.1", "::1")
        if url.scheme != "https" and not (url.scheme == "http" and local):
            raise ValueError("want an https:// URL (http:// only on localhost)")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> Self:
        if self.auth_jwks_url is not None and self.auth_secret is not None:
            raise ValueError("set AUTH_JWKS_URL (production) or AUTH_SECRET, not both")
        if self.auth_jwks_url is not None and not self.auth_issuer:
            raise ValueError("AUTH_JWKS_URL needs AUTH_ISSUER: the iss its tokens carry")
        if self.environment == "production":
            if self.auth_jwks_url is None and self.auth_secret is None:
                raise ValueError(
                    "ENVIRONMENT=production needs keys to check tokens with: set AUTH_JWKS_URL "
                    "(with AUTH_ISSUER and AUTH_AUDIENCE) to your identity provider's key set"
                )
            if "auth_audience" not in self.model_fields_set:
                raise ValueError(
                    "ENVIRONMENT=production needs AUTH_AUDIENCE: the audience your identity "
                    "provider issues this service's tokens for"
                )
        return self


# The secret a development service checks tokens against when no key source is set: made at
# random on first use, kept beside .env, never committed (.gitignore) or built into an image
# (.dockerignore).
DEVELOPMENT_SECRET_FILE = Path(".my_service-development-secret")


def development_secret() -> bytes:
    """This machine's development secret, made on first use; safe for several processes."""
    with suppress(FileNotFoundError):
        return DEVELOPMENT_SECRET_FILE.read_bytes()
    made = DEVELOPMENT_SECRET_FILE.with_name(f"{DEVELOPMENT_SECRET_FILE.name}.{os.getpid()}")
    made.write_bytes(secrets.token_urlsafe(48).encode())
    made.chmod(0o600)
    try:
        # A link fails where the file exists: the first process's secret stays everyone's.
        DEVELOPMENT_SECRET_FILE.hardlink_to(made)
    except FileExistsError:
        pass
    finally:
        made.unlink()
    return DEVELOPMENT_SECRET_FILE.read_bytes()


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent the request: the token's subject, and the scopes it was granted."""

    subject: str
    scopes: frozenset[str]


# A public route's caller: it sent no token, or one nobody checked.
ANONYMOUS = Caller(subject="", scopes=frozenset())


@dataclass(frozen=True, slots=True)
class Access:
    """A route's rule (see ``access``): whether it needs a valid token, and which scopes."""

    authenticated: bool
    scopes: frozenset[str] = frozenset()


PUBLIC = Access(authenticated=False)
AUTHENTICATED = Access(authenticated=True)
_rules: dict[Callable[..., Any], Access] = {}


def access_of(endpoint: Callable[..., Any]) -> Access | None:
    """The access rule declared for ``endpoint``, or None."""
    return _rules.get(endpoint)


# Signed with the provider's keys only: never HS256, so a public key cannot be used as a
# shared secret, and never "none".
_ASYMMETRIC = frozenset({"RS256", "ES256", "EdDSA"})
# Scopes as RFC 9068 sends them (scope, one string), as Entra ID does (scp), and as Auth0
# does for its API permissions (permissions, a list).
_SCOPE_CLAIMS = ("scope", "scp", "permissions")


@dataclass(slots=True)
class AccessStats:
    """What the token checks did since the app started."""

    tokens_verified: int = counter_field("Tokens whose signature and claims were checked")
    tokens_refused: int = counter_field("Requests refused with a 401 or a 403")
    key_fetches: int = counter_field("Fetches of the identity provider's key set")
    key_fetch_failures: int = counter_field(
        "Fetches of the key set that failed: keys already loaded stay in use"
    )
    keys: int = gauge_field("Keys loaded to check tokens with")


class KeysNotLoaded(Exception):
    """No key to check tokens with has been loaded yet: a 503, not a refusal."""


class _Refused(Exception):
    def __init__(self, description: str) -> None:
        self.description = description


class KeySet:
    """The identity provider's keys, by key id: fetched at start-up, and again when a token
    names a key id not seen yet, one fetch at a time and one per refresh interval at most.
    A failed fetch keeps the keys already loaded.
    """

    def __init__(self, settings: AccessSettings, stats: AccessStats) -> None:
        assert settings.auth_jwks_url is not None
        self.url = settings.auth_jwks_url
        self.timeout = settings.auth_jwks_timeout
        self.interval = settings.auth_jwks_refresh_interval
        self.stats = stats
        self.keys: dict[str | None, jwt.PyJWK] = {}
        self.loaded = False
        self._fetching: asyncio.Task[None] | None = None
        self._retrying: asyncio.Task[None] | None = None
        self._last_fetch = -math.inf
        self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)

    async def start(self) -> None:
        """The first fetch; on failure the service starts anyway and keeps trying."""
        await self._fetch_once()
        if not self.loaded:
            self._retrying = asyncio.create_task(self._retry())

    async def aclose(self) -> None:
        for task in (self._retrying, self._fetching):
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        await self._client.aclose()

    async def key(self, key_id: str | None) -> jwt.PyJWK:
        """The key named ``key_id``; refused when the provider does not publish it."""
        key = self.keys.get(key_id)
        if key is not None:
            return key
        if not self.loaded:
            raise KeysNotLoaded
        if time.monotonic() - self._last_fetch >= self.interval:
            await self._fetch_once()
        key = self.keys.get(key_id)
        if key is None:
            raise _Refused("the token's key id is not one of the issuer's keys")
        return key

    async def _fetch_once(self) -> None:
        # One fetch for every request waiting on it; a request that goes away does not
        # cancel it for the others.
        if self._fetching is None:
            self._last_fetch = time.monotonic()
            self._fetching = asyncio.create_task(self._fetch())
            self._fetching.add_done_callback(self._fetched)
        await asyncio.shield(self._fetching)

    def _fetched(self, task: "asyncio.Task[None]") -> None:
        self._fetching = None

    async def _fetch(self) -> None:
        self.stats.key_fetches += 1
        try:
            keys = await self._download()
        except Exception as exc:
            # The reason, never the content: a key set is no secret, but its errors quote it.
            self.stats.key_fetch_failures += 1
            logger.warning("cannot load the key set from %s: %s", self.url, type(exc).__name__)
            return
        self.keys = keys
        self.loaded = True
        self.stats.keys = len({id(key) for key in keys.values()})

    async def _download(self) -> dict[str | None, jwt.PyJWK]:
        async with self._client.stream("GET", self.url) as response:
            response.raise_for_status()
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > _MAX_KEY_SET_BYTES:
                    raise ValueError("the key set is too large")
        key_set = jwt.PyJWKSet.from_dict(orjson.loads(body))
        keys: dict[str | None, jwt.PyJWK] = {
            key.key_id: key for key in key_set.keys if key.algorithm_name in _ASYMMETRIC
        }
        if not keys:
            raise ValueError("the key set holds no RS256, ES256 or EdDSA key")
        if len(keys) == 1:
            # A token without a key id may use the only key.
            keys[None] = next(iter(keys.values()))
        return keys

    async def _retry(self) -> None:
        delay = 1.0
        while not self.loaded:
            await asyncio.sleep(delay)
            await self._fetch_once()
            delay = min(delay * 2, self.interval)


_MAX_KEY_SET_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class _Verified:
    caller: Caller
    expires_at: float


class TokenVerifier:
    """Checks bearer tokens: their signature, ``iss``, ``aud``, ``exp`` and ``nbf``, and
    keeps each verified one's caller until it expires, so a caller's next requests cost a
    dictionary lookup.
    """

    def __init__(self, settings: AccessSettings, stats: AccessStats) -> None:
        self.settings = settings
        self.stats = stats
        self.key_set = KeySet(settings, stats) if settings.auth_jwks_url is not None else None
        self._secret: bytes | None = None
        if settings.auth_secret is not None:
            self._secret = settings.auth_secret.get_secret_value().encode()
        elif self.key_set is None:
            self._secret = development_secret()
            logger.warning(
                "AUTH_JWKS_URL and AUTH_SECRET are not set: tokens are checked against the "
                "development secret in %s (mint one with dev_token.py); production needs "
                "AUTH_JWKS_URL",
                DEVELOPMENT_SECRET_FILE,
            )
        self._algorithms = _ASYMMETRIC if self.key_set is not None else frozenset({"HS256"})
        self._required = ["exp", "sub", "aud", *(["iss"] if settings.auth_issuer else [])]
        self._verified: TLRUCache[str, _Verified] = TLRUCache(
            maxsize=settings.auth_verified_tokens,
            ttu=lambda _token, verified, _now: verified.expires_at,
            timer=time.time,
        )
        stats.keys = 0 if self.key_set is not None else 1

    async def caller(self, authorization: str | None) -> Caller:
        """The caller an ``Authorization`` header names; ``_Refused`` if it names none."""
        if authorization is None:
            raise _Refused("")
        if len(authorization) > self.settings.auth_max_token_bytes:
            raise _Refused("the token is too large")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token or " " in token:
            raise _Refused("want an Authorization header of the form: Bearer <token>")
        verified = self._verified.get(token)
        if verified is not None:
            return verified.caller
        verified = await self._verify(token)
        if self.settings.auth_verified_tokens:
            self._verified[token] = verified
        return verified.caller

    async def _verify(self, token: str) -> _Verified:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise _Refused("the token is not a JWT") from None
        algorithm = header.get("alg")
        if algorithm not in self._algorithms:
            accepted = ", ".join(sorted(self._algorithms))
            raise _Refused(f"the token's algorithm is not accepted; want {accepted}")
        key: jwt.PyJWK | bytes
        if self.key_set is not None:
            key_id = header.get("kid")
            key = await self.key_set.key(key_id if isinstance(key_id, str) else None)
        else:
            assert self._secret is not None
            key = self._secret
        self.stats.tokens_verified += 1
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.settings.auth_audience,
                issuer=self.settings.auth_issuer,
                leeway=self.settings.auth_leeway,
                options={"require": self._required},
            )
        except jwt.ExpiredSignatureError:
            raise _Refused("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise _Refused("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise _Refused("the token is not for this service (aud)") from None
        except jwt.InvalidIssuerError:
            raise _Refused("the token is not from the expected issuer (iss)") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _Refused(f"the token has no {exc.claim} claim") from None
        except jwt.InvalidSignatureError:
            raise _Refused("the token's signature does not verify") from None
        except (jwt.InvalidTokenError, jwt.InvalidKeyError):
            raise _Refused("the token is invalid") from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise _Refused("the token's sub is not a string")
        caller = Caller(subject=subject, scopes=_scopes(claims))
        return _Verified(caller, float(claims["exp"]) + self.settings.auth_leeway)


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    scopes: set[str] = set()
    for claim in _SCOPE_CLAIMS:
        value = claims.get(claim)
        if isinstance(value, str):
            scopes.update(value.split())
        elif isinstance(value, list):
            scopes.update(scope for scope in value if isinstance(scope, str))
    return frozenset(scopes)


async def authorize(request: Request) -> Caller:
    """The app's first dependency on every route: the caller, held to the route's rule.

    A route without a rule is held to ``AUTHENTICATED``, and fails its tests. As a route's
    own parameter (``CallerDep``) it is the same call, made once per request.
    """
    route = request.scope.get("route")
    rule = _rules.get(getattr(route, "endpoint", None), AUTHENTICATED)  # type: ignore[arg-type]
    if not rule.authenticated:
        return ANONYMOUS
    verifier: TokenVerifier = request.app.state.access
    try:
        caller = await verifier.caller(request.headers.get("authorization"))
    except _Refused as refused:
        verifier.stats.tokens_refused += 1
        raise _unauthorized(refused.description) from None
    missing = rule.scopes - caller.scopes
    if missing:
        verifier.stats.tokens_refused += 1
        needed = " ".join(sorted(rule.scopes))
        raise HTTPException(
            403,
            f"the token lacks the scope this route needs: {needed}",
            {"www-authenticate": f'Bearer error="insufficient_scope", scope="{needed}"'},
        )
    return caller


def _unauthorized(description: str) -> HTTPException:
    if not description:
        # No credentials at all: RFC 6750 has the challenge carry no error code.
        return HTTPException(401, "this route needs a bearer token", {"www-authenticate": "Bearer"})
    return HTTPException(
        401,
        description,
        {"www-authenticate": f'Bearer error="invalid_token", error_description="{description}"'},
    )


def install_access(app: FastAPI, routers: Sequence[APIRouter]) -> None:
    """Declare each route's rule in OpenAPI, and answer 503 while no keys are loaded.

    (``build_app`` makes ``authorize`` the app's first dependency.)
    """
    document_access(routers)
    app.add_exception_handler(KeysNotLoaded, _keys_not_loaded)


_KEYS_NOT_LOADED_BODY = (
    b'{"detail":"no keys to check tokens with are loaded yet; retry after the delay in '
    b'Retry-After"}'
)


async def _keys_not_loaded(request: Request, exc: Exception) -> Response:
    return unavailable_response(_KEYS_NOT_LOADED_BODY)


@asynccontextmanager
async def open_access(app: FastAPI, settings: AccessSettings) -> AsyncIterator[None]:
    """Load the keys tokens are checked with, for as long as the app runs."""
    verifier = app.state.access = TokenVerifier(settings, AccessStats())
    if verifier.key_set is None:
        yield
        return
    await verifier.key_set.start()
    try:
        yield
    finally:
        await verifier.key_set.aclose()


def api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    """Every API route of ``routes``, those of included routers too."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        # Recent FastAPI versions keep an included router whole instead of copying its routes.
        elif isinstance(included := getattr(route, "original_router", None), APIRouter):
            yield from api_routes(included.routes)


def document_access(routers: Sequence[APIRouter]) -> None:
    """Declare each route's rule in OpenAPI: the bearer scheme and its scopes, so that
    /docs offers Authorize and a client generator sees what each route needs.
    """
    for route in api_routes(route for router in routers for route in router.routes):
        rule = _rules.get(route.endpoint, AUTHENTICATED)
        if rule.authenticated:
            security = [{BEARER_SCHEME: sorted(rule.scopes)}]
            route.openapi_extra = {**(route.openapi_extra or {}), "security": security}


BEARER_SCHEME = "bearerAuth"


def mint_token(
    settings: AccessSettings,
    subject: str,
    scopes: Iterable[str] = (),
    *,
    expires_in: float = 3600,
    **claims: Any,
) -> str:
    """A token signed with ``AUTH_SECRET``, or the development secret: for development and
    tests. Production tokens come from the identity provider.
    """
    if settings.auth_jwks_url is not None:
        raise ValueError("AUTH_JWKS_URL is set: tokens come from the identity provider")
    secret = (
        settings.auth_secret.get_secret_value().encode()
        if settings.auth_secret is not None
        else development_secret()
    )
    now = time.time()
    payload: dict[str, Any] = {
        "sub": subject,
        "aud": settings.auth_audience,
        "iat": int(now),
        "exp": int(now + expires_in),
        "scope": " ".join(sorted(scopes)),
    }
    if settings.auth_issuer:
        payload["iss"] = settings.auth_issuer
    return jwt.encode({**payload, **claims}, secret, algorithm="HS256")


# --- Error contract ---------------------------------------------------------------------
# The error contract. 400, 404, 408, 409, 413 and 503 answer {"detail": "<message>"}; every
# 422 has FastAPI's validation-error shape, whether the request was malformed or names a
# row that does not exist, so clients parse one format. Routes list their statuses in
# OpenAPI: pass responses=error_responses(404) to a route that answers 404; create_app adds
# 400, 408 and 413 to every route that takes a body and 503 to every guarded route. A
# failure nothing handled is a 500 {"detail": ..., "request_id": ...} (see RequestObserver).
#
# A constraint the database enforces is answered here for every route, yours included:
# a unique one is a 409 (the row conflicts with one stored: the same request will not
# succeed until that row changes); a foreign key that rows still hold is a 409 naming
# their table (a DELETE of an item that comments refer to); a foreign key to a row that
# does not exist, a NOT NULL or a CHECK is a 422 naming the field where it can (the
# request's value is what is wrong). Catch IntegrityError in a route for words of its own.


# Echoing a 10 MB string back in a 422 costs as much as receiving it; longer inputs are left
# out of the error (its loc still names them).
MAX_ECHOED_INPUT = 200


async def _validation_failed(request: Request, exc: Exception) -> Response:
    """Answer a RequestValidationError with FastAPI's 422 body, without echoing long inputs.

    A body that is not JSON fails before any dependency runs, so the caller is held to the
    route's rule here first: whoever the route refuses learns that, not how it reads bodies.
    """
    assert isinstance(exc, RequestValidationError)
    if [error.get("type") for error in exc.errors()] == ["json_invalid"]:
        try:
            await authorize(request)
        except HTTPException as refused:
            response = json_response({"detail": refused.detail}, refused.status_code)
            response.headers.update(refused.headers or {})
            return response
        except KeysNotLoaded as unavailable:
            return await _keys_not_loaded(request, unavailable)
    errors = jsonable_encoder(exc.errors())
    for error in errors:
        if "input" in error and not _echoable(error["input"]):
            del error["input"]
    return json_response({"detail": errors}, 422)


def _echoable(value: object) -> bool:
    try:
        return len(to_json(value)) <= MAX_ECHOED_INPUT
    except PydanticSerializationError:  # unpaired surrogates cannot be encoded
        return False


async def _constraint_violated(request: Request, exc: Exception) -> Response:
    """Answer an IntegrityError with a 409 or a 422 that says which constraint refused it."""
    assert isinstance(exc, IntegrityError)
    violation = _Violation.of(exc)
    if violation is None:
        raise exc  # a kind the contract does not know: a 500, logged with its request id
    if violation.kind == "unique":
        what = " and ".join(violation.columns) or f"value ({violation.constraint})"
        detail = f"{violation.table} already has a row with this {what}"
        return json_response({"detail": detail}, 409)
    if violation.referring is not None:
        referring = " and ".join(violation.referring) or "another table"
        detail = f"rows of {referring} still refer to this {violation.table or 'row'}"
        return json_response({"detail": detail}, 409)
    column = violation.columns[0] if len(violation.columns) == 1 else None
    loc = _located(request, column)
    if violation.kind == "foreign_key":
        value = _given_value(request, loc, violation)
        target = _referred_column(violation.table, column)
        message = "refers to a row that does not exist"
        if target is not None:
            referred_table, referred_column = target
            given = f"this {referred_column}" if value is None else f"{referred_column} {value}"
            message = f"no {referred_table} has {given}"
        error = unprocessable(loc, message, value, "not_found")
    elif violation.kind == "not_null":
        error = unprocessable(loc, "want a value, not null", None, "not_null")
    else:
        message = f"breaks the rule {violation.constraint} of {violation.table}"
        error = unprocessable(loc, message, None, "check")
    return await _validation_failed(request, error)


@dataclass(frozen=True, slots=True)
class _Violation:
    """A constraint the database enforced, and as much as its error says of it."""

    kind: Literal["unique", "foreign_key", "check", "not_null"]
    # The table of the row that broke it (SQLite names none for a foreign key: the table
    # the statement wrote), and its columns when the error names them.
    table: str
    columns: tuple[str, ...]
    constraint: str
    # The key's value, when the error gives it (PostgreSQL's does).
    value: str | None = None
    # For a foreign key whose rows still refer to the row deleted: the tables they are in.
    referring: tuple[str, ...] | None = None

    @classmethod
    def of(cls, exc: IntegrityError) -> "_Violation | None":
        """What ``exc`` says, or None for a kind of violation this contract does not know."""
        error = exc.orig
        code = getattr(error, "sqlstate", None) or getattr(error, "sqlite_errorname", None)
        kind = _CONSTRAINT_KINDS.get(str(code))
        if kind is None:
            return None
        written = _WRITTEN_TABLE.match(exc.statement or "")
        verb, table = (written[1].split()[0].upper(), written[2]) if written else ("", "")
        # asyncpg's error has the fields; SQLAlchemy's adapter raises its own from it.
        server = error if hasattr(error, "table_name") else getattr(error, "__cause__", None)
        if hasattr(server, "table_name"):
            broken = getattr(server, "table_name", None) or table
            key = _KEY.search(getattr(server, "detail", None) or "")
            named = getattr(server, "column_name", None)
            columns = (named,) if named else tuple(key[1].split(", ")) if key else ()
            constraint = getattr(server, "constraint_name", None) or ""
            if kind == "foreign_key" and (verb == "DELETE" or broken != table):
                return cls(kind, table, (), constraint, referring=(broken,))
            return cls(kind, broken, columns, constraint, key[2] if key else None)
        # SQLite: "UNIQUE constraint failed: owner.name", "CHECK constraint failed: <rule>",
        # and "FOREIGN KEY constraint failed", naming nothing.
        said = str(error).partition(": ")[2]
        if kind in ("unique", "not_null") and "." in said:
            names = [name.strip().partition(".") for name in said.split(",")]
            return cls(kind, names[0][0], tuple(name[2] for name in names), said)
        if kind == "foreign_key" and verb == "DELETE":
            return cls(kind, table, (), said, referring=_tables_referring_to(table))
        if kind == "foreign_key":
            return cls(kind, table, _foreign_key_columns(table), said)
        return cls(kind, table, (), said)


_CONSTRAINT_KINDS: dict[str, Literal["unique", "foreign_key", "check", "not_null"]] = {
    "23505": "unique",
    "23503": "foreign_key",
    "23514": "check",
    "23502": "not_null",
    "SQLITE_CONSTRAINT_UNIQUE": "unique",
    "SQLITE_CONSTRAINT_PRIMARYKEY": "unique",
    "SQLITE_CONSTRAINT_FOREIGNKEY": "foreign_key",
    "SQLITE_CONSTRAINT_CHECK": "check",
    "SQLITE_CONSTRAINT_NOTNULL": "not_null",
}
# The statement's verb and table, as SQLAlchemy writes them (quoted when they must be).
_WRITTEN_TABLE = re.compile(
    r'\s*(INSERT\s+(?:OR\s+\w+\s+)?INTO|UPDATE|DELETE\s+FROM)\s+"?([^\s"(]+)', re.IGNORECASE
)
# PostgreSQL's detail gives the key: "Key (owner_id)=(7) is not present in table ...".
_KEY = re.compile(r"\(([^()]+)\)=\(([^()]*)\)")


def _tables_referring_to(table: str) -> tuple[str, ...]:
    # SQLite does not say which rows still refer; the models say which tables may, those
    # whose foreign key neither deletes nor clears its rows with the row it refers to.
    return tuple(
        sorted(
            {
                other.name
                for other in SQLModel.metadata.tables.values()
                for key in other.foreign_keys
                if key.target_fullname.rpartition(".")[0] == table
                and (key.ondelete or "").upper() not in ("CASCADE", "SET NULL", "SET DEFAULT")
            }
        )
    )


def _foreign_key_columns(table: str) -> tuple[str, ...]:
    found = SQLModel.metadata.tables.get(table)
    return tuple(key.parent.name for key in found.foreign_keys) if found is not None else ()


def _referred_column(table: str, column: str | None) -> tuple[str, str] | None:
    found = SQLModel.metadata.tables.get(table)
    if found is None or column is None or column not in found.columns:
        return None
    for key in found.columns[column].foreign_keys:
        referred_table, _, referred_column = key.target_fullname.rpartition(".")
        return referred_table, referred_column
    return None


def _given_value(request: Request, loc: Sequence[str], violation: _Violation) -> Any:
    # The value as the request gave it, when the request or the error says what it was.
    source, name = loc[0], loc[-1]
    given: str | None = violation.value
    if source == "path":
        given = request.path_params.get(name)
    elif source == "query":
        given = request.query_params.get(name)
    return int(given) if given is not None and _DIGITS.fullmatch(given) else given


def _located(request: Request, column: str | None) -> tuple[str, ...]:
    # Where the request gave the column's value, named as FastAPI names its own errors.
    if column is None:
        return ("body",)
    if column in request.path_params:
        return ("path", column)
    if column in request.query_params:
        return ("query", column)
    return ("body", column)


def install_error_contract(app: FastAPI) -> None:
    """Answer every 422 in FastAPI's shape, a violated constraint with a 409 or a 422, and
    list every route's statuses in OpenAPI.
    """
    app.add_exception_handler(RequestValidationError, _validation_failed)
    app.add_exception_handler(IntegrityError, _constraint_violated)
    _document_errors(app)


def _document_errors(app: FastAPI) -> None:
    """List the statuses every route may answer in its OpenAPI responses.

    400 (a body that is not UTF-8), 408 (too slow) and 413 (too large) for every route that
    takes a body, 401 for every route that needs a token and 403 for one that needs scopes
    (see Access), 503 (overloaded) for every guarded route.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas.setdefault("ErrorMessage", ErrorMessage.model_json_schema())
            error = {
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/ErrorMessage"},
                    },
                },
            }
            schema["components"].setdefault("securitySchemes", {})[BEARER_SCHEME] = {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
            }
            for path, operations in schema.get("paths", {}).items():
                for operation in operations.values():
                    responses = operation.setdefault("responses", {})
                    for requirement in operation.get("security", []):
                        responses.setdefault("401", {"description": "Unauthorized", **error})
                        if requirement.get(BEARER_SCHEME):
                            responses.setdefault("403", {"description": "Forbidden", **error})
                    if "requestBody" in operation:
                        # FastAPI answers 400 to a body that is not even text.
                        responses.setdefault("400", {"description": "Bad Request", **error})
                        responses.setdefault("408", {"description": "Request Timeout", **error})
                        responses.setdefault("413", {"description": "Content Too Large", **error})
                    if path not in UNGUARDED_PATHS:
                        responses.setdefault("503", {"description": "Overloaded", **error})
            app.openapi_schema = schema
        return app.openapi_schema

    # FastAPI's documented way to extend the schema it generates.
    app.openapi = openapi  # type: ignore[method-assign]


# --- App factory ------------------------------------------------------------------------


class KitSettings(
    DatabaseSettings,
    RequestLogSettings,
    CacheSettings,
    OffloadSettings,
    GuardSettings,
    BodyLimitSettings,
    SlowClientSettings,
    ProbeSettings,
    ProfilingSettings,
    AccessSettings,
):
    """The kit's settings: every part's own, in one class. ``Settings``, below the fence,
    adds the service's. Build them with ``Settings.from_env()``, whose error names each
    refused variable.
    """


async def health() -> dict[str, str]:
    """Answer without touching the database, so load never fails the health check."""
    return {"status": "ok"}


def build_app(
    settings: KitSettings,
    *,
    title: str,
    routers: Sequence[APIRouter],
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    """The app: the kit's parts around the service's ``routers``.

    ``lifespan`` is the service's own work that lives as long as the app: it starts once the
    engine, the cache and the offload pool are on ``app.state``, and stops before they go.
    """

    @asynccontextmanager
    async def kit_lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Started in this order, stopped in the reverse one.
        async with (
            open_database(app, settings),
            open_probes(app, settings),
            open_access(app, settings),
            open_cache(app, settings),
            open_offloader(app, settings),
            lifespan(app) if lifespan is not None else nullcontext(),
        ):
            yield

    # Every route's first dependency: who may call it is checked before anything else runs.
    app = FastAPI(title=title, lifespan=kit_lifespan, dependencies=[Depends(authorize)])
    app.state.settings = settings
    app.add_api_route("/health", access(PUBLIC)(query_budget(0)(health)))
    install_metrics(app)
    # The middleware, outermost first: the order in which a request meets them. Each part
    # keeps its state and counters on app.state, and one turned off adds nothing. (What
    # FastAPI(middleware=...) would take, given once the parts have put their state there.)
    app.user_middleware = [
        # A response the client does not read ends the request, wherever it waits.
        *send_deadline(app, settings),
        # A slow body is read here, before the guard gives the request a place.
        *body_limit(app, settings),
        # Before routing, body parsing and the session: a refused request costs none of
        # them, and no log line (the guard counts it).
        *overload_guard(app, settings),
        *request_observer(app, settings),
        # Inside the observer, so a profiled request still reports its queries in its
        # Server-Timing header.
        *request_profiler(app, settings),
    ]
    install_capacity(app)
    install_database(app)
    install_access(app, routers)
    install_error_contract(app)
    for router in routers:
        app.include_router(router)
    return app


# --- For your routes --------------------------------------------------------------------
# What your models and routes use of the kit, in one place: the dependencies, the two
# things every route declares (its budget and who may call it), the column and input types,
# the statements written once for both databases, and the answers. (Offloader,
# CoalescingRefresher and the cache's API are their parts'; see those sections.)

# A route's dependencies: the AUTOCOMMIT reads and a write's transaction (both on the
# driver), a session (SQLAlchemy's ORM), the cache, the offload pool, and the caller its
# token names (ANONYMOUS on a public route).
ReadsDep = Annotated[Reads, Depends(get_reads)]
WritesDep = Annotated[Transaction, Depends(get_writes)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
CacheDep = Annotated[AsyncTTLCache, Depends(get_cache)]
OffloadDep = Annotated[Offloader, Depends(get_offloader)]
CallerDep = Annotated[Caller, Depends(authorize)]


def query_budget(limit: int) -> Callable[[_Endpoint], _Endpoint]:
    """Declare how many SQL statements one call of a route may send.

    Requests over budget are logged with their statements, and the test client fails them.
    A streamed response's budget covers what it sends before its body starts; each later
    batch is the route's to bound, and its tests to count.
    """

    def declare(endpoint: _Endpoint) -> _Endpoint:
        _budgets[endpoint] = limit
        return endpoint

    return declare


# A scope as OAuth 2.0 spells one (RFC 6749): printable ASCII without spaces, quotes or
# backslashes, so that it fits a WWW-Authenticate challenge as it is.
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


def access(rule: Access | str, /, *scopes: str) -> Callable[[_Endpoint], _Endpoint]:
    """Declare who may call a route: ``@access(PUBLIC)``, ``@access(AUTHENTICATED)`` (any
    valid token), or ``@access("items:write")`` (a token holding every scope named).

    Checked before the route's own dependencies run: a refused request costs no statement.
    A route that declares nothing is held to AUTHENTICATED, and fails its tests.
    """
    if isinstance(rule, Access):
        if scopes:
            raise TypeError("name scopes alone, or PUBLIC or AUTHENTICATED alone")
        declared = rule
    else:
        named = (rule, *scopes)
        for scope in named:
            if not _SCOPE.fullmatch(scope):
                raise ValueError(f"{scope!r} is not a scope: want printable ASCII, no spaces")
        declared = Access(authenticated=True, scopes=frozenset(named))

    def declare(endpoint: _Endpoint) -> _Endpoint:
        _rules[endpoint] = declared
        return endpoint

    return declare


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and read back timezone-aware, on SQLite too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        # SQLite keeps no zone; the value was stored in UTC.
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    def result_processor(
        self, dialect: Dialect, coltype: object
    ) -> Callable[[Any], datetime | None] | None:
        # PostgreSQL's driver answers timestamptz with its zone: nothing to do for each row.
        if dialect.name == "postgresql":
            return None
        return super().result_processor(dialect, coltype)


BigKey = BigInteger().with_variant(Integer, "sqlite")
"""The type of keys and of the foreign keys that point to them."""


def key_column() -> "Column[int]":
    """A surrogate primary key: ``id: int | None = Field(default=None, sa_column=key_column())``.

    BIGINT identity on PostgreSQL, since an int4 key runs out at 2**31 rows and changing it
    later rewrites the table and every table that refers to it. On SQLite, INTEGER, which
    makes it the rowid; give the table ``{"sqlite_autoincrement": True}`` so that a deleted
    row's id is never handed out again (stored references and page cursors would then find
    another row).
    """
    return Column(BigKey, Identity(), primary_key=True)


# Statements are written once for both databases; the kit renders what differs for the one
# it runs on, so no route asks which that is.


def any_of(column: sa.SQLColumnExpression[Any], name: str) -> sa.ColumnElement[bool]:
    """``column`` is one of the list bound as ``name``: ``any_of(col(Item.id), "item_ids")``.

    ``= ANY(:name)`` on PostgreSQL, the list sent as one array: one statement text, and one
    prepared plan, whatever its length. An expanded ``IN (...)`` on SQLite, which has no
    arrays. An empty list matches no row on both.
    """
    # A model's attribute stands for its column; the statement cache keys on the column.
    element = column.expression if isinstance(column, QueryableAttribute) else column
    return _AnyOf(cast(sa.ColumnElement[Any], element), name)


class _AnyOf(sa.ColumnElement[bool]):
    # What the compiled-statement cache keys on: two lists of the same column and name are
    # one statement.
    _traverse_internals = [  # noqa: RUF012 (SQLAlchemy annotates it without ClassVar)
        ("column", InternalTraversal.dp_clauseelement),
        ("name", InternalTraversal.dp_string),
    ]
    type = Boolean()
    # A comparison, not a boolean column: SQLite would otherwise get "... IN (...) = 1".
    _is_implicitly_boolean = True

    def __init__(self, column: sa.ColumnElement[Any], name: str) -> None:
        self.column = column
        self.name = name


@compiles(_AnyOf)
def _in_list(element: _AnyOf, compiler: SQLCompiler, **kw: Any) -> str:
    listed: sa.BindParameter[Any] = sa.bindparam(element.name, expanding=True)
    return compiler.process(element.column.in_(listed), **kw)


@compiles(_AnyOf, "postgresql")
def _any_of_array(element: _AnyOf, compiler: SQLCompiler, **kw: Any) -> str:
    array = sa.bindparam(element.name, type_=ARRAY(element.column.type))
    return compiler.process(element.column == sa.any_(array), **kw)


def on_conflict_update(key: Sequence[str], columns: Sequence[str]) -> SyntaxExtension:
    """Make an INSERT an upsert: ``sa.insert(Summary).values(...).ext(on_conflict_update(
    ["owner_id"], ["item_count"]))`` updates ``columns`` of the row whose ``key`` (a
    unique index's columns) is taken, from the values the INSERT brought.

    ``ON CONFLICT (key) DO UPDATE SET column = excluded.column``, which PostgreSQL and
    SQLite both speak. On SQLite, an ``INSERT ... SELECT`` upsert needs a WHERE in its
    SELECT (without one, SQLite reads ON as a join's).
    """
    return _OnConflictUpdate(key, columns)


class _OnConflictUpdate(SyntaxExtension, sa.ClauseElement):
    _traverse_internals = [  # noqa: RUF012 (as above)
        ("key", InternalTraversal.dp_string_list),
        ("columns", InternalTraversal.dp_string_list),
    ]

    def __init__(self, key: Sequence[str], columns: Sequence[str]) -> None:
        self.key = list(key)
        self.columns = list(columns)

    def apply_to_insert(self, insert_stmt: sa.Insert) -> None:
        insert_stmt.apply_syntax_extension_point(self.append_replacing_same_type, "post_values")


@compiles(_OnConflictUpdate)
def _on_conflict_update(element: _OnConflictUpdate, compiler: SQLCompiler, **kw: Any) -> str:
    quote = compiler.preparer.quote
    key = ", ".join(quote(name) for name in element.key)
    updated = ", ".join(f"{quote(name)} = excluded.{quote(name)}" for name in element.columns)
    return f"ON CONFLICT ({key}) DO UPDATE SET {updated}"


class RowAnswer:
    """Builds ``model``'s answer from a row of ``statement`` by column name, keys in the
    model's field order: ``item_answer = RowAnswer(ItemRead, _ITEM_ROWS, given=["tags"])``,
    then ``item_answer(row, tags=tags)``.

    A field that is a model itself reads the columns named ``<field>_<its field>``
    (``owner_id`` and ``owner_name`` for ``owner: OwnerRead``); the ``given`` fields come
    with each call. Checked when built, so at import: a field the statement selects no
    column for is a TypeError naming it. Rows are not validated: they hold what the
    database's constraints allow, and model instances would only cost time.
    """

    def __init__(
        self, model: type[BaseModel], statement: sa.ReturnsRows, *, given: Sequence[str] = ()
    ) -> None:
        places = {name: index for index, name in enumerate(statement.exported_columns.keys())}
        self._plan: list[tuple[str, int | tuple[tuple[str, int], ...] | None]] = []
        missing: list[str] = []
        for name, info in model.model_fields.items():
            if name in given:
                self._plan.append((name, None))
                continue
            nested = info.annotation
            if isinstance(nested, type) and issubclass(nested, BaseModel):
                columns = [(field, f"{name}_{field}") for field in nested.model_fields]
                missing += [column for _, column in columns if column not in places]
                self._plan.append((name, tuple((f, places.get(c, -1)) for f, c in columns)))
            else:
                if name not in places:
                    missing.append(name)
                self._plan.append((name, places.get(name, -1)))
        unknown = sorted(set(given) - model.model_fields.keys())
        problems = [f"no column for {missing}: select them, labelled as named"] if missing else []
        problems += [f"{model.__name__} has no fields {unknown}"] if unknown else []
        if problems:
            selected = ", ".join(statement.exported_columns.keys())
            raise TypeError(f"{model.__name__} from {selected}: {'; '.join(problems)}")
        # The answer as one dict display, compiled once from the field names and places
        # checked above: {"id": row[0], "owner": {"id": row[6], ...}, "tags": given["tags"]}.
        # A row is then answered in a third of the time a loop over the fields took.
        entries = []
        for name, place in self._plan:
            if place is None:
                value = f"given[{name!r}]"
            elif isinstance(place, int):
                value = f"row[{place}]"
            else:
                value = "{" + ", ".join(f"{field!r}: row[{at}]" for field, at in place) + "}"
            entries.append(f"{name!r}: {value}")
        self._build: Callable[[Sequence[Any], dict[str, Any]], dict[str, Any]] = eval(
            "lambda row, given: {" + ", ".join(entries) + "}"
        )

    def __call__(self, row: Sequence[Any], /, **given: Any) -> dict[str, Any]:
        return self._build(row, given)


# Every value the API accepts must be one the database can store: a value it cannot is a
# 500 at best and a wrong row at worst. These types say so once; use them for every field,
# path and query parameter, in your models as in the example's. Their refusals are
# PydanticCustomErrors, so a 422 reads {"type": "whole_number", "msg": "want a whole
# number"}, not pydantic's "Value error, ..." with an empty ctx.


def _whole_number(value: object) -> object:
    # Lax integer parsing would take true as 1 and 2.0 as 2. Text passes on to be parsed:
    # path and query parameters arrive as text. Only digits, though: the parser would also
    # take spaces and line breaks around them, a plus sign and underscores ("\r\n1" as 1).
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise PydanticCustomError("whole_number", "want a whole number")
    if isinstance(value, str) and not _DIGITS.fullmatch(value):
        raise PydanticCustomError("whole_number", "want a whole number, written in digits only")
    return value


_DIGITS = re.compile(r"-?[0-9]+")


def _storable_text(value: str) -> str:
    if "\x00" in value:
        raise PydanticCustomError("storable_text", "text may not contain the NUL character")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise PydanticCustomError(
            "storable_text", "text may not contain unpaired surrogates"
        ) from None
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("not_blank", "want at least one character that is not whitespace")
    return value


WholeNumber = BeforeValidator(_whole_number)
"""Refuses booleans and fractions; put it last in ``Annotated[int, Field(ge=..), ...]``."""
# The bounds are the column types': a key is BIGINT, other integer columns are int4 on
# PostgreSQL (SQLite stores 8 bytes, so it holds both). `lt` rather than `le`: OpenAPI
# tools read bounds as floats, and 2**63 is one, where 2**63 - 1 is not.
Id = Annotated[int, Field(ge=1, lt=2**63), WholeNumber]
"""A row's key, as a field, path or query parameter: 1 to 2**63 - 1."""
Cursor = Annotated[int, Field(ge=0, lt=2**63), WholeNumber]
"""The last key of the previous page, 0 for the first page."""
Int4 = Annotated[int, Field(ge=-(2**31), lt=2**31), WholeNumber]
"""A value of an int4 column (SQLAlchemy's Integer on PostgreSQL)."""
NonNegativeInt4 = Annotated[int, Field(ge=0, lt=2**31), WholeNumber]
"""A count or an amount in an int4 column: 0 to 2**31 - 1."""
PlainText = Annotated[str, AfterValidator(_storable_text)]
"""Text that PostgreSQL and SQLite store as given: no NUL, no unpaired surrogate."""
Name = Annotated[PlainText, AfterValidator(_not_blank)]
"""A name: storable text with at least one character that is not whitespace."""


def _without_null(schema: dict[str, Any]) -> None:
    # Document the fields of a PartialUpdate as they are accepted: a value, or left out.
    for field_schema in schema.get("properties", {}).values():
        for choice in field_schema.pop("anyOf", []):
            if choice != {"type": "null"}:
                field_schema.update(choice)
        if "default" in field_schema and field_schema["default"] is None:
            del field_schema["default"]


class InputSchema(SQLModel):
    """The base of every request body's schema: a field it does not declare is a 422.

    Derive each create schema from it, ``class NoteCreate(NoteBase, InputSchema)``, and
    every schema a body holds. Pydantic would otherwise drop an unknown field without a
    word, and a PATCH of a field the route does not change, or a misspelt one, would answer
    200 as if it had been applied; the 422 names the field, and the OpenAPI schema says
    ``additionalProperties: false``. Table models stay as they are: rows are not requests.
    """

    model_config = {"extra": "forbid"}


class PartialUpdate(InputSchema):
    """A PATCH body: the fields given change, the others keep their values.

    Declare each field ``T | None = None``. Leaving a field out keeps its value; an explicit
    null is refused with a 422 naming the field, because no column it updates takes null.
    """

    model_config = {"json_schema_extra": _without_null}

    @field_validator("*")
    @classmethod
    def _refuse_null(cls, value: object) -> object:
        # Defaults are not validated: this sees only a null the client sent.
        if value is None:
            raise PydanticCustomError(
                "not_null", "leave the field out to keep its value; null is not a value"
            )
        return value


class ErrorMessage(BaseModel):
    """The body of every error response but 422."""

    detail: str


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses=`` of a route that answers these statuses with ErrorMessage."""
    return {
        status_code: {"model": ErrorMessage, "description": HTTPStatus(status_code).phrase}
        for status_code in statuses
    }


def unprocessable(
    loc: Sequence[str | int], message: str, value: Any, error_type: str = "value_error"
) -> RequestValidationError:
    """A 422 in the validation-error shape, for a value the stored data rules out (an unknown id).

    ``loc`` names the value as FastAPI does, for instance ``("body", "owner_id")``.
    """
    error = {"loc": tuple(loc), "msg": message, "type": error_type, "input": value}
    return RequestValidationError([error])


def dump_json(content: Any) -> bytes:
    """``content`` (plain data: dicts, lists, datetimes) as JSON, as pydantic writes it.

    orjson writes a page of 50 items in a quarter of the time pydantic-core's ``to_json``
    takes; what orjson does not know (models, Decimal, sets) goes through pydantic's encoder,
    and what it cannot write at all (an integer past 64 bits, echoed from a request) is
    written by pydantic-core whole.
    """
    try:
        return orjson.dumps(content, default=to_jsonable_python, option=_JSON_OPTIONS)
    except orjson.JSONEncodeError:
        return to_json(content)


# UTC as "Z" and integer keys as strings, as pydantic writes them.
_JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


def json_response(content: Any, status_code: int = 200) -> Response:
    """Serialize ``content`` (plain data: dicts, lists, datetimes) to a JSON response.

    For hot read routes: serialized in one pass (``dump_json``), and FastAPI passes a
    Response through without validating it against the route's response model again.
    Declare ``response_model=`` on the route for the OpenAPI schema, and check the shape in
    a test by validating the response with that model.
    """
    return Response(dump_json(content), status_code, media_type="application/json")


# ==========================================================================================
# Your service. Everything above this line is the template's, and `copier update` keeps
# improving it. Everything below is yours: your settings, models, routes and background
# work, and the last line, which builds `app` from them.
# ==========================================================================================


# --- Service settings -------------------------------------------------------------------


class Settings(KitSettings):
    """The service's settings: the kit's, and the service's own below, each read from its
    upper-cased environment variable or ``.env``.
    """

    # How long owner summaries may trail the writes (see CoalescingRefresher); an hour at most.
    summary_refresh_delay: float = Field(default=1.0, ge=0, le=3600)


# --- Models -----------------------------------------------------------------------------
# Relationships use lazy="raise": touching one that the query did not load raises at once,
# naming the attribute, so an N+1 fails in development instead of slowing production.


def _utcnow() -> datetime:
    return datetime.now(UTC)


class OwnerBase(SQLModel):
    name: Name = Field(max_length=100)


class Owner(OwnerBase, table=True):
    """Someone who owns items."""

    # Keys are BIGINT, and never reused on SQLite either (see key_column).
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, sa_column=key_column())
    name: str = Field(max_length=100, unique=True)
    # The token subject of the caller who created the owner: the caller who may change its
    # items (see Access rules). None for owners older than the rule: an admin's alone.
    subject: str | None = Field(default=None, max_length=255)
    items: list["Item"] = Relationship(
        back_populates="owner", sa_relationship_kwargs={"lazy": "raise"}
    )


class OwnerCreate(OwnerBase, InputSchema):
    """The body of ``POST /owners``."""


# Read schemas declare every field, id first, in the order responses list them: a write and a
# GET of the same resource then answer the same bytes.
class OwnerRead(SQLModel):
    """An owner as the API returns it."""

    id: int
    name: str


class OwnerPage(SQLModel):
    """One page of owners; pass ``next_after`` as ``after`` to get the next page."""

    items: list[OwnerRead]
    next_after: int | None


class TagBase(SQLModel):
    name: Name = Field(max_length=50)


class ItemTagLink(SQLModel, table=True):
    """Which tags an item carries; the primary key serves lookups by item."""

    # Lookups by tag ("items with this tag") need tag_id to lead an index of its own.
    item_id: int = Field(
        foreign_key="item.id", primary_key=True, ondelete="CASCADE", sa_type=BigKey
    )
    tag_id: int = Field(
        foreign_key="tag.id", primary_key=True, index=True, ondelete="CASCADE", sa_type=BigKey
    )


class Tag(TagBase, table=True):
    """A label that any number of items carry."""

    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, sa_column=key_column())
    name: str = Field(max_length=50, unique=True)
    items: list["Item"] = Relationship(
        back_populates="tags", link_model=ItemTagLink, sa_relationship_kwargs={"lazy": "raise"}
    )


class TagCreate(TagBase, InputSchema):
    """The body of ``POST /tags``."""


class TagRead(SQLModel):
    """A tag as the API returns it."""

    id: int
    name: str


class TagPage(SQLModel):
    """One page of tags; pass ``next_after`` as ``after`` to get the next page."""

    items: list[TagRead]
    next_after: int | None


class ItemBase(SQLModel):
    name: Name = Field(max_length=200)
    description: PlainText = Field(default="", max_length=2000)
    price_cents: NonNegativeInt4
    # The server default fills the column in rows written before it existed.
    archived: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})


class Item(ItemBase, table=True):
    """Something an owner offers, carrying any number of tags."""

    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, sa_column=key_column())
    # A partial index cannot serve the foreign key (deleting an owner reaches its archived
    # items too), so owner_id leads an index over every row as well; it also serves the
    # rarer list that includes archived items, which PostgreSQL then sorts by id.
    owner_id: int = Field(foreign_key="owner.id", index=True, ondelete="CASCADE", sa_type=BigKey)
    created_at: datetime = Field(default_factory=_utcnow, sa_type=UTCDateTime)
    owner: Owner = Relationship(back_populates="items", sa_relationship_kwargs={"lazy": "raise"})
    tags: list[Tag] = Relationship(
        back_populates="items", link_model=ItemTagLink, sa_relationship_kwargs={"lazy": "raise"}
    )


# The list route serves live items by owner, paged by id: a partial index holds just those
# rows, so archived ones cost the hot query nothing. Its condition is the very expression the
# queries use, since a database uses a partial index only for a query that repeats it.
Index(
    "ix_item_live_owner_id_id",
    col(Item.owner_id),
    col(Item.id),
    postgresql_where=~col(Item.archived),
    sqlite_where=~col(Item.archived),
)


class ItemCreate(ItemBase, InputSchema):
    """The body of ``POST /items``."""

    owner_id: Id
    tag_ids: list[Id] = Field(default_factory=list, max_length=20)


class ItemUpdate(PartialUpdate):
    """The body of ``PATCH /items/{item_id}``: only the fields given change."""

    name: Annotated[Name, Field(max_length=200)] | None = None
    description: Annotated[PlainText, Field(max_length=2000)] | None = None
    price_cents: NonNegativeInt4 | None = None
    archived: bool | None = None
    tag_ids: Annotated[list[Id], Field(max_length=20)] | None = None


# A batch is one transaction and four statements whatever its size; its bound keeps one
# request's work, locks and answer bounded (a batch's rows are inserted by one statement up
# to SQLAlchemy's 1,000 rows per INSERT).
MAX_BATCH_ITEMS = 1000


class ItemBatch(InputSchema):
    """The body of ``POST /items/batch``: the items to create, all or none."""

    items: list[ItemCreate] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


class ItemRead(SQLModel):
    """An item with its owner and tags (in id order), as the API returns it."""

    id: int
    name: str
    description: str
    price_cents: int
    archived: bool
    created_at: datetime
    owner: OwnerRead
    tags: list[TagRead]


class OwnerSummary(SQLModel, table=True):
    """An owner's live items counted and their prices summed, refreshed after writes.

    A plain table rather than a materialized view: both databases have it, a refresh can
    recompute only the owners that changed, and a read of it is one primary-key lookup.
    """

    owner_id: int = Field(
        foreign_key="owner.id", primary_key=True, ondelete="CASCADE", sa_type=BigKey
    )
    item_count: int
    # A sum of int4 prices outgrows int4.
    total_price_cents: int = Field(sa_type=sa.BigInteger)
    refreshed_at: datetime = Field(sa_type=UTCDateTime)


class OwnerSummaryRead(SQLModel):
    """An owner's summary as the API returns it; ``refreshed_at`` is None before the first."""

    owner_id: int
    item_count: int
    total_price_cents: int
    refreshed_at: datetime | None


class ItemPage(SQLModel):
    """One page of items; pass ``next_after`` as ``after`` to get the next page."""

    items: list[ItemRead]
    next_after: int | None


# --- Routes -----------------------------------------------------------------------------

router = APIRouter()

MAX_PAGE_SIZE = 100

# Who may call what: the scopes the identity provider grants callers of this service. Reads
# need any valid token, tags are public to read; each write needs its scope. An owner's items
# are changed by the caller who created the owner, or by one holding ADMIN.
OWNERS_WRITE = "owners:write"
TAGS_WRITE = "tags:write"
ITEMS_WRITE = "items:write"
ADMIN = "admin"

# Each resource's statements are built once, beside its routes. Reads select only the
# columns their answers need, as rows rather than ORM objects: nothing to hydrate, track or
# expire (SQLAlchemy's select, sa.select, types any number of columns), and RowAnswer
# builds each answer from its read model by column name. Reads (ReadsDep) and writes
# (WritesDep, one transaction each) go out on the driver's connection, the models staying
# the schema and the validation: nothing goes through the ORM's unit of work, which was
# most of a write's time (55% of a create's samples). INSERT and UPDATE return what the
# answer needs, so no write reads its rows back.

# The helpers every resource uses, _changer and _not_found, close the section.

# A list's query parameters, the same for every resource: keyset pages, by id.
After = Annotated[Cursor, Query(description="the last id of the previous page")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]

# Whether the caller may change an owner's items: the owner is theirs, or they hold ADMIN.
# Each write puts it in its own WHERE, so the rule costs no statement, and another caller's
# owner or item is not found (a 404, or an unknown owner's 422): whether it exists is no
# business of theirs. (_changer gives the two parameters.)
_CALLERS_OWNER = sa.or_(
    sa.bindparam("admin", type_=sa.Boolean()), col(Owner.subject) == sa.bindparam("subject")
)
_CALLERS_ITEM = sa.or_(
    sa.bindparam("admin", type_=sa.Boolean()),
    sa.exists().where(
        col(Owner.id) == col(Item.owner_id), col(Owner.subject) == sa.bindparam("subject")
    ),
)


def _page(items: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    # Every list answers the same shape; a short page is the last one.
    return {"items": items, "next_after": items[-1]["id"] if len(items) == limit else None}


async def _read_page(
    reads: Reads, statement: Select[Any], answer: RowAnswer, after: int, limit: int
) -> Response:
    rows = await reads.all(statement, {"after": after, "limit": limit})
    return json_response(_page([answer(row) for row in rows], limit))


async def _read_one(
    reads: Reads, statement: Select[Any], answer: RowAnswer, kind: str, key: int
) -> Response:
    # One row by its key (the statement's "id" parameter), or a 404 naming what is missing.
    row = await reads.first(statement, {"id": key})
    if row is None:
        raise _not_found(kind, key)
    return json_response(answer(row))


async def _insert_named(
    writes: Transaction, statement: sa.Insert, values: dict[str, Any], kind: str
) -> Sequence[Any]:
    # Names are unique: a taken one is a 409 that says so.
    try:
        (row,) = await writes.all(statement, values)
        await writes.commit()
    except IntegrityError:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"{kind} named {values['name']!r} already exists"
        ) from None
    return row


# -- Owner summaries ---------------------------------------------------------------------

# Refreshed after the response. Writes only mark their owner; the app's CoalescingRefresher
# recomputes the marked owners together, shortly after, in one statement that reads their
# live items by owner and upserts their summary rows.
_SUMMARY_ROWS: Select[*tuple[Any, ...]] = (
    sa.select(
        col(Owner.id),
        sa.func.count(col(Item.id)),
        sa.func.coalesce(sa.func.sum(col(Item.price_cents)), 0),
        sa.bindparam("refreshed_at", type_=UTCDateTime()),
    )
    .outerjoin(Item, (col(Item.owner_id) == col(Owner.id)) & ~col(Item.archived))
    .group_by(col(Owner.id))
)
_SUMMARY_COLUMNS = ["owner_id", "item_count", "total_price_cents", "refreshed_at"]
_REFRESH_SUMMARIES = (
    sa.insert(OwnerSummary)
    .from_select(_SUMMARY_COLUMNS, _SUMMARY_ROWS.where(any_of(col(Owner.id), "owner_ids")))
    .ext(on_conflict_update(_SUMMARY_COLUMNS[:1], _SUMMARY_COLUMNS[1:]))
)


async def refresh_owner_summaries(engine: AsyncEngine, owner_ids: frozenset[int]) -> None:
    """Recompute the summaries of ``owner_ids`` from their live items, in one statement.

    An upsert, so that two processes refreshing the same owner at once both succeed.
    """
    parameters = {"owner_ids": sorted(owner_ids), "refreshed_at": _utcnow()}
    async with engine.begin() as connection:
        await connection.execute(_REFRESH_SUMMARIES, parameters)


async def get_summaries(request: Request) -> CoalescingRefresher:
    """The app's refresher of owner summaries: ``mark(owner_id)`` after a write commits."""
    return cast(CoalescingRefresher, request.app.state.summaries)


SummariesDep = Annotated[CoalescingRefresher, Depends(get_summaries)]


@asynccontextmanager
async def refresh_summaries(app: FastAPI) -> AsyncIterator[None]:
    """Run the refresher of owner summaries for as long as the app runs."""
    settings: Settings = app.state.settings
    summaries = app.state.summaries = CoalescingRefresher(
        "owner summaries",
        functools.partial(refresh_owner_summaries, app.state.engine),
        settings.summary_refresh_delay,
    )
    summaries.start()
    try:
        yield
    finally:
        # Before the engine goes: pending refreshes still need the database. A few seconds,
        # well inside the grace period process managers give a stopping service.
        await summaries.stop(grace=5.0)


# -- Items -------------------------------------------------------------------------------

_ITEM_COLUMNS = (
    col(Item.id),
    col(Item.name),
    col(Item.description),
    col(Item.price_cents),
    col(Item.archived),
    col(Item.created_at),
)
_ITEM_ROWS: Select[*tuple[Any, ...]] = sa.select(
    *_ITEM_COLUMNS,
    col(Owner.id).label("owner_id"),
    col(Owner.name).label("owner_name"),
).join(Owner)
# One item comes with its tags in the same statement: an item has few tags, so the join
# repeats its columns a few times at most and saves a round trip. A page of items does not:
# its tags come in a second statement, without repeating every item once per tag.
_ITEM_WITH_TAGS_BY_ID = (
    _ITEM_ROWS.add_columns(col(Tag.id).label("tag_id"), col(Tag.name).label("tag_name"))
    .outerjoin(ItemTagLink, col(ItemTagLink.item_id) == col(Item.id))
    .outerjoin(Tag, col(Tag.id) == col(ItemTagLink.tag_id))
    .where(col(Item.id) == sa.bindparam("item_id"))
    .order_by(col(ItemTagLink.tag_id))
)
_ITEMS_PAGE = (
    _ITEM_ROWS.where(col(Item.id) > sa.bindparam("after"))
    .order_by(col(Item.id))
    .limit(sa.bindparam("limit"))
)
_ITEMS_PAGE_OF_OWNER = _ITEMS_PAGE.where(col(Item.owner_id) == sa.bindparam("owner_id"))
# Live items only, unless asked: the condition of the partial index ix_item_live_owner_id_id,
# written the same way, so that the database matches the two and uses the index.
_ITEMS_PAGES = {
    (False, False): _ITEMS_PAGE.where(~col(Item.archived)),
    (False, True): _ITEMS_PAGE_OF_OWNER.where(~col(Item.archived)),
    (True, False): _ITEMS_PAGE,
    (True, True): _ITEMS_PAGE_OF_OWNER,
}
# Their rows answer as ItemRead by column name: a field added to ItemRead and not selected
# here stops the module at import, naming it.
_ITEM_ANSWER = RowAnswer(ItemRead, _ITEM_ROWS, given=["tags"])
_ITEM_WITH_TAGS_ANSWER = RowAnswer(ItemRead, _ITEM_WITH_TAGS_BY_ID, given=["tags"])

# The tags of a page of items, ordered as the link table's primary key (item_id, tag_id) so
# that its index gives the order. The ids go as one list (any_of): one statement text for
# every page size.
_TAGS_OF_ITEMS: Select[*tuple[Any, ...]] = (
    sa.select(col(ItemTagLink.item_id), col(Tag.id), col(Tag.name))
    .join(Tag)
    .where(any_of(col(ItemTagLink.item_id), "item_ids"))
    .order_by(col(ItemTagLink.item_id), col(ItemTagLink.tag_id))
)

_INSERT_ITEM = sa.insert(Item).returning(col(Item.id), col(Item.created_at))
# Sent with a list of links: one statement however many there are.
_INSERT_LINKS = sa.insert(ItemTagLink)

# A new item's owner and tags, checked in one statement before anything is written: no row
# means no owner of the caller's, and an id missing from the rows is an unknown tag.
_OWNER_AND_TAGS: Select[*tuple[Any, ...]] = (
    sa.select(col(Owner.name), col(Tag.id), col(Tag.name))
    .outerjoin(Tag, any_of(col(Tag.id), "tag_ids"))
    .where(col(Owner.id) == sa.bindparam("owner_id"), _CALLERS_OWNER)
    .order_by(col(Tag.id))
)

# An update changes the fields given and keeps the others (a null parameter keeps the
# column's value): one statement text for every PATCH. The UPDATE also locks the row until
# commit (SQLite's write transactions hold the database's write lock from their BEGIN): a
# concurrent update waits and then replaces the tags this one wrote, instead of a set it
# never saw, and one that finds the row deleted meanwhile updates nothing, a 404.
_UPDATED_FIELDS = ("name", "description", "price_cents", "archived")
_ITEM_RETURNED = (
    *_ITEM_COLUMNS,
    col(Item.owner_id),
    sa.select(col(Owner.name))
    .where(col(Owner.id) == col(Item.owner_id))
    .scalar_subquery()
    .label("owner_name"),
)
_UPDATE_ITEM = (
    sa.update(Item)
    .where(col(Item.id) == sa.bindparam("item_id"), _CALLERS_ITEM)
    .values(
        {
            name: sa.func.coalesce(sa.bindparam(f"new_{name}", type_=column.type), column)
            for name, column in Item.__table__.columns.items()  # type: ignore[attr-defined]
            if name in _UPDATED_FIELDS
        }
    )
    .returning(*_ITEM_RETURNED)
)
_UPDATED_ITEM_ANSWER = RowAnswer(ItemRead, _UPDATE_ITEM, given=["tags"])
_UNLINK_TAGS = sa.delete(ItemTagLink).where(col(ItemTagLink.item_id) == sa.bindparam("item_id"))

# A batch's statements: its owners in one statement (_OWNERS_BY_ID, with the owners'), its
# rows in one (several VALUES rows), its links in one. A statement's rows take their ids in
# the order of its VALUES, so the ids, sorted, are the rows' in the order sent.
_INSERT_ITEMS = sa.insert(Item).returning(col(Item.id))

_DELETE_ITEM = (
    sa.delete(Item)
    .where(col(Item.id) == sa.bindparam("item_id"), _CALLERS_ITEM)
    .returning(col(Item.owner_id))
)


@router.post("/items", status_code=status.HTTP_201_CREATED, response_model=ItemRead)
@query_budget(3)
@access(ITEMS_WRITE)
async def create_item(
    body: ItemCreate,
    writes: WritesDep,
    cache: CacheDep,
    summaries: SummariesDep,
    caller: CallerDep,
) -> Response:
    """Create an item for an owner of the caller's, with existing tags.

    Three statements, two without tags: the owner and the tags checked together, the item
    inserted, its tag links inserted.
    """
    tag_ids = sorted(set(body.tag_ids))
    given = {"owner_id": body.owner_id, "tag_ids": tag_ids, **_changer(caller)}
    rows = await writes.all(_OWNER_AND_TAGS, given)
    if not rows:
        raise _unknown_owner(("body", "owner_id"), body.owner_id)
    tags = [{"id": tag_id, "name": name} for _, tag_id, name in rows if tag_id is not None]
    if len(tags) < len(tag_ids):
        raise _unknown_tags(("body", "tag_ids"), tag_ids, tags)
    fields = body.model_dump(exclude={"tag_ids"})
    inserted = await writes.all(_INSERT_ITEM, {**fields, "created_at": _utcnow()})
    item_id, created_at = inserted[0]
    if tags:
        links = [{"item_id": item_id, "tag_id": tag["id"]} for tag in tags]
        await writes.execute(_INSERT_LINKS, links)
    # A GET of this id before it existed may have cached a "not found", in any process.
    cache.invalidate_on_commit(writes, "item", item_id)
    await writes.commit()
    summaries.mark(body.owner_id)
    owner = {"id": body.owner_id, "name": rows[0][0]}
    item = {"id": item_id, **fields, "created_at": created_at, "owner": owner, "tags": tags}
    return json_response(_item_answer(item), status.HTTP_201_CREATED)


@router.post(
    "/items/batch",
    status_code=status.HTTP_201_CREATED,
    response_model=list[ItemRead],
    responses=error_responses(413),
)
@query_budget(4)
@access(ITEMS_WRITE)
async def create_items(
    body: ItemBatch,
    writes: WritesDep,
    cache: CacheDep,
    summaries: SummariesDep,
    caller: CallerDep,
) -> Response:
    """Create up to ``MAX_BATCH_ITEMS`` items in one transaction: all of them, or none.

    Answers the items created, in the order they were sent.

    Four statements whatever the batch's size: its owners read, its tags read, its items
    inserted, their tag links inserted. An unknown owner or tag is a 422 naming each row
    that has one, and nothing is written. ``MAX_BODY_BYTES`` bounds the body as well (1 MiB
    by default: a thousand items of up to a kilobyte each).
    """
    owner_ids = sorted({item.owner_id for item in body.items})
    given = {"owner_ids": owner_ids, **_changer(caller)}
    owner_rows = await writes.all(_OWNERS_BY_ID, given)
    owners = {owner["id"]: owner for owner in map(_OWNER_ANSWER, owner_rows)}
    tag_ids = sorted({tag_id for item in body.items for tag_id in item.tag_ids})
    tags: dict[int, dict[str, Any]] = {}
    if tag_ids:
        tag_rows = await writes.all(_TAGS_BY_ID, {"tag_ids": tag_ids})
        tags = {tag["id"]: tag for tag in map(_TAG_ANSWER, tag_rows)}
    errors = list(_unknown_in_batch(body.items, owners, tags))
    if errors:
        raise RequestValidationError(errors)
    created_at = _utcnow()
    rows = [
        {**item.model_dump(exclude={"tag_ids"}), "created_at": created_at} for item in body.items
    ]
    inserted = sorted(item_id for (item_id,) in await writes.all(_INSERT_ITEMS, rows))
    links = [
        {"item_id": item_id, "tag_id": tag_id}
        for item_id, item in zip(inserted, body.items, strict=True)
        for tag_id in sorted(set(item.tag_ids))
    ]
    if links:
        await writes.execute(_INSERT_LINKS, links)
    for item_id in inserted:
        cache.invalidate_on_commit(writes, "item", item_id)
    await writes.commit()
    for owner_id in owners:
        summaries.mark(owner_id)
    answers = [
        _item_answer(
            {
                "id": item_id,
                **row,
                "owner": owners[item.owner_id],
                "tags": [tags[tag_id] for tag_id in sorted(set(item.tag_ids))],
            }
        )
        for item_id, row, item in zip(inserted, rows, body.items, strict=True)
    ]
    return json_response(answers, status.HTTP_201_CREATED)


# A miss is cached briefly too, so a flood of requests for a missing item stays off the database.
NOT_FOUND_TTL = 2.0


@router.get("/items/{item_id}", response_model=ItemRead, responses=error_responses(404))
@query_budget(1)
@access(AUTHENTICATED)
async def get_item(item_id: Id, cache: CacheDep, reads: ReadsDep) -> Response:
    """One item with its owner and tags, from the cache while the entry lives."""
    # The cache holds the serialized response: a hit costs no query and no serialization.
    body = await cache.get_or_load(
        "item", item_id, lambda: _read_item(reads, item_id), none_ttl=NOT_FOUND_TTL
    )
    if body is None:
        raise _not_found("item", item_id)
    return Response(body, media_type="application/json")


@router.get("/items", response_model=ItemPage)
@query_budget(2)
@access(AUTHENTICATED)
async def list_items(
    reads: ReadsDep,
    owner_id: Id | None = None,
    include_archived: Annotated[
        bool, Query(description="archived items too; by default only live ones")
    ] = False,
    after: After = 0,
    limit: Limit = 50,
) -> Response:
    """List live items by id with their owners and tags, a page at a time.

    Two queries whatever the page size: the items joined to their owners, then the tags
    of all of them at once.
    """
    page = {"after": after, "limit": limit, "owner_id": owner_id}
    query = _ITEMS_PAGES[include_archived, owner_id is not None]
    async with reads.connection() as connection:
        rows = await connection.all(query, page)
        items = await _item_reads(connection, rows)
    return json_response(_page(items, limit))


@router.patch("/items/{item_id}", response_model=ItemRead, responses=error_responses(404))
@query_budget(4)
@access(ITEMS_WRITE)
async def update_item(
    item_id: Id,
    body: ItemUpdate,
    writes: WritesDep,
    cache: CacheDep,
    summaries: SummariesDep,
    caller: CallerDep,
) -> Response:
    """Change the fields given; ``tag_ids`` replaces the item's tags.

    Concurrent updates of one item apply one after the other, the last one's tags win
    whole, and an item deleted meanwhile is a 404, as is another caller's item (see
    ``_CALLERS_ITEM``). Two statements, four with ``tag_ids``:
    the row updated, then its tags read; or the new tags read, the old ones unlinked and
    the new ones linked.
    """
    given = body.model_dump(exclude_unset=True)
    changes = {f"new_{name}": given.get(name) for name in _UPDATED_FIELDS}
    # The row first: its UPDATE is the lock that makes concurrent PATCHes take turns.
    parameters = {"item_id": item_id, **changes, **_changer(caller)}
    row = await writes.first(_UPDATE_ITEM, parameters)
    if row is None:
        raise _not_found("item", item_id)
    if body.tag_ids is None:
        tags = await _tags_of_item(writes, item_id)
    else:
        tags = await _replace_tags(writes, item_id, body.tag_ids)
    cache.invalidate_on_commit(writes, "item", item_id)
    await writes.commit()
    item = _UPDATED_ITEM_ANSWER(row, tags=tags)
    summaries.mark(item["owner"]["id"])
    return json_response(item)


@router.delete(
    "/items/{item_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    # 409 while rows of another table still refer to the item (the kit's error contract).
    responses=error_responses(404, 409),
)
@query_budget(1)
@access(ITEMS_WRITE)
async def delete_item(
    item_id: Id, writes: WritesDep, cache: CacheDep, summaries: SummariesDep, caller: CallerDep
) -> Response:
    """Delete an item of the caller's; its tag links go with it."""
    parameters = {"item_id": item_id, **_changer(caller)}
    owner_id = await writes.scalar(_DELETE_ITEM, parameters)
    if owner_id is None:
        raise _not_found("item", item_id)
    cache.invalidate_on_commit(writes, "item", item_id)
    await writes.commit()
    summaries.mark(owner_id)
    # A 204 has no body, so no content type either.
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _read_item(reads: Reads, item_id: int) -> bytes | None:
    # A connection of its own: the load may outlive the request that started it.
    rows = await reads.all(_ITEM_WITH_TAGS_BY_ID, {"item_id": item_id})
    if not rows:
        return None
    tags = [{"id": tag_id, "name": name} for *_, tag_id, name in rows if tag_id is not None]
    return dump_json(_ITEM_WITH_TAGS_ANSWER(rows[0], tags=tags))


async def _item_reads(
    connection: DriverConnection, rows: list[Sequence[Any]]
) -> list[dict[str, Any]]:
    # The rows' first column is the item's id.
    tags: dict[int, list[dict[str, Any]]] = {row[0]: [] for row in rows}
    if tags:
        links = await connection.all(_TAGS_OF_ITEMS, {"item_ids": list(tags)})
        for item_id, tag_id, tag_name in links:
            tags[item_id].append({"id": tag_id, "name": tag_name})
    return [_ITEM_ANSWER(row, tags=tags[row[0]]) for row in rows]


def _item_answer(item: dict[str, Any]) -> dict[str, Any]:
    # A created item's keys in ItemRead's order, so that it answers the bytes its GET does.
    return {name: item[name] for name in ItemRead.model_fields}


async def _tags_by_id(
    writes: Transaction, tag_ids: Sequence[int], loc: Sequence[str | int]
) -> list[dict[str, Any]]:
    # Each tag, in id order; one unknown is a 422 before anything is written (a write made
    # before it, such as an update's, is rolled back when the request ends).
    if not tag_ids:
        return []
    tags = [_TAG_ANSWER(row) for row in await writes.all(_TAGS_BY_ID, {"tag_ids": tag_ids})]
    if len(tags) < len(tag_ids):
        raise _unknown_tags(loc, tag_ids, tags)
    return tags


async def _tags_of_item(writes: Transaction, item_id: int) -> list[dict[str, Any]]:
    rows = await writes.all(_TAGS_OF_ITEMS, {"item_ids": [item_id]})
    return [{"id": tag_id, "name": name} for _, tag_id, name in rows]


async def _replace_tags(
    writes: Transaction, item_id: int, tag_ids: Sequence[int]
) -> list[dict[str, Any]]:
    tags = await _tags_by_id(writes, sorted(set(tag_ids)), ("body", "tag_ids"))
    await writes.all(_UNLINK_TAGS, {"item_id": item_id})
    if tags:
        links = [{"item_id": item_id, "tag_id": tag["id"]} for tag in tags]
        await writes.execute(_INSERT_LINKS, links)
    return tags


# -- Owners ------------------------------------------------------------------------------

_OWNER_ROWS: Select[*tuple[Any, ...]] = sa.select(col(Owner.id), col(Owner.name))
_OWNER_BY_ID = _OWNER_ROWS.where(col(Owner.id) == sa.bindparam("id"))
_OWNERS_PAGE = (
    _OWNER_ROWS.where(col(Owner.id) > sa.bindparam("after"))
    .order_by(col(Owner.id))
    .limit(sa.bindparam("limit"))
)

# An owner without a summary row yet (none refreshed since it was created) reads as empty.
_OWNER_SUMMARY: Select[*tuple[Any, ...]] = (
    sa.select(
        col(Owner.id).label("owner_id"),
        sa.func.coalesce(col(OwnerSummary.item_count), 0).label("item_count"),
        sa.func.coalesce(col(OwnerSummary.total_price_cents), 0).label("total_price_cents"),
        col(OwnerSummary.refreshed_at),
    )
    .outerjoin(OwnerSummary, col(OwnerSummary.owner_id) == col(Owner.id))
    .where(col(Owner.id) == sa.bindparam("id"))
)

# A new owner returns the columns its reads select, and answers as they do.
_INSERT_OWNER = sa.insert(Owner).returning(*_OWNER_ROWS.selected_columns)
_OWNER_ANSWER = RowAnswer(OwnerRead, _OWNER_ROWS)
# The caller's owners among a list of ids: a batch of items checks its owners at once.
_OWNERS_BY_ID = _OWNER_ROWS.where(any_of(col(Owner.id), "owner_ids"), _CALLERS_OWNER)
_OWNER_SUMMARY_ANSWER = RowAnswer(OwnerSummaryRead, _OWNER_SUMMARY)


@router.post(
    "/owners",
    status_code=status.HTTP_201_CREATED,
    response_model=OwnerRead,
    responses=error_responses(409),
)
@query_budget(1)
@access(OWNERS_WRITE)
async def create_owner(
    body: OwnerCreate, writes: WritesDep, summaries: SummariesDep, caller: CallerDep
) -> Response:
    """Create an owner, the caller's; names are unique."""
    values = {"name": body.name, "subject": caller.subject}
    owner = _OWNER_ANSWER(await _insert_named(writes, _INSERT_OWNER, values, "an owner"))
    # A new owner gets its (empty) summary row.
    summaries.mark(owner["id"])
    return json_response(owner, status.HTTP_201_CREATED)


@router.get("/owners", response_model=OwnerPage)
@query_budget(1)
@access(AUTHENTICATED)
async def list_owners(reads: ReadsDep, after: After = 0, limit: Limit = 50) -> Response:
    """List owners by id, a page at a time."""
    return await _read_page(reads, _OWNERS_PAGE, _OWNER_ANSWER, after, limit)


@router.get("/owners/{owner_id}", response_model=OwnerRead, responses=error_responses(404))
@query_budget(1)
@access(AUTHENTICATED)
async def get_owner(owner_id: Id, reads: ReadsDep) -> Response:
    """One owner."""
    return await _read_one(reads, _OWNER_BY_ID, _OWNER_ANSWER, "owner", owner_id)


@router.get(
    "/owners/{owner_id}/summary", response_model=OwnerSummaryRead, responses=error_responses(404)
)
@query_budget(1)
@access(AUTHENTICATED)
async def get_owner_summary(owner_id: Id, reads: ReadsDep) -> Response:
    """How many live items an owner has and what they cost together.

    Kept in a table refreshed shortly after each write (``SUMMARY_REFRESH_DELAY``), so a
    read costs one primary-key lookup however many items the owner has, and may trail the
    latest writes by that delay.
    """
    return await _read_one(reads, _OWNER_SUMMARY, _OWNER_SUMMARY_ANSWER, "owner", owner_id)


# -- Tags --------------------------------------------------------------------------------

_TAG_ROWS: Select[*tuple[Any, ...]] = sa.select(col(Tag.id), col(Tag.name))
_TAG_BY_ID = _TAG_ROWS.where(col(Tag.id) == sa.bindparam("id"))
_TAGS_PAGE = (
    _TAG_ROWS.where(col(Tag.id) > sa.bindparam("after"))
    .order_by(col(Tag.id))
    .limit(sa.bindparam("limit"))
)
_INSERT_TAG = sa.insert(Tag).returning(*_TAG_ROWS.selected_columns)
_TAG_ANSWER = RowAnswer(TagRead, _TAG_ROWS)

# Tags by id, to check that each exists and to answer their names.
_TAGS_BY_ID = _TAG_ROWS.where(any_of(col(Tag.id), "tag_ids")).order_by(col(Tag.id))


@router.post(
    "/tags",
    status_code=status.HTTP_201_CREATED,
    response_model=TagRead,
    responses=error_responses(409),
)
@query_budget(1)
@access(TAGS_WRITE)
async def create_tag(body: TagCreate, writes: WritesDep) -> Response:
    """Create a tag; names are unique."""
    tag = await _insert_named(writes, _INSERT_TAG, {"name": body.name}, "a tag")
    return json_response(_TAG_ANSWER(tag), status.HTTP_201_CREATED)


@router.get("/tags", response_model=TagPage)
@query_budget(1)
@access(PUBLIC)
async def list_tags(reads: ReadsDep, after: After = 0, limit: Limit = 50) -> Response:
    """List tags by id, a page at a time."""
    return await _read_page(reads, _TAGS_PAGE, _TAG_ANSWER, after, limit)


@router.get("/tags/{tag_id}", response_model=TagRead, responses=error_responses(404))
@query_budget(1)
@access(PUBLIC)
async def get_tag(tag_id: Id, reads: ReadsDep) -> Response:
    """One tag."""
    return await _read_one(reads, _TAG_BY_ID, _TAG_ANSWER, "tag", tag_id)


# -- Export ------------------------------------------------------------------------------

# One column: SQLModel's select types it as well.
_OWNER_ID = select(col(Owner.id)).where(col(Owner.id) == sa.bindparam("owner_id"))

# The export's batches: keyset pages of an owner's items by id, archived ones included, so
# the index on owner_id finds them (the partial index holds live items only).
_EXPORT_PAGE = (
    sa.select(col(Item.id), col(Item.name), col(Item.price_cents), col(Item.created_at))
    .where(col(Item.owner_id) == sa.bindparam("owner_id"), col(Item.id) > sa.bindparam("after"))
    .order_by(col(Item.id))
    .limit(sa.bindparam("limit"))
)

# The export reads its rows this many at a time: memory, and the time a connection is held,
# stay bounded however many items an owner has.
EXPORT_BATCH_ROWS = 1000


@router.get("/owners/{owner_id}/items.csv", response_class=Response, responses=error_responses(404))
@query_budget(2)
@access(AUTHENTICATED)
async def export_owner_items(
    owner_id: Id, reads: ReadsDep, offloader: OffloadDep
) -> StreamingResponse:
    """Every item of an owner as CSV, streamed ``EXPORT_BATCH_ROWS`` rows at a time.

    The budget covers the owner check and the first batch; each further batch costs one
    statement. A batch is read on a connection that goes back to the pool before the rows
    are formatted (in a worker thread) and sent: a slow or vanished client holds no
    connection and no transaction, and a client that goes away stops the export.
    """
    async with reads.connection() as connection:
        owner = await connection.first(_OWNER_ID, {"owner_id": owner_id})
        if owner is None:
            raise _not_found("owner", owner_id)
        rows = await _export_batch(connection, owner_id, after=0)
    # The first batch is formatted before the response starts, so that a full offload
    # pool is still a 503 rather than a cut-off download.
    first = _EXPORT_HEADER + await offloader.run(_csv_lines, rows)
    filename = f"owner-{owner_id}-items.csv"
    return StreamingResponse(
        _export_stream(reads, offloader, owner_id, rows, first),
        media_type="text/csv",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


_EXPORT_HEADER = "id,name,price_cents,created_at\r\n"


async def _export_batch(
    connection: DriverConnection, owner_id: int, after: int
) -> list[Sequence[Any]]:
    page = {"owner_id": owner_id, "after": after, "limit": EXPORT_BATCH_ROWS}
    return await connection.all(_EXPORT_PAGE, page)


async def _export_stream(
    reads: Reads, offloader: Offloader, owner_id: int, rows: list[Sequence[Any]], first: str
) -> AsyncIterator[str]:
    # No connection is held across a yield: the client may take its time, or never return.
    yield first
    while len(rows) == EXPORT_BATCH_ROWS:
        async with reads.connection() as connection:
            rows = await _export_batch(connection, owner_id, after=rows[-1][0])
        if rows:
            # The 200 has gone out: a full offload line may delay the rest, not cut it off.
            yield await offloader.run_when_free(_csv_lines, rows)


def _csv_lines(rows: list[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerows(
        (item_id, _as_text(name), price_cents, created_at.isoformat())
        for item_id, name, price_cents, created_at in rows
    )
    return buffer.getvalue()


# A spreadsheet runs a cell that starts with one of these as a formula ("CSV injection");
# OWASP's advice is to prefix such cells with a single quote, which makes them text.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _as_text(cell: str) -> str:
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


def _unknown_in_batch(
    items: Sequence[ItemCreate], owners: dict[int, Any], tags: dict[int, Any]
) -> Iterator[dict[str, Any]]:
    # One error per row with an unknown owner or tags, located as FastAPI locates its own.
    for index, item in enumerate(items):
        if item.owner_id not in owners:
            loc = ("body", "items", index, "owner_id")
            yield _unknown_owner(loc, item.owner_id).errors()[0]
        missing = sorted(set(item.tag_ids) - tags.keys())
        if missing:
            loc = ("body", "items", index, "tag_ids")
            yield _unknown_tags(loc, missing, []).errors()[0]


def _unknown_owner(loc: Sequence[str | int], owner_id: int) -> RequestValidationError:
    return unprocessable(loc, f"no owner has id {owner_id}", owner_id, "not_found")


def _unknown_tags(
    loc: Sequence[str | int], tag_ids: Sequence[int], found: Sequence[dict[str, Any]]
) -> RequestValidationError:
    missing = sorted(set(tag_ids) - {tag["id"] for tag in found})
    return unprocessable(loc, f"no tags have ids {missing}", missing, "not_found")


def _changer(caller: Caller) -> dict[str, Any]:
    # The parameters of _CALLERS_OWNER and _CALLERS_ITEM.
    return {"subject": caller.subject, "admin": ADMIN in caller.scopes}


def _not_found(kind: str, key: int) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no {kind} has id {key}")


# --- App --------------------------------------------------------------------------------


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service: the kit's app around this module's routes and background work.

    ``settings`` default to those read from the environment and ``.env``.
    """
    return build_app(
        settings or Settings.from_env(),
        title="My Service",
        routers=[router],
        lifespan=refresh_summaries,
    )


app = create_app()
