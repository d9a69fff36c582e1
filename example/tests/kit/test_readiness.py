"""Readiness (/ready) says whether the instance can query its database, within its own
deadline; liveness (/health) stays cheap and never touches the database.

The test of a silent database runs when the suite runs on PostgreSQL (a TCP relay stands
for the network, ``tests/tcp_proxy.py``), and is reported as skipped on SQLite.
"""

import asyncio
import socket

import httpx
import pytest
from fastapi import FastAPI

from my_service import Settings, create_app, expect_queries

from tests.harness.network import TcpProxy
from tests.harness.tokens import FULL_ACCESS

READY = {"status": "ready"}
NOT_READY = {"detail": "the database is unavailable; retry after the delay in Retry-After"}


async def test_ready_answers_once_the_database_answered_one_query(
    client: httpx.AsyncClient,
) -> None:
    with expect_queries(1):
        response = await client.get("/ready")
    assert response.status_code == 200, response.text
    assert response.json() == READY


async def test_the_guard_lets_readiness_and_liveness_through_when_it_is_full(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    guard = app.state.guard
    taken = 0
    while guard.try_acquire():
        taken += 1
    try:
        # A busy instance is still ready: refusing the probe would take it out of service.
        assert (await client.get("/ready")).status_code == 200
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/no-such-route")).status_code == 503  # the guard is full
    finally:
        for _ in range(taken):
            guard.release()


async def test_an_unreachable_database_is_not_ready_and_the_instance_still_alive() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql+asyncpg://nobody@127.0.0.1:{port}/nothing"
    app = create_app(Settings(database_url=url, cache_notify=False))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=FULL_ACCESS
        ) as client,
    ):
        ready = await client.get("/ready")
        assert ready.status_code == 503, ready.text
        assert ready.json() == NOT_READY
        assert ready.headers["retry-after"] in {"1", "2", "3"}
        assert (await client.get("/health")).json() == {"status": "ok"}


async def test_a_silent_database_is_not_ready_by_the_deadline_and_probes_share_one_check(
    app: FastAPI,
) -> None:
    if app.state.engine.dialect.name != "postgresql":
        pytest.skip("a network between the service and its database is PostgreSQL's")
    async with TcpProxy(app.state.settings.database_url.get_secret_value()) as proxy:
        # Room in the pool for more connections, which would go through: only the one open
        # when the network goes silent hangs, so every probe must share its check.
        settings = Settings(
            database_url=proxy.url,
            cache_notify=False,
            database_pool_size=5,
        )
        silent = create_app(settings)
        transport = httpx.ASGITransport(app=silent)
        async with (
            silent.router.lifespan_context(silent),
            httpx.AsyncClient(
                transport=transport, base_url="http://test", headers=FULL_ACCESS
            ) as client,
        ):
            assert (await client.get("/ready")).status_code == 200
            proxy.silence()
            try:
                async with asyncio.timeout(30):
                    with expect_queries(1):
                        probes = await asyncio.gather(*(client.get("/ready") for _ in range(5)))
                assert [probe.status_code for probe in probes] == [503] * 5
                assert probes[0].json() == NOT_READY
                # The probes answered by their deadline, sharing one check, which still waits
                # on its one connection, well within the statement deadline.
                assert silent.state.engine.sync_engine.pool.checkedout() == 1
                proxy.resume()
                ready = await client.get("/ready")
            finally:
                proxy.refuse()  # whatever happened, the service stops without waiting
    assert ready.status_code == 200, ready.text
