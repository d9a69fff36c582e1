"""Overload at ten times capacity: the benchmark's short look at the overload guard.

The list route, closed loop, first with as many clients as the service has places
(capacity), then ten times as many, no retries; the service with its guard and the
baseline behind uvicorn's ``--limit-concurrency`` take turns each repetition.
``overload.py`` looks at the guard at length (retry storms, polite clients, open loops).
"""

import asyncio
import random
from dataclasses import dataclass

import uvloop
from dataset import SEED, list_path
from loadclient import CLIENT_TIMEOUT, LoadResult, closed_loop
from servers import HOST, Server


@dataclass
class LoadRun(LoadResult):
    """One closed-loop run of ``loadclient``, with the server's peak memory meanwhile."""

    rss_mib: float


# (at capacity, at ten times capacity), once per repetition, by server name
Overload = dict[str, list[tuple[LoadRun, LoadRun]]]


def measure_overload(
    servers: list[Server], capacity: int, repeats: int, seconds: float
) -> Overload:
    """Each server at ``capacity`` clients for 0.6 ``seconds``, then at ten times as many."""
    overload: Overload = {server.name: [] for server in servers}
    for repetition in range(repeats):
        for server in servers:
            at_capacity = load(server, capacity, seconds * 0.6)
            overloaded = load(server, capacity * 10, seconds)
            overload[server.name].append((at_capacity, overloaded))
            print(
                f"  rep {repetition + 1} {server.name:38} capacity {at_capacity.goodput:6.0f}/s"
                f"  overload goodput {overloaded.goodput:6.0f}/s  503s {overloaded.refused}"
                f"  timeouts {overloaded.timeouts}",
                flush=True,
            )
    return overload


def load(server: Server, clients: int, seconds: float) -> LoadRun:
    """``clients`` closed-loop clients on the list route for ``seconds``."""
    rng = random.Random(SEED + clients)

    def next_request(_: int) -> tuple[str, str, object]:
        return "GET", list_path(rng), None

    with server.peak_rss() as peak, asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        responses = runner.run(
            closed_loop(HOST, server.port, clients, seconds, CLIENT_TIMEOUT, next_request)
        )
    server.settle()
    return LoadRun(seconds, responses, peak[0])
