"""A silent invalidation channel is noticed at its first late heartbeat: the cache is bypassed
until the channel answers again, and nothing it held back is lost.

Two instances on the test database, as in ``tests/test_instances.py``; the second listens
through a TCP relay (``tests/tcp_proxy.py``) that can go silent. They run when the suite
runs on PostgreSQL, and are reported as skipped on SQLite, which has no LISTEN/NOTIFY.
"""

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from fastapi import FastAPI

from my_service import CacheListener, Settings, create_app

from tests.harness.network import TcpProxy


def value(result: str) -> Callable[[], Awaitable[str]]:
    """A loader that returns ``result``."""

    async def load() -> str:
        return result

    return load


async def until(listener: CacheListener, condition: Callable[[], bool]) -> None:
    """Wait until ``condition`` holds; fail after ten seconds."""
    try:
        async with asyncio.timeout(10):
            await listener.wait_until(condition)
    except TimeoutError:
        raise AssertionError(f"still not so after 10 s: {listener.cache.stats}") from None


async def test_a_silent_channel_bypasses_the_cache_until_it_answers_and_loses_nothing(
    app: FastAPI,
) -> None:
    if app.state.engine.dialect.name != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; this runs when the suite runs on PostgreSQL")
    async with TcpProxy(app.state.settings.database_url.get_secret_value()) as proxy:
        other = create_app(Settings(database_url=proxy.url))
        async with other.router.lifespan_context(other):
            listener: CacheListener = other.state.cache_listener
            cache = other.state.cache
            # Noticed within two heartbeats: one sent, then its reply that much late.
            assert 2 * listener.heartbeat <= 2.0
            assert await cache.get_or_load("item", 1, value("old")) == "old"
            assert await cache.get_or_load("item", 2, value("kept")) == "kept"
            silences = cache.stats.listener_silences
            proxy.silence()
            try:
                async with app.state.sessions() as session:
                    app.state.cache.invalidate_on_commit(session, "item", 1)
                    await session.commit()  # its notice is held up in the silent network
                await until(listener, lambda: cache.bypass)
                # A late heartbeat, not the end of the connection: nothing was lost yet.
                assert cache.stats.listener_silences > silences
                assert cache.stats.listener_reconnects == 0
                assert await cache.get_or_load("item", 2, value("loaded")) == "loaded"
                proxy.resume()
                await until(listener, lambda: not cache.bypass)
            finally:
                proxy.resume()
            # The notice came before the heartbeat's reply; the rest of the cache stayed.
            assert cache.stats.notifications_received == 1
            assert await cache.get_or_load("item", 1, value("new")) == "new"
            assert await cache.get_or_load("item", 2, value("unused")) == "kept"
            assert cache.stats.listener_reconnects == 0
