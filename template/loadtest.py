"""Load-test a running service: goodput, latency, 503s, timeouts and SQL statements per request.

Point it at routes of a service you run, for instance::

    python loadtest.py http://127.0.0.1:8000/items http://127.0.0.1:8000/items/1 \\
        --clients 32 --duration 10 --processes 2

Three kinds of clients, because real ones differ (``--model``):

- ``storm``: each of ``--clients`` sends one request after another and retries a 503 at
  once, ignoring ``Retry-After``: a retry storm, the worst case for the service.
- ``polite``: the same clients, but a 503 makes them wait ``Retry-After`` seconds (with
  jitter), or back off exponentially when the header is missing.
- ``open``: requests arrive at ``--rate`` per second (Poisson), whatever the answers; the
  latency counts from the scheduled send time, so a client that falls behind does not hide
  the service's slowness (no coordinated omission).

The load runs in ``--processes`` processes, each with its share of the clients or the rate,
on plain asyncio streams (HTTP/1.1, keep-alive). Each process measures its own CPU time:
when one was busy nearly all the run, the client, not the service, set the pace, and the
report says so. A request unanswered after ``--timeout`` seconds counts as a timeout.
Queries per request come from the ``Server-Timing`` header (``db;dur=..;desc="N queries"``).
While it runs, a line on the terminal (standard error) shows the requests, 2xx a second,
503s, failures and the p99 so far; the table follows once the run ends.
"""

import argparse
import asyncio
import concurrent.futures
import itertools
import multiprocessing
import queue
import random
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO
from urllib.parse import urlsplit

_QUERIES = re.compile(r'desc="(\d+) queries"')
# A process busier than this was the bottleneck, or close enough to distort the figures.
CLIENT_BUSY = 0.85
# Seconds between two updates of the live line, and the most latencies its p99 sorts.
PROGRESS_INTERVAL = 0.5
PROGRESS_SAMPLE = 10_000
MODELS = ("storm", "polite", "open")


@dataclass
class RouteStats:
    """What the requests to one URL got back."""

    admitted: list[float] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)
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

    def merge(self, other: "RouteStats") -> None:
        """Add ``other``'s requests to these."""
        self.admitted += other.admitted
        self.refused += other.refused
        self.statuses += other.statuses
        self.queries += other.queries
        self.timeouts += other.timeouts
        self.transport_errors += other.transport_errors


@dataclass
class ProcessReport:
    """One load process's figures, and how busy it was."""

    stats: dict[str, RouteStats]
    wall_seconds: float
    cpu_seconds: float
    late_sends: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Progress:
    """One process's figures so far, for the live line."""

    requests: int
    admitted: int
    refused: int
    failed: int
    p99_ms: float


Report = Callable[[int, Progress], None]


@dataclass
class Plan:
    """What one process does."""

    urls: list[str]
    model: str
    clients: int
    rate: float
    duration: float
    timeout: float
    headers: dict[str, str]
    seed: int


@dataclass(slots=True)
class Answer:
    """One response: its status, the headers the report needs, and nothing else."""

    status: int
    retry_after: float | None
    server_timing: str


