"""The TTL cache: one load per key at a time, no stale write-back, and cached reads."""

import asyncio
import threading

from my_service import AsyncTTLCache


class Loader:
    """A loader that counts its calls and, when told to, waits for a go-ahead."""

    def __init__(self, value: object = "value", error: Exception | None = None) -> None:
        self.value = value
        self.error = error
        self.calls = 0
        self.started = asyncio.Event()
        self.go = asyncio.Event()
        self.go.set()

    async def __call__(self) -> object:
        self.calls += 1
        self.started.set()
        await self.go.wait()
        if self.error is not None:
            raise self.error
        return self.value


async def test_concurrent_misses_of_one_key_run_one_load() -> None:
    cache, load = AsyncTTLCache(max_entries=10, ttl=60), Loader()
    load.go.clear()
    callers = [asyncio.create_task(cache.get_or_load("item", 1, load)) for _ in range(100)]
    await load.started.wait()  # the callers that were to miss have all missed by now
    load.go.set()
    assert await asyncio.gather(*callers) == ["value"] * 100
    assert load.calls == 1
    assert (cache.stats.loads, cache.stats.misses, cache.stats.coalesced) == (1, 100, 99)
    assert await cache.get_or_load("item", 1, load) == "value"
    assert (load.calls, cache.stats.hits) == (1, 1)


async def test_a_slow_key_does_not_hold_up_another() -> None:
    cache, slow, fast = AsyncTTLCache(max_entries=10, ttl=60), Loader("slow"), Loader("fast")
    slow.go.clear()
    waiting = asyncio.create_task(cache.get_or_load("item", 1, slow))
    assert await cache.get_or_load("item", 2, fast) == "fast"
    assert not waiting.done()
    slow.go.set()
    assert await waiting == "slow"


async def test_a_failed_load_reaches_every_waiter_and_is_not_stored() -> None:
    cache = AsyncTTLCache(max_entries=10, ttl=60)
    failing = Loader(error=LookupError("database unreachable"))
    failing.go.clear()
    callers = [asyncio.create_task(cache.get_or_load("item", 1, failing)) for _ in range(3)]
    await failing.started.wait()
    failing.go.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(result, LookupError) for result in results), results
    assert (failing.calls, cache.stats.load_errors, len(cache)) == (1, 1, 0)
    assert await cache.get_or_load("item", 1, Loader("retried")) == "retried"


async def test_a_caller_that_goes_away_does_not_cancel_the_load_of_the_others() -> None:
    cache, load = AsyncTTLCache(max_entries=10, ttl=60), Loader()
    load.go.clear()
    impatient = asyncio.create_task(cache.get_or_load("item", 1, load))
    patient = asyncio.create_task(cache.get_or_load("item", 1, load))
    await load.started.wait()
    impatient.cancel()
    load.go.set()
    assert await patient == "value"
    assert impatient.cancelled()


async def test_none_is_cached_only_when_asked() -> None:
    cache, missing = AsyncTTLCache(max_entries=10, ttl=60), Loader(None)
    assert await cache.get_or_load("item", 1, missing) is None
    assert await cache.get_or_load("item", 1, missing) is None
    assert missing.calls == 2
    assert await cache.get_or_load("item", 2, missing, none_ttl=5) is None
    assert await cache.get_or_load("item", 2, missing, none_ttl=5) is None
    assert missing.calls == 3


async def test_a_load_that_began_before_an_invalidation_does_not_write_back() -> None:
    cache, stale = AsyncTTLCache(max_entries=10, ttl=60), Loader("old")
    stale.go.clear()
    before = asyncio.create_task(cache.get_or_load("item", 1, stale))
    await stale.started.wait()
    cache.invalidate("item", 1)  # the write committed while the old value was loading
    assert await cache.get_or_load("item", 1, Loader("new")) == "new"
    stale.go.set()
    assert await before == "old"  # its own caller still gets an answer
    assert await cache.get_or_load("item", 1, Loader("unused")) == "new"


async def test_invalidating_a_namespace_drops_its_keys_and_no_others() -> None:
    cache = AsyncTTLCache(max_entries=10, ttl=60)
    for key in (1, 2):
        await cache.get_or_load("item", key, Loader("old"))
    await cache.get_or_load("owner", 1, Loader("kept"))
    cache.invalidate_namespace("item")
    assert await cache.get_or_load("item", 1, Loader("new")) == "new"
    assert await cache.get_or_load("item", 2, Loader("new")) == "new"
    assert await cache.get_or_load("owner", 1, Loader("unused")) == "kept"


async def test_clearing_drops_every_entry_and_no_load_under_way_writes_back() -> None:
    cache, stale = AsyncTTLCache(max_entries=10, ttl=60), Loader("old")
    await cache.get_or_load("owner", 1, Loader("dropped"))
    stale.go.clear()
    before = asyncio.create_task(cache.get_or_load("item", 1, stale))
    await stale.started.wait()
    cache.clear()  # what a process does when it may have missed invalidations
    assert len(cache) == 0
    stale.go.set()
    assert await before == "old"
    assert await cache.get_or_load("item", 1, Loader("new")) == "new"
    assert await cache.get_or_load("owner", 1, Loader("reloaded")) == "reloaded"


async def test_a_bypassed_cache_loads_on_every_call_and_stores_nothing() -> None:
    cache, load = AsyncTTLCache(max_entries=10, ttl=60), Loader()
    cache.bypass = True
    assert [await cache.get_or_load("item", 1, load) for _ in range(2)] == ["value"] * 2
    assert (load.calls, cache.stats.bypassed, len(cache)) == (2, 2, 0)
    cache.bypass = False
    assert [await cache.get_or_load("item", 1, load) for _ in range(2)] == ["value"] * 2
    assert (load.calls, cache.stats.hits) == (3, 1)


async def test_entries_expire_after_their_ttl() -> None:
    now = [0.0]
    cache = AsyncTTLCache(max_entries=10, ttl=30, jitter=0.1, timer=lambda: now[0])
    load = Loader()
    await cache.get_or_load("item", 1, load)
    now[0] = 29.9
    await cache.get_or_load("item", 1, load)
    assert load.calls == 1
    now[0] = 33.1  # past the TTL and its jitter
    await cache.get_or_load("item", 1, load)
    assert load.calls == 2


async def test_the_cache_holds_at_most_max_entries() -> None:
    cache = AsyncTTLCache(max_entries=2, ttl=60)
    for key in range(5):
        await cache.get_or_load("item", key, Loader())
    assert len(cache) == 2


async def test_the_decorator_caches_by_arguments() -> None:
    cache, calls = AsyncTTLCache(max_entries=10, ttl=60), []

    @cache.cached("square")
    async def square(number: int) -> int:
        calls.append(number)
        return number * number

    assert [await square(3), await square(3), await square(number=4)] == [9, 9, 16]
    assert calls == [3, 4]


async def test_calling_the_cache_from_a_worker_thread_is_refused() -> None:
    cache = AsyncTTLCache(max_entries=10, ttl=60)
    errors: list[BaseException] = []

    def invalidate_in_thread() -> None:
        try:
            cache.invalidate("item", 1)
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=invalidate_in_thread)
    thread.start()
    thread.join()
    assert len(errors) == 1
    assert "belongs to the event loop's thread" in str(errors[0])
