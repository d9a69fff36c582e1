"""Many processes and instances on one database: what a write in one does to the others' caches.

On PostgreSQL every instance listens for the invalidations the others send (LISTEN/NOTIFY).
The tests that take ``other_app`` or ``postgresql_app`` run two app instances on the test
database, as two worker processes or two machines would; they run when the suite runs on
PostgreSQL, and on SQLite they are reported as skipped, with the reason. SQLite has no such
channel; what holds there across worker processes on one file (each keeps its own cache,
and the TTL bounds how stale the others are) is tested on a file of its own in every run.
"""

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from my_service import (
    AsyncTTLCache,
    CacheListener,
    Settings,
    create_app,
    expect_queries,
    invalidation_sender,
)

from tests.harness.databases import sqlite_file_at_head
from tests.harness.tokens import FULL_ACCESS


@pytest.fixture
def postgresql_app(app: FastAPI) -> FastAPI:
    """The service on the test database, which must be PostgreSQL: on SQLite, which has no
    LISTEN/NOTIFY, the test is skipped, saying so.
    """
    if app.state.engine.dialect.name != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; this runs when the suite runs on PostgreSQL")
    return app


@pytest.fixture
async def other_app(postgresql_app: FastAPI) -> AsyncIterator[FastAPI]:
    """A second instance of the service on the same database, as another process would be."""
    other = create_app(postgresql_app.state.settings)
    async with other.router.lifespan_context(other):
        yield other


def value(result: str) -> Callable[[], Awaitable[str]]:
    """A loader that returns ``result``."""

    async def load() -> str:
        return result

    return load


async def commit_invalidating(app: FastAPI, *keys: int) -> None:
    """Commit a transaction through ``app`` that invalidates ``("item", key)`` for each key."""
    async with app.state.sessions() as session:
        for key in keys:
            app.state.cache.invalidate_on_commit(session, "item", key)
        await session.commit()


async def until(app: FastAPI, condition: Callable[[CacheListener], bool]) -> None:
    """Wait until ``condition`` holds for ``app``'s listener; fail after ten seconds."""
    listener: CacheListener = app.state.cache_listener
    try:
        async with asyncio.timeout(10):
            await listener.wait_until(lambda: condition(listener))
    except TimeoutError:
        raise AssertionError(
            f"still not so after 10 s: listening={listener.listening}, {listener.cache.stats}"
        ) from None


def received(count: int) -> Callable[[CacheListener], bool]:
    """The condition: the listener has applied ``count`` notifications from other instances."""
    return lambda listener: listener.cache.stats.notifications_received >= count


async def test_a_commit_in_one_instance_drops_the_key_in_the_other(
    app: FastAPI, other_app: FastAPI
) -> None:
    ours, theirs = app.state.cache, other_app.state.cache
    assert await theirs.get_or_load("item", 1, value("old")) == "old"
    assert await theirs.get_or_load("item", 2, value("kept")) == "kept"
    await commit_invalidating(app, 1)
    await until(other_app, received(1))
    assert await theirs.get_or_load("item", 1, value("new")) == "new"
    assert await theirs.get_or_load("item", 2, value("unused")) == "kept"
    assert ours.stats.notifications_received == 0


async def test_an_instance_ignores_its_own_notifications(app: FastAPI, other_app: FastAPI) -> None:
    ours = app.state.cache
    await commit_invalidating(app, 1)
    # Loaded after our own commit: our own notice, arriving later, must not drop it.
    assert await ours.get_or_load("item", 1, value("fresh")) == "fresh"
    await commit_invalidating(other_app, 2)
    # Notices arrive in commit order: once the other's is in, our own has come and gone.
    await until(app, received(1))
    assert await ours.get_or_load("item", 1, value("unused")) == "fresh"
    assert ours.stats.notifications_received == 1


async def test_a_rolled_back_write_sends_nothing(app: FastAPI, other_app: FastAPI) -> None:
    ours, theirs = app.state.cache, other_app.state.cache
    for key in (1, 2, 3):
        await ours.get_or_load("item", key, value("old"))
        await theirs.get_or_load("item", key, value("old"))
    async with app.state.sessions() as session:
        ours.invalidate_on_commit(session, "item", 1)
        await (await session.connection()).execute(text("SELECT 1"))
        await session.rollback()
    async with app.state.sessions() as session:
        ours.invalidate_on_commit(session, "item", 2)
        with pytest.raises(DBAPIError, match="division by zero"):
            await (await session.connection()).execute(text("SELECT 1 / 0"))
    await commit_invalidating(app, 3)  # a marker: notices arrive in commit order
    await until(other_app, received(1))
    assert theirs.stats.notifications_received == 1
    for cache in (ours, theirs):
        assert await cache.get_or_load("item", 1, value("unused")) == "old"
        assert await cache.get_or_load("item", 2, value("unused")) == "old"
        assert await cache.get_or_load("item", 3, value("new")) == "new"


