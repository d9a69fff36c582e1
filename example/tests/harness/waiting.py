"""Waiting on the service without sleeping, and reading its metrics."""

import asyncio
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from my_service import CoalescingRefresher


async def eventually(condition: Callable[[], bool]) -> None:
    """Let the other tasks run until ``condition`` holds; fail if it never does."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def flushed(refresher: CoalescingRefresher) -> None:
    """Flush the refresher, failing rather than hanging if its worker is broken."""
    async with asyncio.timeout(10):
        await refresher.flush()


async def scrape(client: httpx.AsyncClient) -> dict[str, float]:
    """The service's /metrics, parsed: each sample without labels, by name."""
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if not sample.labels
    }
