"""Every wait on the database has a deadline: past it, while the database cannot be
reached, or when it rolls a transaction back for a concurrent one, a request gets the kit's
503 with Retry-After, and the service recovers by itself.

A silent or restarting network is a TCP relay between the service and PostgreSQL
(``tests/tcp_proxy.py``); a deadlock takes PostgreSQL's row or advisory locks. Those tests
run when the suite runs on PostgreSQL, and are reported as skipped on SQLite. SQLite's own
deadline, the wait for its write lock, is tested on a file of its own in every run.
"""

import asyncio
import contextlib
import socket
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import NullPool, text
from sqlalchemy.ext.asyncio import create_async_engine

from my_service import SessionDep, Settings, create_app, query_budget

from tests.harness.databases import add_probe_routes, sqlite_file_at_head
from tests.harness.network import TcpProxy
from tests.harness.tokens import FULL_ACCESS

UNAVAILABLE = {"detail": "the database is unavailable; retry after the delay in Retry-After"}


def assert_unavailable(response: httpx.Response) -> None:
    """The kit's 503 for a database that cannot answer: JSON, and when to retry."""
    assert response.status_code == 503, response.text
    assert response.json() == UNAVAILABLE
    assert response.headers["retry-after"] in {"1", "2", "3"}


@pytest.fixture
def postgresql_url(app: FastAPI) -> str:
    """The test database's URL; on SQLite, which has no network to fail, the test is skipped."""
    if app.state.engine.dialect.name != "postgresql":
        pytest.skip("a network between the service and its database is PostgreSQL's")
    return str(app.state.engine.url.render_as_string(hide_password=False))