async def test_too_many_keys_for_one_notice_drop_their_whole_namespace(
    app: FastAPI, other_app: FastAPI
) -> None:
    theirs = other_app.state.cache
    await theirs.get_or_load("item", 1, value("old"))
    await theirs.get_or_load("owner", 1, value("kept"))
    # 3,000 keys do not fit in one notice (PostgreSQL takes under 8,000 bytes).
    await commit_invalidating(app, *range(1_000, 4_000))
    await until(other_app, received(1))
    assert await theirs.get_or_load("item", 1, value("new")) == "new"
    assert await theirs.get_or_load("owner", 1, value("unused")) == "kept"


async def test_a_commit_returns_once_its_notice_went_out_after_it(
    app: FastAPI, other_app: FastAPI
) -> None:
    theirs = other_app.state.cache
    await theirs.get_or_load("item", 1, value("old"))
    await commit_invalidating(app, 1)
    # Sent by then, in a transaction of its own: the write's commit did not wait for it.
    sender = invalidation_sender(app.state.cache)
    assert sender is not None
    stats = sender.stats
    assert (stats.notifications_sent, stats.invalidations_sent) == (1, 1)
    assert stats.notification_failures == 0
    await until(other_app, received(1))
    assert await theirs.get_or_load("item", 1, value("new")) == "new"


async def test_keys_of_writes_committed_during_a_notice_go_out_together_in_the_next(
    app: FastAPI, other_app: FastAPI
) -> None:
    theirs = other_app.state.cache
    for key in (1, 2, 3):
        await theirs.get_or_load("item", key, value("old"))
    await commit_invalidating(app, 1)
    sender = invalidation_sender(app.state.cache)
    assert sender is not None
    # Queued before the sender runs, as the keys of writes that commit while a notice is
    # under way are: one notice takes them all.
    waits = [sender.send([("item", key)]) for key in (2, 3)]
    await asyncio.gather(*waits)
    assert (sender.stats.notifications_sent, sender.stats.invalidations_sent) == (2, 3)
    await until(other_app, received(2))
    for key in (1, 2, 3):
        assert await theirs.get_or_load("item", key, value("new")) == "new"


async def test_no_key_of_concurrent_commits_is_lost(app: FastAPI, other_app: FastAPI) -> None:
    theirs, keys = other_app.state.cache, range(1, 33)
    for key in keys:
        await theirs.get_or_load("item", key, value("old"))
    await asyncio.gather(*(commit_invalidating(app, key) for key in keys))
    sender = invalidation_sender(app.state.cache)
    assert sender is not None
    assert (sender.stats.invalidations_sent, sender.stats.notification_failures) == (len(keys), 0)
    await until(other_app, received(sender.stats.notifications_sent))
    for key in keys:
        assert await theirs.get_or_load("item", key, value("new")) == "new"


async def test_a_dropped_listener_empties_the_cache_and_caching_resumes_after_reconnecting(
    app: FastAPI, other_app: FastAPI
) -> None:
    listener: CacheListener = other_app.state.cache_listener
    theirs = other_app.state.cache
    await theirs.get_or_load("item", 1, value("old"))
    # Hold the reconnection back, to look at the cache while nobody listens.
    reconnect, connect = asyncio.Event(), listener.connect

    async def connect_when_let() -> "asyncpg.Connection[Any]":
        await reconnect.wait()
        return await connect()

    listener.connect = connect_when_let
    async with app.state.engine.connect() as connection:
        terminate = text("SELECT pg_terminate_backend(:pid)")
        await connection.execute(terminate, {"pid": listener.backend_pid})
    await until(other_app, lambda listener: not listener.listening)
    assert len(theirs) == 0
    # Deaf, it may miss invalidations: every read loads, and nothing is stored.
    assert await theirs.get_or_load("item", 1, value("fresh")) == "fresh"
    assert await theirs.get_or_load("item", 1, value("fresher")) == "fresher"
    assert (theirs.stats.bypassed, len(theirs)) == (2, 0)
    reconnect.set()
    await until(other_app, lambda listener: listener.listening)
    assert theirs.stats.listener_reconnects == 1
    assert await theirs.get_or_load("item", 1, value("cached")) == "cached"
    assert await theirs.get_or_load("item", 1, value("unused")) == "cached"
    await commit_invalidating(app, 1)
    await until(other_app, received(1))
    assert await theirs.get_or_load("item", 1, value("new")) == "new"


