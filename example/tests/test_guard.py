"""The overload guard: N requests at once, M waiting, the rest a fast 503 with Retry-After."""

import asyncio
import contextlib

import httpx
from starlette.types import Message, Receive, Scope, Send

from conftest import eventually, scrape
from my_service import ConcurrencyLimit, OverloadGuard, expect_queries


class SlowApp:
    """An ASGI app whose requests block until released, counting how many run at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.running = 0
        self.most_at_once = 0
        self.scopes: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope["type"])
        if scope["type"] != "http":
            return
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        if scope["path"] != "/health":
            # Bounded, so that a broken guard fails the test instead of hanging it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), timeout=10)
        self.running -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})


def guarded(
    max_in_flight: int, max_waiting: int, wait_timeout: float = 30.0
) -> tuple[SlowApp, ConcurrencyLimit, httpx.AsyncClient]:
    inner = SlowApp()
    limit = ConcurrencyLimit(max_in_flight, max_waiting, wait_timeout)
    guard = OverloadGuard(inner, limit, exempt=["/health"])
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://test")
    return inner, limit, client


async def test_n_run_m_wait_and_the_rest_are_refused_at_once() -> None:
    inner, limit, client = guarded(max_in_flight=2, max_waiting=2)
    requests = [asyncio.create_task(client.get("/slow")) for _ in range(20)]
    first_answers = []
    for answer in asyncio.as_completed(requests, timeout=10):
        first_answers.append(await answer)  # the refusals come back while the rest wait
        if len(first_answers) == 16:
            break
    assert [response.status_code for response in first_answers] == [503] * 16
    assert (limit.stats.in_flight, limit.stats.waiting) == (2, 2)
    inner.release.set()
    statuses = sorted(response.status_code for response in await asyncio.gather(*requests))
    assert statuses == [200] * 4 + [503] * 16
    assert inner.most_at_once == 2
    assert (limit.stats.admitted, limit.stats.rejected_full) == (4, 16)
    assert (limit.stats.in_flight, limit.stats.waiting) == (0, 0)


async def test_a_refusal_is_a_small_json_503_with_retry_after() -> None:
    inner, _, client = guarded(max_in_flight=1, max_waiting=0)
    blocked = asyncio.create_task(client.get("/slow"))
    await eventually(lambda: inner.running == 1)
    response = await client.get("/slow")
    inner.release.set()
    await blocked
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) in {1, 2, 3}
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"] == "application/json"
    assert "overloaded" in response.json()["detail"]


async def test_a_request_that_waits_past_the_timeout_is_refused() -> None:
    inner, limit, client = guarded(max_in_flight=1, max_waiting=1, wait_timeout=0.05)
    blocked = asyncio.create_task(client.get("/slow"))
    await eventually(lambda: inner.running == 1)
    late = await client.get("/slow")
    inner.release.set()
    assert (await blocked).status_code == 200
    assert late.status_code == 503
    assert limit.stats.rejected_waited_too_long == 1


async def test_a_client_cancelled_while_waiting_frees_its_place() -> None:
    inner, limit, client = guarded(max_in_flight=1, max_waiting=1)
    blocked = asyncio.create_task(client.get("/slow"))
    await eventually(lambda: inner.running == 1)
    impatient = asyncio.create_task(client.get("/slow"))
    await eventually(lambda: limit.stats.waiting == 1)
    impatient.cancel()
    await eventually(lambda: limit.stats.waiting == 0)
    patient = asyncio.create_task(client.get("/slow"))  # takes the place the other left
    await eventually(lambda: limit.stats.waiting == 1)
    inner.release.set()
    assert [(await blocked).status_code, (await patient).status_code] == [200, 200]
    assert (limit.stats.gone_while_waiting, limit.stats.rejected_full) == (1, 0)
    assert (limit.stats.in_flight, limit.stats.waiting) == (0, 0)


async def test_a_client_that_disconnects_while_waiting_frees_its_place() -> None:
    inner, limit, client = guarded(max_in_flight=1, max_waiting=1)
    guard = OverloadGuard(inner, limit, exempt=[])
    blocked = asyncio.create_task(client.get("/slow"))
    await eventually(lambda: inner.running == 1)
    messages: list[Message] = [
        {"type": "http.request", "body": b"", "more_body": False},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "GET", "path": "/slow", "headers": []}
    await guard(scope, receive, send)  # returns once the disconnect is seen, still blocked
    assert (limit.stats.waiting, limit.stats.gone_while_waiting) == (0, 1)
    assert sent[0]["status"] == 503
    inner.release.set()
    assert (await blocked).status_code == 200
    assert limit.stats.in_flight == 0


async def test_a_waiting_request_gets_its_body_once_admitted() -> None:
    received: list[bytes] = []

    async def echo(scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        received.append(message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": message["body"]})

    limit = ConcurrencyLimit(max_in_flight=1, max_waiting=1, wait_timeout=30)
    assert limit.try_acquire()  # someone else holds the only place
    guard = OverloadGuard(echo, limit, exempt=[])
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://test")
    posting = asyncio.create_task(client.post("/echo", content=b"payload"))
    await eventually(lambda: limit.stats.waiting == 1)
    limit.release()
    assert (await posting).content == b"payload"
    assert received == [b"payload"]


async def test_health_bypasses_a_full_guard() -> None:
    inner, limit, client = guarded(max_in_flight=1, max_waiting=0)
    blocked = asyncio.create_task(client.get("/slow"))
    await eventually(lambda: inner.running == 1)
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/slow")).status_code == 503
    inner.release.set()
    await blocked
    assert limit.stats.admitted == 1


async def test_lifespan_and_websocket_scopes_pass_through_untouched() -> None:
    inner = SlowApp()
    limit = ConcurrencyLimit(max_in_flight=1, max_waiting=0, wait_timeout=1)
    guard = OverloadGuard(inner, limit, exempt=[])

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        raise AssertionError(f"the guard answered {message}")

    for kind in ("lifespan", "websocket"):
        await guard({"type": kind, "path": "/ws"}, receive, send)
    assert inner.scopes == ["lifespan", "websocket"]
    assert limit.stats.admitted == 0


async def test_metrics_report_the_guard_counters(client: httpx.AsyncClient) -> None:
    await client.get("/health")  # exempt: not counted
    await client.get("/openapi.json")
    with expect_queries(0):
        samples = await scrape(client)
    guard = {name: value for name, value in samples.items() if name.startswith("guard_")}
    assert guard == {
        "guard_in_flight": 0,
        "guard_waiting": 0,
        "guard_admitted_total": 1,
        "guard_rejected_full_total": 0,
        "guard_rejected_waited_too_long_total": 0,
        "guard_gone_while_waiting_total": 0,
    }