class Connection:
    """One keep-alive HTTP/1.1 connection, reopened after a close or a failure."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        if parts.scheme != "http":
            raise SystemExit(f"only http:// URLs are supported, not {url!r}")
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._head = f"Host: {parts.netloc}\r\n{extra}\r\n".encode()
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self, target: str) -> Answer:
        """Send one GET and read its answer."""
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        writer.write(f"GET {target} HTTP/1.1\r\n".encode() + self._head)
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while size := int((await reader.readline()).split(b";")[0], 16):
                await reader.readexactly(size + 2)
            await reader.readuntil(b"\r\n")
        else:
            await reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        retry_after = headers.get("retry-after", "")
        return Answer(
            status,
            float(retry_after) if retry_after.isdigit() else None,
            headers.get("server-timing", ""),
        )

    def close(self) -> None:
        """Drop the connection; the next request opens a new one."""
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


def _target(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


async def _send(
    connection: Connection, url: str, patience: float, stats: RouteStats, since: float
) -> Answer | None:
    # ``since`` is when the request should have gone out: the latency counts from there.
    try:
        async with asyncio.timeout(patience):
            answer = await connection.get(_target(url))
    except TimeoutError:
        connection.close()
        stats.timeouts += 1
        return None
    except (OSError, asyncio.IncompleteReadError, ValueError):
        connection.close()
        stats.transport_errors += 1
        return None
    latency = time.perf_counter() - since
    stats.statuses[answer.status] += 1
    if 200 <= answer.status < 300:
        stats.admitted.append(latency)
    elif answer.status == 503:
        stats.refused.append(latency)
    match = _QUERIES.search(answer.server_timing)
    if match:
        stats.queries.append(int(match.group(1)))
    return answer


async def _closed_loop(plan: Plan, stats: dict[str, RouteStats], deadline: float) -> None:
    rng = random.Random(plan.seed)

    async def client(number: int) -> None:
        connection = Connection(plan.urls[0], plan.headers)
        failures = 0
        try:
            for url in itertools.islice(itertools.cycle(plan.urls), number, None):
                if time.perf_counter() >= deadline:
                    return
                answer = await _send(connection, url, plan.timeout, stats[url], time.perf_counter())
                if answer is None or answer.status != 503 or plan.model == "storm":
                    failures = 0
                    continue
                # A polite client: Retry-After with jitter, else exponential backoff.
                failures += 1
                delay = answer.retry_after or min(0.05 * 2**failures, 5.0)
                await asyncio.sleep(
                    min(delay * rng.uniform(0.5, 1.5), deadline - time.perf_counter())
                )
        finally:
            connection.close()

    await asyncio.gather(*(client(number) for number in range(plan.clients)))


async def _open_loop(
    plan: Plan, stats: dict[str, RouteStats], deadline: float, late: list[float]
) -> None:
    rng = random.Random(plan.seed)
    idle: list[Connection] = []
    running: set[asyncio.Task[None]] = set()

    async def request(url: str, scheduled: float) -> None:
        connection = idle.pop() if idle else Connection(url, plan.headers)
        await _send(connection, url, plan.timeout, stats[url], scheduled)
        idle.append(connection)

    scheduled = time.perf_counter()
    for url in itertools.cycle(plan.urls):
        scheduled += rng.expovariate(plan.rate)
        if scheduled >= deadline:
            break
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late.append(-delay)
        task = asyncio.create_task(request(url, scheduled))
        running.add(task)
        task.add_done_callback(running.discard)
    if running:
        await asyncio.wait(running)
    for connection in idle:
        connection.close()


def _progress(stats: dict[str, RouteStats], rng: random.Random) -> Progress:
    admitted = [latency for route in stats.values() for latency in route.admitted]
    # A sample bounds the cost of each update, which the client's own CPU pays.
    sample = admitted if len(admitted) <= PROGRESS_SAMPLE else rng.sample(admitted, PROGRESS_SAMPLE)
    return Progress(
        requests=sum(route.requests for route in stats.values()),
        admitted=len(admitted),
        refused=sum(route.statuses[503] for route in stats.values()),
        failed=sum(route.errors + route.timeouts for route in stats.values()),
        p99_ms=_percentile_ms(sample, 99),
    )


async def _load(
    plan: Plan,
    stats: dict[str, RouteStats],
    late: list[float],
    number: int,
    report: Report | None,
) -> None:
    deadline = time.perf_counter() + plan.duration
    if plan.model == "open":
        running = asyncio.create_task(_open_loop(plan, stats, deadline, late))
    else:
        running = asyncio.create_task(_closed_loop(plan, stats, deadline))
    rng = random.Random(plan.seed)
    while report is not None and not running.done():
        await asyncio.wait([running], timeout=PROGRESS_INTERVAL)
        report(number, _progress(stats, rng))
    await running


def run_process(plan: Plan, number: int = 0, report: Report | None = None) -> ProcessReport:
    """Run one process's share of the load and measure its own CPU time; hand ``report``
    (or the parent, when it asked) this process's figures so far every
    ``PROGRESS_INTERVAL`` seconds.
    """
    stats = {url: RouteStats() for url in plan.urls}
    late: list[float] = []
    started, cpu_started = time.perf_counter(), time.process_time()
    asyncio.run(_load(plan, stats, late, number, report or _to_parent()))
    return ProcessReport(
        stats, time.perf_counter() - started, time.process_time() - cpu_started, late
    )


# Where a load process sends its figures so far: set in each process the pool starts.
_parent: "multiprocessing.Queue[tuple[int, Progress]] | None" = None


def _report_to(progress: "multiprocessing.Queue[tuple[int, Progress]]") -> None:
    global _parent
    _parent = progress


def _to_parent() -> Report | None:
    # The figures go to the parent only when it shows them.
    parent = _parent
    if parent is None:
        return None
    return lambda number, progress: parent.put((number, progress))


class LiveLine:
    """One line on a terminal, rewritten with the figures so far of every process; a run
    whose standard error is not a terminal (``shown`` false) computes none.
    """

    def __init__(self, duration: float, output: TextIO) -> None:
        self.duration = duration
        self.output = output
        self.started = time.perf_counter()
        self.latest: dict[int, Progress] = {}
        self.shown = output.isatty()

    def update(self, number: int, progress: Progress) -> None:
        """Take one process's figures and show the sum of every process's."""
        self.latest[number] = progress
        figures = self.latest.values()
        elapsed = min(time.perf_counter() - self.started, self.duration)
        requests = sum(figure.requests for figure in figures)
        goodput = sum(figure.admitted for figure in figures) / max(elapsed, 1e-9)
        refused = sum(figure.refused for figure in figures)
        failed = sum(figure.failed for figure in figures)
        # Each process's own p99; the slowest stands for all.
        p99 = max((figure.p99_ms for figure in figures if figure.admitted), default=0.0)
        line = (
            f"{elapsed:4.0f}/{self.duration:.0f} s  {requests} requests  {goodput:.0f} 2xx/s  "
            f"{refused} 503s  {failed} failed  p99 so far {p99:.1f} ms"
        )
        self.output.write(f"\r{line}\x1b[K")
        self.output.flush()

    def close(self) -> None:
        """Clear the line, for the report."""
        if self.shown and self.latest:
            self.output.write("\r\x1b[K")
            self.output.flush()


def run(plans: Sequence[Plan], live: LiveLine) -> list[ProcessReport]:
    """Run each plan in a process of its own, all at once, showing the figures so far."""
    try:
        if len(plans) == 1:
            return [run_process(plans[0], 0, live.update if live.shown else None)]
        if not live.shown:
            with concurrent.futures.ProcessPoolExecutor(len(plans)) as pool:
                return list(pool.map(run_process, plans))
        progress: multiprocessing.Queue[tuple[int, Progress]] = multiprocessing.Queue()
        with concurrent.futures.ProcessPoolExecutor(
            len(plans), initializer=_report_to, initargs=(progress,)
        ) as pool:
            running = [pool.submit(run_process, plan, number) for number, plan in enumerate(plans)]
            while not all(future.done() for future in running):
                try:
                    live.update(*progress.get(timeout=PROGRESS_INTERVAL))
                except queue.Empty:
                    continue
            return [future.result() for future in running]
    finally:
        live.close()


def _percentile_ms(values: list[float], percent: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * percent / 100))] * 1000


def report(reports: Sequence[ProcessReport], seconds: float) -> str:
    """A table of every URL, all of them together, then whether the client kept up."""
    urls = list(reports[0].stats)
    stats = {url: RouteStats() for url in urls}
    for process in reports:
        for url, route in process.stats.items():
            stats[url].merge(route)
    total = RouteStats()
    for route in stats.values():
        total.merge(route)
    rows = [*stats.items(), ("all", total)] if len(stats) > 1 else list(stats.items())
    width = max(len(url) for url, _ in rows)
    lines = [
        f"{'url'.ljust(width)}  {'requests':>8}  {'goodput/s':>9}  {'p50 ms':>8}  {'p99 ms':>8}  "
        f"{'503s':>6}  {'p50 503 ms':>10}  {'errors':>6}  {'timeouts':>8}  {'queries/req':>11}"
    ]
    for url, route in rows:
        queries = f"{statistics.mean(route.queries):.1f}" if route.queries else "-"
        lines.append(
            f"{url.ljust(width)}  {route.requests:>8}  {len(route.admitted) / seconds:>9.1f}  "
            f"{_percentile_ms(route.admitted, 50):>8.1f}  "
            f"{_percentile_ms(route.admitted, 99):>8.1f}  "
            f"{route.statuses[503]:>6}  {_percentile_ms(route.refused, 50):>10.1f}  "
            f"{route.errors:>6}  {route.timeouts:>8}  {queries:>11}"
        )
    lines.append("latency of admitted (2xx) requests; a 503's latency is reported apart")
    busiest = max(process.cpu_seconds / process.wall_seconds for process in reports)
    late = sorted(delay for process in reports for delay in process.late_sends)
    lines.append(
        f"client: {len(reports)} process(es), the busiest used {busiest * 100:.0f}% of a core"
    )
    if busiest >= CLIENT_BUSY:
        lines.append(
            "WARNING: the client, not the service, was the bottleneck: its figures understate "
            "the service. Add --processes (one per free core), or run it on another machine."
        )
    if late and _percentile_ms(late, 50) > 1:
        lines.append(
            f"WARNING: the open-loop client sent late (median {_percentile_ms(late, 50):.1f} ms "
            "behind schedule): it could not keep up with --rate; add --processes."
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line, run the load, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("urls", nargs="+", help="full http:// URLs to GET, taken in turn")
    parser.add_argument("--model", choices=MODELS, default="storm", help="kind of client")
    parser.add_argument("--clients", type=int, default=16, help="clients at once (storm, polite)")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second (open)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to run")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    parser.add_argument("--processes", type=int, default=1, help="client processes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random choices")
    parser.add_argument(
        "--header", action="append", default=[], help="NAME: VALUE to send, repeatable"
    )
    args = parser.parse_args(argv)
    if min(args.clients, args.processes) < 1 or min(args.rate, args.duration, args.timeout) <= 0:
        parser.error("--clients, --processes, --rate, --duration and --timeout must be positive")
    headers = {}
    for header in args.header:
        name, colon, value = header.partition(":")
        if not colon:
            parser.error(f"--header wants NAME: VALUE, got {header!r}")
        headers[name.strip()] = value.strip()
    processes = min(args.processes, args.clients) if args.model != "open" else args.processes
    plans = [
        Plan(
            urls=args.urls,
            model=args.model,
            clients=args.clients // processes + (number < args.clients % processes),
            rate=args.rate / processes,
            duration=args.duration,
            timeout=args.timeout,
            headers=headers,
            seed=args.seed * 1000 + number,
        )
        for number in range(processes)
    ]
    reports = run(plans, LiveLine(args.duration, sys.stderr))
    print(report(reports, max(process.wall_seconds for process in reports)))


if __name__ == "__main__":
    main()
