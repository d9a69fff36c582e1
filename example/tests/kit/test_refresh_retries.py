"""Work after the response: a failed refresh is retried on its own, with backoff, counted."""

import asyncio

from my_service import CoalescingRefresher


class FailingRefresh:
    """A refresh function that fails its first ``failures`` calls, and records every call."""

    def __init__(self, failures: int) -> None:
        self.failures_left = failures
        self.keys: list[frozenset[int]] = []
        self._called = asyncio.Event()

    async def __call__(self, keys: frozenset[int]) -> None:
        self.keys.append(keys)
        self._called.set()
        if self.failures_left:
            self.failures_left -= 1
            raise RuntimeError("the refresh failed")

    async def wait_for_calls(self, count: int) -> None:
        """Return once ``count`` calls were made; fail after ten seconds."""
        async with asyncio.timeout(10):
            while len(self.keys) < count:
                self._called.clear()
                await self._called.wait()


async def test_a_failed_refresh_is_retried_without_another_mark() -> None:
    refresh = FailingRefresh(failures=1)
    refresher = CoalescingRefresher("test", refresh, max_delay=0.01)
    refresher.start()
    refresher.mark(1)
    await refresh.wait_for_calls(2)
    await refresher.settled()
    assert refresh.keys == [frozenset({1}), frozenset({1})]
    stats = refresher.stats
    assert (stats.failures, stats.retries, stats.runs, stats.pending) == (1, 1, 1, 0)
    await refresher.stop(grace=5)


async def test_retries_go_on_until_a_refresh_succeeds() -> None:
    refresh = FailingRefresh(failures=3)
    refresher = CoalescingRefresher("test", refresh, max_delay=0.01, max_retry_delay=0.05)
    refresher.start()
    refresher.mark(1)
    await refresh.wait_for_calls(4)
    await refresher.settled()
    stats = refresher.stats
    assert (stats.failures, stats.retries, stats.runs, stats.keys_refreshed) == (3, 3, 1, 1)
    await refresher.stop(grace=5)


async def test_a_mark_while_a_retry_waits_takes_the_failed_keys_along() -> None:
    refresh = FailingRefresh(failures=1)
    refresher = CoalescingRefresher("test", refresh, max_delay=3600)
    refresher.start()
    refresher.mark(1)
    await refresher.flush()  # fails; its retry is an hour away
    refresher.mark(2)
    await refresher.flush()
    assert refresh.keys == [frozenset({1}), frozenset({1, 2})]
    assert (refresher.stats.retries, refresher.stats.pending) == (0, 0)
    await refresher.stop(grace=5)


async def test_flush_runs_a_waiting_retry_at_once() -> None:
    refresh = FailingRefresh(failures=1)
    refresher = CoalescingRefresher("test", refresh, max_delay=3600)
    refresher.start()
    refresher.mark(1)
    await refresher.flush()
    await refresher.flush()
    assert refresh.keys == [frozenset({1}), frozenset({1})]
    assert (refresher.stats.runs, refresher.stats.pending) == (1, 0)
    await refresher.stop(grace=5)


async def test_stop_drops_a_waiting_retry_and_counts_its_keys_abandoned() -> None:
    refresh = FailingRefresh(failures=2)
    refresher = CoalescingRefresher("test", refresh, max_delay=3600)
    refresher.start()
    refresher.mark(1)
    await refresher.flush()
    await refresher.stop(grace=5)  # runs what is pending once more, which fails again
    assert refresh.keys == [frozenset({1}), frozenset({1})]
    assert (refresher.stats.retries, refresher.stats.abandoned) == (0, 1)
    tasks = [task for task in asyncio.all_tasks() if task.get_name().startswith("refresh ")]
    assert tasks == []
