"""Work after the response: the coalescing refresher of the performance kit."""

import asyncio
import logging

import pytest

from my_service import CoalescingRefresher

from tests.harness.waiting import flushed


class Calls:
    """A refresh function that records the keys of each call and can be made to fail."""

    def __init__(self) -> None:
        self.keys: list[frozenset[int]] = []
        self.failures_left = 0
        self.called = asyncio.Event()

    async def __call__(self, keys: frozenset[int]) -> None:
        self.keys.append(keys)
        self.called.set()
        if self.failures_left:
            self.failures_left -= 1
            raise RuntimeError("the refresh failed")


def refresher_tasks() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if task.get_name().startswith("refresh ")]


@pytest.fixture
async def calls() -> Calls:
    return Calls()


async def test_a_burst_of_marks_causes_one_refresh_of_every_key(calls: Calls) -> None:
    refresher = CoalescingRefresher("test", calls, max_delay=3600)
    refresher.start()
    tasks = len(asyncio.all_tasks())
    for key in (1, 2, 3, 2, 1, 3, 3):
        refresher.mark(key)
    assert len(asyncio.all_tasks()) == tasks  # marking starts nothing
    assert (refresher.stats.pending, calls.keys) == (3, [])
    await flushed(refresher)
    assert calls.keys == [frozenset({1, 2, 3})]
    assert (refresher.stats.marked, refresher.stats.runs) == (7, 1)
    assert (refresher.stats.keys_refreshed, refresher.stats.pending) == (3, 0)
    await refresher.stop(grace=5)


async def test_a_mark_is_refreshed_after_the_delay_without_a_flush(calls: Calls) -> None:
    refresher = CoalescingRefresher("test", calls, max_delay=0.01)
    refresher.start()
    refresher.mark(7)
    async with asyncio.timeout(10):
        await refresher.settled()
    assert calls.keys == [frozenset({7})]
    await refresher.stop(grace=5)


async def test_a_failed_refresh_is_logged_counted_and_its_keys_go_with_the_next(
    calls: Calls, caplog: pytest.LogCaptureFixture
) -> None:
    refresher = CoalescingRefresher("test", calls, max_delay=3600)
    refresher.start()
    calls.failures_left = 1
    refresher.mark(1)
    await flushed(refresher)
    assert (refresher.stats.failures, refresher.stats.runs) == (1, 0)
    assert refresher.stats.pending == 1
    [record] = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert record.getMessage() == "test: refreshing 1 keys failed; they wait for the next refresh"
    assert record.exc_info is not None
    refresher.mark(2)
    await flushed(refresher)
    assert calls.keys == [frozenset({1}), frozenset({1, 2})]
    assert (refresher.stats.failures, refresher.stats.runs) == (1, 1)
    await refresher.stop(grace=5)


async def test_stop_runs_the_pending_refresh_and_leaves_no_task(
    calls: Calls, caplog: pytest.LogCaptureFixture
) -> None:
    refresher = CoalescingRefresher("test", calls, max_delay=3600)
    refresher.start()
    refresher.mark(1)
    await refresher.stop(grace=5)
    assert calls.keys == [frozenset({1})]
    assert (refresher.stats.runs, refresher.stats.abandoned) == (1, 0)
    assert refresher_tasks() == []
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


async def test_stop_cancels_a_refresh_that_outlives_its_grace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    entered, cancelled = asyncio.Event(), asyncio.Event()

    async def refresh_forever(keys: frozenset[int]) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    refresher = CoalescingRefresher("test", refresh_forever, max_delay=0)
    refresher.start()
    refresher.mark(1)
    async with asyncio.timeout(10):
        await entered.wait()
    await refresher.stop(grace=0.01)
    assert cancelled.is_set()
    assert refresher.stats.abandoned == 1
    assert refresher_tasks() == []
    assert "test: stopped with 1 keys not refreshed" in caplog.text


async def test_stop_with_nothing_pending_ends_at_once(calls: Calls) -> None:
    refresher = CoalescingRefresher("test", calls, max_delay=3600)
    refresher.start()
    await refresher.stop(grace=5)
    assert calls.keys == []
    assert refresher_tasks() == []
