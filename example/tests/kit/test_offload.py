"""The offload wrapper: blocking work runs in the service's own bounded pool of threads."""

import asyncio
import threading
import traceback
from contextvars import ContextVar

import httpx
import pytest
from fastapi import FastAPI

from my_service import OffloadDep, Offloader, Overloaded, query_budget

from tests.harness.waiting import eventually

request_id: ContextVar[str] = ContextVar("request_id", default="none")


class BlockingWork:
    """Blocks worker threads until released, tracking how many run at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.most_at_once = 0
        self.entered = threading.Semaphore(0)

    def __call__(self, label: str) -> str:
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        self.entered.release()
        self.release.wait(timeout=10)
        with self.lock:
            self.running -= 1
        return label


async def wait_for_threads(work: BlockingWork, count: int) -> None:
    for _ in range(count):
        await asyncio.to_thread(work.entered.acquire)


async def test_the_event_loop_keeps_serving_while_threads_block(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    offloader: Offloader = app.state.offloader
    work = BlockingWork()
    blocked = [asyncio.create_task(offloader.run(work, f"job {n}")) for n in range(3)]
    await wait_for_threads(work, 3)
    response = await client.get("/health")  # answered while all three threads block
    assert response.status_code == 200
    assert not any(task.done() for task in blocked)
    work.release.set()
    assert await asyncio.gather(*blocked) == ["job 0", "job 1", "job 2"]


async def test_no_more_threads_run_at_once_than_the_pool_has() -> None:
    offloader, work = Offloader(threads=2, max_waiting=10, wait_timeout=30), BlockingWork()
    jobs = [asyncio.create_task(offloader.run(work, str(n))) for n in range(6)]
    await wait_for_threads(work, 2)
    assert (offloader.stats.running, offloader.stats.waiting) == (2, 4)
    work.release.set()
    await asyncio.gather(*jobs)
    assert work.most_at_once == 2
    assert offloader.stats.completed == 6


async def test_an_exception_in_the_thread_reaches_the_caller_with_its_traceback() -> None:
    def parse_report(text: str) -> int:
        return int(text)

    with pytest.raises(ValueError, match="invalid literal") as raised:
        await Offloader(threads=1, max_waiting=1, wait_timeout=1).run(parse_report, "x")
    frames = [frame.name for frame in traceback.extract_tb(raised.value.__traceback__)]
    assert "parse_report" in frames


async def test_context_variables_flow_into_the_thread() -> None:
    request_id.set("abc123")
    seen = await Offloader(threads=1, max_waiting=1, wait_timeout=1).run(request_id.get)
    assert seen == "abc123"


async def test_a_full_waiting_line_is_refused_at_once() -> None:
    offloader, work = Offloader(threads=1, max_waiting=1, wait_timeout=30), BlockingWork()
    running = asyncio.create_task(offloader.run(work, "running"))
    await wait_for_threads(work, 1)
    waiting = asyncio.create_task(offloader.run(work, "waiting"))
    await eventually(lambda: offloader.stats.waiting == 1)
    with pytest.raises(Overloaded, match="waiting line is full"):
        await offloader.run(work, "refused")
    work.release.set()
    assert list(await asyncio.gather(running, waiting)) == ["running", "waiting"]
    assert offloader.stats.rejected == 1


async def test_a_call_that_waits_too_long_for_a_thread_is_refused() -> None:
    offloader, work = Offloader(threads=1, max_waiting=5, wait_timeout=0.05), BlockingWork()
    running = asyncio.create_task(offloader.run(work, "running"))
    await wait_for_threads(work, 1)
    with pytest.raises(Overloaded, match="no offload thread became free in time"):
        await offloader.run(work, "late")
    work.release.set()
    await running


async def test_an_overloaded_offload_pool_answers_503_with_retry_after(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    @query_budget(0)
    async def blocking_work(offloader: OffloadDep) -> dict[str, str]:
        return {"result": await offloader.run(str.upper, "done")}

    app.get("/blocking-work")(blocking_work)
    offloader = app.state.offloader = Offloader(threads=1, max_waiting=0, wait_timeout=1)
    work = BlockingWork()
    busy = asyncio.create_task(offloader.run(work, "occupying the only thread"))
    await wait_for_threads(work, 1)
    response = await client.get("/blocking-work")
    work.release.set()
    await busy
    assert response.status_code == 503
    assert response.headers["retry-after"] in {"1", "2", "3"}
    assert "overloaded" in response.json()["detail"]
    assert (await client.get("/blocking-work")).json() == {"result": "DONE"}