async def test_a_listener_whose_connection_goes_silent_finds_out_by_its_heartbeat(
    app: FastAPI, other_app: FastAPI
) -> None:
    listener: CacheListener = other_app.state.cache_listener
    theirs = other_app.state.cache
    database = app.state.engine.url
    silent, released = asyncio.Event(), asyncio.Event()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if silent.is_set():
                    await released.wait()  # a dead network: nothing gets through, nothing closes
                    return
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def relay(client: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server, server_writer = await asyncio.open_connection(database.host, database.port)
        await asyncio.gather(forward(client, server_writer), forward(server, client_writer))

    relay_server = await asyncio.start_server(relay, "127.0.0.1", 0)
    connect = listener.connect
    listener.connect = functools.partial(
        asyncpg.connect,
        host="127.0.0.1",
        port=relay_server.sockets[0].getsockname()[1],
        user=database.username,
        password=database.password,
        database=database.database,
    )
    listener.heartbeat = 0.2
    try:
        async with app.state.engine.connect() as connection:
            terminate = text("SELECT pg_terminate_backend(:pid)")
            await connection.execute(terminate, {"pid": listener.backend_pid})
        await until(other_app, lambda listener: theirs.stats.listener_reconnects == 1)
        await theirs.get_or_load("item", 1, value("old"))
        listener.connect = connect
        silent.set()
        await until(other_app, lambda listener: theirs.stats.listener_reconnects == 2)
        assert await theirs.get_or_load("item", 1, value("new")) == "new"
    finally:
        released.set()
        relay_server.close()
        await relay_server.wait_closed()


async def test_shutdown_closes_the_listening_connection(
    postgresql_app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    stopping = create_app(postgresql_app.state.settings)
    async with stopping.router.lifespan_context(stopping):
        listener: CacheListener = stopping.state.cache_listener
        backend_pid = listener.backend_pid
        assert listener.listening
    assert not listener.listening
    # PostgreSQL ends the session before it closes the socket: gone once close() returns.
    async with postgresql_app.state.engine.connect() as connection:
        sessions = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
        assert (await connection.execute(sessions, {"pid": backend_pid})).scalar_one() == 0
    assert not [record for record in caplog.records if record.levelname == "WARNING"]


async def test_keys_sent_to_other_processes_must_be_str_or_int(app: FastAPI) -> None:
    async with app.state.sessions() as session:
        with pytest.raises(TypeError, match="takes str or int keys"):
            app.state.cache.invalidate_on_commit(session, "square", (3,))


async def test_on_sqlite_each_worker_keeps_its_own_cache_until_the_ttl(tmp_path: Path) -> None:
    # Two instances on one SQLite file, as `uvicorn --workers 2` runs them: no channel
    # between them, so a write drops the writer's entries at once and the other's at expiry.
    url = sqlite_file_at_head(tmp_path / "shared.db")
    writer, other = create_app(Settings(database_url=url)), create_app(Settings(database_url=url))
    async with writer.router.lifespan_context(writer), other.router.lifespan_context(other):
        assert writer.state.cache_listener is None
        assert writer.state.cache.channel is None
        now = [0.0]
        ttl = other.state.settings.cache_ttl_seconds
        theirs = other.state.cache = AsyncTTLCache(10, ttl, timer=lambda: now[0])
        ours = writer.state.cache
        for cache in (ours, theirs):
            assert await cache.get_or_load("item", 1, value("old")) == "old"
        await commit_invalidating(writer, 1)
        assert await ours.get_or_load("item", 1, value("new")) == "new"
        assert await theirs.get_or_load("item", 1, value("unused")) == "old"
        now[0] = ttl * 1.1 + 0.001  # past the TTL and its jitter
        assert await theirs.get_or_load("item", 1, value("new")) == "new"


async def test_a_write_through_one_instance_is_seen_by_the_others_next_read(
    client: httpx.AsyncClient, other_app: FastAPI
) -> None:
    transport = httpx.ASGITransport(app=other_app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://other", headers=FULL_ACCESS
    ) as other:
        assert (await other.get("/items/1")).status_code == 404  # a "not found", cached
        owner = (await client.post("/owners", json={"name": "Ada"})).json()
        body = {"name": "Lamp", "price_cents": 100, "owner_id": owner["id"]}
        created = (await client.post("/items", json=body)).json()
        await until(other_app, received(1))
        with expect_queries(1):
            assert (await other.get("/items/1")).json() == created
        with expect_queries(0):
            assert (await other.get("/items/1")).json() == created
        patched = await client.patch("/items/1", json={"price_cents": 5})
        assert "notify;dur=" in patched.headers["server-timing"]
        updated = patched.json()
        await until(other_app, received(2))
        assert (await other.get("/items/1")).json() == updated != created
        assert (await client.delete("/items/1")).status_code == 204
        await until(other_app, received(3))
        assert (await other.get("/items/1")).status_code == 404
