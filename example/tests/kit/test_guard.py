"""The overload guard: N requests at once, M waiting, the rest a fast 503 with Retry-After."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import httpx
from starlette.types import Message, Receive, Scope, Send

from my_service import (
    ConcurrencyLimit,
    OverloadGuard,
    RequestBodyLimit,
    RequestBodyStats,
    expect_queries,
)

from tests.harness.waiting import eventually, scrape


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
    assert guard.pop("guard_loop_lag_ms") >= 0
    assert guard == {
        "guard_limit": 10,
        "guard_in_flight": 0,
        "guard_waiting": 0,
        "guard_admitted_total": 1,
        "guard_rejected_full_total": 0,
        "guard_rejected_waited_too_long_total": 0,
        "guard_rejected_standing_line_total": 0,
        "guard_rejected_kept_connection_total": 0,
        "guard_gone_while_waiting_total": 0,
        "guard_reading_bodies": 0,
        "guard_bodies_too_large_total": 0,
        "guard_bodies_too_slow_total": 0,
        "guard_responses_not_read_total": 0,
    }


# The adaptive limit and the line, driven by a clock the test moves: no timing involved.


class FakeClock:
    """A clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def serve(
    limit: ConcurrencyLimit,
    clock: FakeClock,
    rounds: int,
    latency: Callable[[int], float],
    at_once: int,
) -> list[int]:
    """Serve ``rounds`` rounds of ``at_once`` requests at a time (at most the limit), each
    taking ``latency(requests in flight)``; returns the limit after each round.
    """
    limits = []
    for _ in range(rounds):
        held: list[float] = []
        while len(held) < at_once and limit.try_acquire():
            held.append(clock.now)
        assert held, "the limit admitted nothing"
        clock.now += latency(len(held))
        for arrived in held:
            limit.release(arrived)
        limits.append(limit.limit)
    return limits


def cpu_bound(knee: int, unloaded: float = 0.010) -> Callable[[int], float]:
    """Latency of a service that serves ``knee`` requests at once without queueing."""
    return lambda in_flight: unloaded * max(1.0, in_flight / knee)


def test_the_limit_falls_as_latency_rises_and_recovers_when_it_falls() -> None:
    clock = FakeClock()
    limit = ConcurrencyLimit(10, 5, 30.0, min_in_flight=2, clock=clock)
    assert serve(limit, clock, 5, cpu_bound(knee=10), at_once=10) == [10] * 5
    # The service slows down: past 3 requests at once, each one more adds latency.
    falling = serve(limit, clock, 100, cpu_bound(knee=3), at_once=10)
    settled = falling[50:]
    assert set(settled) <= {3, 4, 5, 6}, falling  # near the knee, above the floor
    assert cpu_bound(knee=3)(max(settled)) <= 2 * 0.010  # admitted latency stays near unloaded
    # Capacity comes back: the limit climbs back to its ceiling, and no further.
    rising = serve(limit, clock, 200, cpu_bound(knee=10), at_once=10)
    assert rising == sorted(rising), rising
    assert rising[-1] == 10
    assert limit.stats.in_flight == 0


def test_an_idle_worker_starts_again_from_its_ceiling() -> None:
    clock = FakeClock()
    limit = ConcurrencyLimit(10, 5, 30.0, min_in_flight=2, idle_reset=1.0, clock=clock)
    serve(limit, clock, 5, cpu_bound(knee=10), at_once=10)
    fallen = serve(limit, clock, 100, cpu_bound(knee=3), at_once=10)[-1]
    assert fallen < 10
    clock.now += 0.5  # a pause shorter than idle_reset: the limit stays where it was
    assert serve(limit, clock, 1, cpu_bound(knee=3), at_once=1) == [fallen]
    clock.now += 1.0
    assert limit.try_acquire()
    assert limit.limit == 10
    limit.release()


def test_the_limit_stays_within_its_bounds() -> None:
    clock = FakeClock()
    limit = ConcurrencyLimit(8, 5, 30.0, min_in_flight=3, clock=clock)
    serve(limit, clock, 5, cpu_bound(knee=8), at_once=8)
    limits = serve(limit, clock, 200, cpu_bound(knee=1, unloaded=0.05), at_once=8)
    assert min(limits) == 3
    assert max(serve(limit, clock, 300, cpu_bound(knee=8), at_once=8)) == 8


def test_a_static_limit_does_not_move() -> None:
    clock = FakeClock()
    limit = ConcurrencyLimit(10, 5, 30.0, min_in_flight=2, adaptive=False, clock=clock)
    serve(limit, clock, 5, cpu_bound(knee=10), at_once=10)
    assert serve(limit, clock, 50, cpu_bound(knee=1), at_once=10) == [10] * 50


async def wait_in_line(
    limit: ConcurrencyLimit, clock: FakeClock, at: float, name: str, admitted: list[str]
) -> "asyncio.Task[bool]":
    """Start ``name``'s acquire at fake time ``at``; it notes its name in ``admitted``."""
    clock.now = at
    started = asyncio.Event()

    async def acquire() -> bool:
        started.set()  # acquire() joins the line before it first suspends
        if await limit.acquire():
            admitted.append(name)
            return True
        return False

    task = asyncio.create_task(acquire())
    await started.wait()
    return task