@contextlib.asynccontextmanager
async def service(
    database_url: str, **settings: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The service with the probe routes, started on ``database_url``, and a client of it,
    until the block ends.
    """
    app = create_app(Settings(database_url=database_url, **settings))
    add_probe_routes(app)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=FULL_ACCESS
        ) as client,
    ):
        yield app, client


async def found_back(app: FastAPI) -> None:
    """Wait for the probe that finds the database back, once it answers again: meanwhile
    requests are answered 503 at once (see test_breaker.py).
    """
    async with asyncio.timeout(30):
        await app.state.breaker.until_up()


@pytest.mark.parametrize(("method", "path"), [("GET", "/probe/read"), ("POST", "/probe/write")])
async def test_a_silent_database_is_a_503_at_the_deadline_and_the_pool_recovers(
    postgresql_url: str, method: str, path: str
) -> None:
    deadlines = {"database_pool_size": 2, "database_statement_timeout": 1.0}
    async with (
        TcpProxy(postgresql_url) as proxy,
        service(proxy.url, cache_notify=False, **deadlines) as (app, client),
    ):
        # Two pooled connections, both idle when the network goes silent.
        answers = await asyncio.gather(*(client.get("/probe/read") for _ in range(2)))
        assert [answer.status_code for answer in answers] == [200, 200]
        proxy.silence()
        try:
            # Without a deadline the request would wait for ever: fail instead of hanging.
            async with asyncio.timeout(30):
                assert_unavailable(await client.request(method, path))
                # The same instance serves again, on new connections: no restart.
                await found_back(app)
                statuses = [(await client.request(method, path)).status_code for _ in range(3)]
        finally:
            proxy.refuse()  # whatever happened, the service stops without waiting on silence
    assert statuses == [200, 200, 200]


async def test_a_restarting_database_is_a_503_until_it_accepts_connections_again(
    postgresql_url: str,
) -> None:
    async with (
        TcpProxy(postgresql_url) as proxy,
        service(proxy.url, cache_notify=False) as (app, client),
    ):
        assert (await client.get("/probe/read")).status_code == 200
        proxy.refuse()
        # The pooled connection was cut, then no new one can be made.
        assert_unavailable(await client.get("/probe/read"))
        assert_unavailable(await client.post("/probe/write"))
        proxy.accept()
        await found_back(app)
        assert (await client.get("/probe/read")).status_code == 200
        assert (await client.post("/probe/write")).status_code == 200


async def test_connections_the_server_terminates_are_a_503_and_replaced(
    app: FastAPI, client: httpx.AsyncClient, postgresql_url: str
) -> None:
    add_probe_routes(app)
    assert (await client.get("/probe/read")).status_code == 200
    # What a restart or a failover does to open sessions: PostgreSQL ends them (57P01). From
    # a connection outside the pool, which keeps the one the read used.
    terminator = create_async_engine(postgresql_url, poolclass=NullPool)
    others = text(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    try:
        async with terminator.connect() as connection:
            await connection.execute(others)
    finally:
        await terminator.dispose()
    # The pool kept the connection the read had used: its end is found by the next request.
    assert_unavailable(await client.get("/probe/read"))
    assert (await client.get("/probe/read")).status_code == 200
    # A connection lost is replaced; it does not mark the database down.
    assert app.state.breaker.stats.outages == 0


async def test_a_deadlocks_victim_gets_a_503_and_the_other_writer_commits(
    app: FastAPI, client: httpx.AsyncClient, postgresql_url: str
) -> None:
    both_hold_their_first = asyncio.Barrier(2)

    @query_budget(2)
    async def lock_both(first: int, second: int, session: SessionDep) -> dict[str, int]:
        connection = await session.connection()
        lock = text("SELECT pg_advisory_xact_lock(:key)")
        await connection.execute(lock, {"key": first})
        await both_hold_their_first.wait()
        await connection.execute(lock, {"key": second})
        await session.commit()
        return {"locked": 2}

    app.post("/probe/lock/{first}/{second}")(lock_both)
    # Each takes one lock, then waits for the other's: PostgreSQL ends one of the two.
    answers = await asyncio.gather(client.post("/probe/lock/1/2"), client.post("/probe/lock/2/1"))
    assert sorted(answer.status_code for answer in answers) == [200, 503]
    assert_unavailable(next(answer for answer in answers if answer.status_code == 503))
    # The victim's session was rolled back: nothing holds the locks, one request (alone at
    # the barrier now) takes both.
    both_hold_their_first = asyncio.Barrier(1)
    assert (await client.post("/probe/lock/1/2")).status_code == 200
    # Contention, not an outage: the database was not marked down.
    assert app.state.breaker.stats.outages == 0


async def test_an_unreachable_database_is_a_503() -> None:
    url = f"postgresql+asyncpg://nobody@127.0.0.1:{closed_port()}/nothing"
    async with service(url, cache_notify=False) as (_, client):
        assert_unavailable(await client.get("/probe/read"))
        assert_unavailable(await client.post("/probe/write"))


def closed_port() -> int:
    """A local port where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_a_sqlite_writer_past_the_busy_timeout_gets_503(tmp_path: Path) -> None:
    database = tmp_path / "busy.db"
    async with service(sqlite_file_at_head(database), database_pool_timeout=0.1) as (_, client):
        assert (await client.get("/probe/read")).status_code == 200  # the file, in WAL mode
        holder = sqlite3.connect(database, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process's writer, holding the lock
        try:
            assert_unavailable(await client.post("/probe/write"))
            # Readers never wait for the writer, nor does the readiness probe.
            assert (await client.get("/probe/read")).status_code == 200
            assert (await client.get("/ready")).status_code == 200
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert (await client.post("/probe/write")).status_code == 200


async def test_sqlites_busy_timeout_is_the_pool_timeout(tmp_path: Path) -> None:
    url = sqlite_file_at_head(tmp_path / "busy.db")
    app = create_app(Settings(database_url=url, database_pool_timeout=0.25))
    async with app.router.lifespan_context(app), app.state.engine.connect() as connection:
        busy_timeout = (await connection.exec_driver_sql("PRAGMA busy_timeout")).scalar_one()
    assert busy_timeout == 250
