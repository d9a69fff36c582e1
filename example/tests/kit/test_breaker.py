"""A database known to be down answers at once: after a connection fails, requests get the
kit's 503 with Retry-After without waiting and without asking the database, while one probe
at a time finds out when it is back; then requests flow again. Contention (SQLite's write
lock still taken; on PostgreSQL a deadlock's victim, in test_deadlines.py) and a pooled
connection lost do not mark it down.

A server that resets every connection stands for a database that is down, in every run.
Finding it back needs a database that answers again: those tests relay the connections to
PostgreSQL through a TCP proxy (``TcpProxy`` in ``tests/harness.py``), and are reported as
skipped on SQLite.
"""

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from my_service import DatabaseUnavailable, Settings, create_app

from tests.harness import TcpProxy, scrape, sqlite_file_at_head
from tests.harness.databases import add_probe_routes
from tests.harness.tokens import FULL_ACCESS

# Requests sent while the database is down: far more than the probes that can run meanwhile.
REQUESTS = 20


class ResettingServer:
    """A TCP server that resets every connection it accepts, as a database host whose
    server is down does; it counts them. ``url`` names it as a PostgreSQL database.
    """

    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"postgresql+asyncpg://nobody@127.0.0.1:{port}/nothing"

    async def __aenter__(self) -> "ResettingServer":
        self._server = await asyncio.start_server(self._reset, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _reset(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.transport.abort()


@contextlib.asynccontextmanager
async def service(
    database_url: str, **settings: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The service with the probe routes, started on ``database_url``, and a client of it,
    until the block ends.
    """
    app = create_app(Settings(database_url=database_url, cache_notify=False, **settings))
    add_probe_routes(app)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=FULL_ACCESS
        ) as client,
    ):
        yield app, client


def assert_unavailable(response: httpx.Response) -> None:
    """The kit's 503 for a database that cannot answer: when to retry."""
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] in {"1", "2", "3"}


async def found_back(app: FastAPI) -> None:
    """Wait for the probe that finds the database back."""
    async with asyncio.timeout(30):
        await app.state.breaker.until_up()


async def test_a_database_found_down_is_not_asked_again_by_the_requests_after_it() -> None:
    async with ResettingServer() as database, service(database.url) as (app, client):
        breaker = app.state.breaker
        # Start-up's schema check found it down: one connection tried.
        assert breaker.down
        assert database.connections == 1
        reads = [client.get("/probe/read") for _ in range(REQUESTS // 2)]
        writes = [client.post("/probe/write") for _ in range(REQUESTS // 2)]
        for response in await asyncio.gather(*reads, *writes):
            assert_unavailable(response)
        # Nor does code that takes a connection itself reach it.
        with pytest.raises(DatabaseUnavailable, match="the database is down"):
            async with app.state.engine.connect():
                pass
        assert_unavailable(await client.get("/ready"))
        metrics = await scrape(client)
        # Every request was refused without a connection of its own: the only connections
        # tried since start-up are the probes'.
        assert breaker.stats.refused == REQUESTS + 2
        assert database.connections <= 1 + breaker.stats.probes
        assert breaker.stats.outages == 1
        assert metrics["database_available"] == 0
        assert metrics["database_refused_total"] == REQUESTS + 2
        assert metrics["database_outages_total"] == 1


@pytest.fixture
def postgresql_url(app: FastAPI) -> str:
    """The test database's URL; on SQLite, which has no network to fail, the test is skipped."""
    if app.state.engine.dialect.name != "postgresql":
        pytest.skip("a network between the service and its database is PostgreSQL's")
    return str(app.state.engine.url.render_as_string(hide_password=False))


async def test_a_probe_finds_a_restarted_database_back_and_requests_flow_again(
    postgresql_url: str,
) -> None:
    async with TcpProxy(postgresql_url) as proxy, service(proxy.url) as (app, client):
        breaker = app.state.breaker
        assert (await client.get("/probe/read")).status_code == 200
        proxy.refuse()
        # The pooled connection was cut: lost, which alone does not mark the database down;
        # the new connection refused does.
        assert_unavailable(await client.get("/probe/read"))
        assert not breaker.down
        assert_unavailable(await client.post("/probe/write"))
        assert breaker.down
        for _ in range(REQUESTS):
            assert_unavailable(await client.get("/probe/read"))
        assert breaker.stats.refused == REQUESTS
        proxy.accept()
        await found_back(app)
        assert (await client.get("/probe/read")).status_code == 200
        assert (await client.post("/probe/write")).status_code == 200
        assert (await client.get("/ready")).status_code == 200
        metrics = await scrape(client)
    assert breaker.stats.outages == 1
    assert breaker.stats.probes >= 1
    assert metrics["database_available"] == 1


async def test_a_silent_database_is_probed_at_once_and_serves_again_on_new_connections(
    postgresql_url: str,
) -> None:
    deadlines = {"database_pool_size": 2, "database_statement_timeout": 1.0}
    async with (
        TcpProxy(postgresql_url) as proxy,
        service(proxy.url, **deadlines) as (app, client),
    ):
        breaker = app.state.breaker
        answers = await asyncio.gather(*(client.get("/probe/read") for _ in range(2)))
        assert [answer.status_code for answer in answers] == [200, 200]
        proxy.silence()  # the pooled connections; new ones pass
        try:
            async with asyncio.timeout(30):
                assert_unavailable(await client.get("/probe/read"))
                # No answer within the deadline marked it down, and a probe went at once:
                # on a new connection, it finds the database answering.
                assert breaker.stats.outages == 1
                await found_back(app)
                statuses = [(await client.get("/probe/read")).status_code for _ in range(3)]
        finally:
            proxy.refuse()  # whatever happened, the service stops without waiting on silence
    assert statuses == [200, 200, 200]
    assert breaker.stats.probes == 1


async def test_a_sqlite_write_lock_still_taken_does_not_mark_the_database_down(
    tmp_path: Path,
) -> None:
    database = tmp_path / "busy.db"
    async with service(sqlite_file_at_head(database), database_pool_timeout=0.1) as (app, client):
        breaker = app.state.breaker
        holder = sqlite3.connect(database, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process's writer, holding the lock
        try:
            assert_unavailable(await client.post("/probe/write"))
            assert_unavailable(await client.post("/probe/write"))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert not breaker.down
        assert breaker.stats.outages == 0
        assert (await client.post("/probe/write")).status_code == 200