async def test_a_burst_waits_and_is_served_in_order() -> None:
    clock = FakeClock()
    limit = ConcurrencyLimit(2, 8, 30.0, clock=clock)
    assert [limit.try_acquire(), limit.try_acquire()] == [True, True]
    admitted: list[str] = []
    burst = [
        await wait_in_line(limit, clock, clock.now, f"request {number}", admitted)
        for number in range(8)
    ]
    for released in range(1, 11):  # each well within the line's interval: a burst, not a queue
        clock.now += 0.01
        limit.release()
        served = min(released, 8)
        await eventually(lambda: len(admitted) == served)  # noqa: B023 (awaited at once)
    assert await asyncio.gather(*burst) == [True] * 8
    assert admitted == [f"request {number}" for number in range(8)]
    assert (limit.stats.rejected_full, limit.stats.rejected_standing_line) == (0, 0)
    assert limit.stats.in_flight == 0


async def test_a_standing_line_is_cut_short_and_serves_the_newest_first() -> None:
    clock = FakeClock()
    start = clock.now
    limit = ConcurrencyLimit(1, 10, 30.0, standing_wait_timeout=0.005, clock=clock)
    assert limit.try_acquire()
    admitted: list[str] = []
    oldest = await wait_in_line(limit, clock, start, "oldest", admitted)
    older = await wait_in_line(limit, clock, start + 29.999, "older", admitted)
    # The line has not been empty for 30 s: it stands, and the oldest has waited too long.
    newer = await wait_in_line(limit, clock, start + 30.0, "newer", admitted)
    await eventually(oldest.done)
    newest = await wait_in_line(limit, clock, start + 30.001, "newest", admitted)
    clock.now = start + 30.002
    limit.release()  # newest first while the line stands
    await eventually(lambda: admitted == ["newest"])
    clock.now = start + 30.0045  # "older" has now waited over 5 ms: cut, not served
    limit.release()
    await eventually(lambda: admitted == ["newest", "newer"])
    assert [await task for task in (oldest, older, newer, newest)] == [False, False, True, True]
    assert limit.stats.rejected_standing_line == 2
    assert limit.stats.rejected_waited_too_long == 0
    limit.release()
    assert (limit.stats.in_flight, limit.stats.waiting) == (0, 0)


async def test_once_the_line_overflows_a_kept_connection_is_refused_at_once() -> None:
    # A client that sends again the moment it is answered has waited for nothing; one on a
    # new connection may have waited unseen in the accept queue, so it keeps its turn.
    inner = SlowApp()
    limit = ConcurrencyLimit(1, 4, 5.0, clock=FakeClock())
    guard = OverloadGuard(inner, limit, exempt=[])

    async def request(port: int) -> int:
        messages: list[Message] = [{"type": "http.request", "body": b"", "more_body": False}]
        sent: list[Message] = []

        async def receive() -> Message:
            if messages:
                return messages.pop(0)
            await asyncio.Event().wait()  # the client stays connected
            raise AssertionError

        async def send(message: Message) -> None:
            sent.append(message)

        scope: Scope = {"type": "http", "path": "/slow", "headers": [], "client": ("::1", port)}
        await guard(scope, receive, send)
        return int(sent[0]["status"])

    inner.release.set()
    assert await request(1) == 200  # port 1 is now a connection the guard has answered
    inner.release.clear()
    running = asyncio.create_task(request(2))
    await eventually(lambda: limit.stats.in_flight == 1)
    line = {port: asyncio.create_task(request(port)) for port in (3, 1, 0, 4)}
    await eventually(lambda: limit.stats.waiting == 4)  # no overflow yet: port 1 waits too
    assert await request(5) == 503
    line[4].cancel()  # a client gives up: one place in the line is free again
    await eventually(lambda: limit.stats.waiting == 3)
    assert await request(1) == 503  # kept, and the line has just overflowed
    late = [asyncio.create_task(request(6))]  # a new connection still waits
    await eventually(lambda: limit.stats.waiting == 4)
    inner.release.set()
    statuses = await asyncio.gather(running, line[3], line[1], line[0], *late)
    assert statuses == [200] * 5
    assert (limit.stats.rejected_full, limit.stats.rejected_kept_connection) == (1, 1)


# Request bodies are read before the guard gives them a place.


