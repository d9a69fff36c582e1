"""Load-test a running service: req/s, latency, errors, 503s and SQL statements per request.

Point it at routes of a service you run, for instance::

    python loadtest.py http://127.0.0.1:8000/items http://127.0.0.1:8000/items/1 \\
        --concurrency 32 --duration 10

Each of the ``--concurrency`` clients sends GET requests one after another, cycling through
the URLs, until ``--duration`` seconds have passed (or ``--max-requests`` were sent); nothing
is retried, and a request unanswered after ``--timeout`` seconds counts as a timeout.
Queries per request come from the ``Server-Timing`` header the service adds
(``db;dur=..;desc="N queries"``). Latency includes this client's own time: compare runs made
the same way, and give the service a core of its own (``taskset``) when you can.
"""

import argparse
import asyncio
import itertools
import re
import statistics
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import httpx

_QUERIES = re.compile(r'desc="(\d+) queries"')


@dataclass
class RouteStats:
    """What the requests to one URL got back."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    queries: list[int] = field(default_factory=list)
    timeouts: int = 0
    transport_errors: int = 0

    @property
    def requests(self) -> int:
        """Requests sent, answered or not."""
        return sum(self.statuses.values()) + self.timeouts + self.transport_errors

    @property
    def errors(self) -> int:
        """Answers of 400 and up other than 503, plus requests the connection lost."""
        failed = sum(count for status, count in self.statuses.items() if status >= 400)
        return failed - self.statuses[503] + self.transport_errors

    def percentile_ms(self, percent: float) -> float:
        """The latency below which ``percent`` of the answered requests fall, in ms."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * percent / 100))] * 1000

    def merge(self, other: "RouteStats") -> None:
        """Add ``other``'s requests to these."""
        self.latencies += other.latencies
        self.statuses += other.statuses
        self.queries += other.queries
        self.timeouts += other.timeouts
        self.transport_errors += other.transport_errors


async def run(
    urls: Sequence[str],
    concurrency: int,
    duration: float,
    request_timeout: float,
    max_requests: int | None,
    headers: dict[str, str],
) -> dict[str, RouteStats]:
    """Send requests from ``concurrency`` clients until the duration or the count is spent."""
    stats = {url: RouteStats() for url in urls}
    deadline = time.perf_counter() + duration
    budget: Iterator[int] = itertools.count() if max_requests is None else iter(range(max_requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client(number: int, http: httpx.AsyncClient) -> None:
        for url in itertools.islice(itertools.cycle(urls), number % len(urls), None):
            if time.perf_counter() >= deadline or next(budget, None) is None:
                return
            await _send(http, url, stats[url])

    async with httpx.AsyncClient(limits=limits, timeout=request_timeout, headers=headers) as http:
        await asyncio.gather(*(client(number, http) for number in range(concurrency)))
    return stats


async def _send(http: httpx.AsyncClient, url: str, stats: RouteStats) -> None:
    started = time.perf_counter()
    try:
        response = await http.get(url)
    except httpx.TimeoutException:
        stats.timeouts += 1
        return
    except httpx.TransportError:
        stats.transport_errors += 1
        return
    stats.latencies.append(time.perf_counter() - started)
    stats.statuses[response.status_code] += 1
    match = _QUERIES.search(response.headers.get("server-timing", ""))
    if match:
        stats.queries.append(int(match.group(1)))


def report(stats: dict[str, RouteStats], seconds: float) -> str:
    """A table of every URL, then all of them together."""
    total = RouteStats()
    for route in stats.values():
        total.merge(route)
    rows = [*stats.items(), ("all", total)] if len(stats) > 1 else list(stats.items())
    width = max(len(url) for url, _ in rows)
    lines = [
        f"{'url'.ljust(width)}  {'requests':>8}  {'req/s':>8}  {'p50 ms':>8}  {'p99 ms':>8}  "
        f"{'errors':>6}  {'503s':>6}  {'timeouts':>8}  {'queries/req':>11}"
    ]
    for url, route in rows:
        queries = f"{statistics.mean(route.queries):.1f}" if route.queries else "-"
        lines.append(
            f"{url.ljust(width)}  {route.requests:>8}  {route.requests / seconds:>8.1f}  "
            f"{route.percentile_ms(50):>8.1f}  {route.percentile_ms(99):>8.1f}  "
            f"{route.errors:>6}  {route.statuses[503]:>6}  {route.timeouts:>8}  {queries:>11}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line, run the load, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("urls", nargs="+", help="full URLs to GET, taken in turn")
    parser.add_argument("--concurrency", type=int, default=16, help="clients at once")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to run")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    parser.add_argument("--max-requests", type=int, help="stop after this many requests")
    parser.add_argument(
        "--header", action="append", default=[], help="NAME: VALUE to send, repeatable"
    )
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.duration <= 0 or args.timeout <= 0:
        parser.error("--concurrency, --duration and --timeout must be positive")
    headers = {}
    for header in args.header:
        name, colon, value = header.partition(":")
        if not colon:
            parser.error(f"--header wants NAME: VALUE, got {header!r}")
        headers[name.strip()] = value.strip()
    started = time.perf_counter()
    stats = asyncio.run(
        run(args.urls, args.concurrency, args.duration, args.timeout, args.max_requests, headers)
    )
    print(report(stats, time.perf_counter() - started))


if __name__ == "__main__":
    main()