def body_limited(
    max_bytes: int = 100, timeout: float = 30.0
) -> tuple[list[bytes], ConcurrencyLimit, RequestBodyLimit, httpx.AsyncClient]:
    received: list[bytes] = []

    async def echo(scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        received.append(message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": message["body"]})

    limit = ConcurrencyLimit(max_in_flight=1, max_waiting=0, wait_timeout=30)
    guarded = OverloadGuard(echo, limit, exempt=[])
    app = RequestBodyLimit(guarded, max_bytes=max_bytes, timeout=timeout, stats=RequestBodyStats())
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    return received, limit, app, client


async def test_a_body_over_the_limit_is_refused_from_its_content_length() -> None:
    received, limit, app, client = body_limited(max_bytes=100)
    response = await client.post("/echo", content=b"x" * 101)
    assert response.status_code == 413
    assert response.json() == {
        "detail": "the request body is larger than the limit of 100 bytes (MAX_BODY_BYTES)"
    }
    assert response.headers["connection"] == "close"
    assert (await client.post("/echo", content=b"x" * 100)).status_code == 200
    assert received == [b"x" * 100]
    assert (app.stats.bodies_too_large, limit.stats.admitted) == (1, 1)


async def test_a_chunked_body_is_refused_once_it_passes_the_limit() -> None:
    received, limit, _, client = body_limited(max_bytes=100)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"x" * 60

    response = await client.post("/echo", content=chunks())
    assert response.status_code == 413
    assert "100 bytes (MAX_BODY_BYTES)" in response.json()["detail"]
    assert received == []
    assert limit.stats.admitted == 0


async def test_a_body_that_trickles_in_holds_no_place_and_is_cut_off() -> None:
    received, limit, app, client = body_limited(timeout=0.05)
    messages = [{"type": "http.request", "body": b"x", "more_body": True}]
    never = asyncio.Event()
    sent: list[Message] = []

    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        await never.wait()  # the rest of the body never comes
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": "/echo",
        "headers": [(b"content-length", b"10")],
    }
    reading = asyncio.create_task(app(scope, receive, send))
    await eventually(lambda: app.stats.reading_bodies == 1)
    assert limit.stats.in_flight == 0
    assert (await client.post("/echo", content=b"fast")).status_code == 200  # the one place
    await reading
    assert sent[0]["status"] == 408
    assert b"BODY_READ_TIMEOUT" in sent[1]["body"]
    assert received == [b"fast"]
    assert (app.stats.bodies_too_slow, app.stats.reading_bodies) == (1, 0)


async def test_a_body_read_before_admission_reaches_the_app_whole() -> None:
    received, _, _, client = body_limited(max_bytes=100)

    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"first ", b"second ", b"third"):
            yield part

    response = await client.post("/echo", content=chunks())
    assert response.content == b"first second third"
    assert received == [b"first second third"]
    assert (await client.get("/echo")).status_code == 200  # no body: passes straight through


# A burst drains; a line that keeps taking requests stands. Driven by the fake clock.


async def test_a_burst_of_three_times_the_limit_is_served_whole() -> None:
    # Thirty requests at once against an idle limit of ten: the twenty that wait need two
    # rounds of work, 180 ms here, well past the line's 100 ms; but the line moves all along.
    clock = FakeClock()
    limit = ConcurrencyLimit(10, 20, 0.1, clock=clock)
    assert all(limit.try_acquire() for _ in range(10))
    admitted: list[str] = []
    burst = [
        await wait_in_line(limit, clock, clock.now, f"request {number}", admitted)
        for number in range(20)
    ]
    for _ in range(30):  # a worker's loop finishes one of them every 6 ms
        clock.now += 0.006
        limit.release()
    assert await asyncio.gather(*burst) == [True] * 20
    assert admitted == [f"request {number}" for number in range(20)]
    assert (limit.stats.rejected_waited_too_long, limit.stats.rejected_standing_line) == (0, 0)
    assert (limit.stats.in_flight, limit.stats.waiting) == (0, 0)


async def test_a_line_that_keeps_taking_requests_stands_and_is_cut_short() -> None:
    # Requests arrive as fast as they are served, so the line never empties: once it has
    # stood for 100 ms, those waiting longer than 5 ms are refused, and those arriving
    # after them are served at once.
    clock = FakeClock()
    start = clock.now
    limit = ConcurrencyLimit(10, 20, 0.1, standing_wait_timeout=0.005, clock=clock)
    assert all(limit.try_acquire() for _ in range(10))
    admitted: list[str] = []
    burst = [
        await wait_in_line(limit, clock, start, f"burst {number}", admitted) for number in range(19)
    ]
    arrivals = []
    for number in range(30):  # one arrives 3 ms before each one finishes
        arrivals.append(
            await wait_in_line(limit, clock, clock.now + 0.003, f"arrival {number}", admitted)
        )
        clock.now += 0.003
        limit.release()
    # Arrival 17 came at 105 ms, to a line that had not been empty since the start.
    stood = 17
    for _ in range(limit.stats.in_flight):
        limit.release()
    burst_served = await asyncio.gather(*burst)
    arrivals_served = await asyncio.gather(*arrivals)
    assert burst_served == [True] * stood + [False] * (19 - stood)
    assert arrivals_served == [False] * stood + [True] * (30 - stood)
    assert admitted[stood:] == [f"arrival {number}" for number in range(stood, 30)]
    assert limit.stats.rejected_standing_line == 19
    assert limit.stats.rejected_waited_too_long == 0
