"""The benchmark's points with several processes; ``bench.py`` runs them after the others.

- Two workers on two cores: the service against the raw-asyncpg ceiling, each under uvicorn
  ``--workers 2`` on both cores, on the list and get-one routes. wrk and PostgreSQL share the
  same two cores, so these points measure the machine, not one core per process.
- Invalidation between two instances: two uvicorn processes on one database; a PATCH goes
  through instance A, then B is read until it shows the change. Percentiles of the time from
  A's acknowledgement (and from the PATCH being sent) to B's first fresh read, with B's
  cached read for scale.
- Write throughput with the cache's NOTIFY on and off: PostgreSQL takes a database-wide lock
  when a transaction that notified commits, which serializes such commits. Measured on the
  service (POST /items, two workers, ``CACHE_NOTIFY`` true / false) and on raw committing
  transactions (INSERT + ``pg_notify`` against INSERT + a plain SELECT: the same round
  trips, so the difference is the notification's own cost).
"""

import asyncio
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import uvloop
from loadclient import Connection

BOTH_CORES = "0,1"
NOTIFY_CHANNEL = "bench_notify"
INSERT = "INSERT INTO notify_bench (client) VALUES ($1)"


@dataclass
class Paired:
    """Repetitions of two servers (or settings) measured in turn: (ours, theirs) each time."""

    ours: list[float] = field(default_factory=list)
    theirs: list[float] = field(default_factory=list)

    def ratio(self) -> float:
        """The median over repetitions of ours / theirs, leaving out runs that got nothing."""
        pairs = [(a, b) for a, b in zip(self.ours, self.theirs, strict=True) if a and b]
        return statistics.median(a / b for a, b in pairs) if pairs else float("nan")

    def empty_runs(self) -> int:
        """Runs that got no answer at all (a server that failed, on a shared machine)."""
        return sum(1 for rate in (*self.ours, *self.theirs) if not rate)


@dataclass
class Latencies:
    """Invalidation samples between two instances."""

    from_ack: list[float] = field(default_factory=list)
    from_send: list[float] = field(default_factory=list)
    cached_reads: list[float] = field(default_factory=list)
    stale_after_ack: int = 0
    never_seen: int = 0


def percentile(values: list[float], percent: float) -> float:
    """The ``percent`` percentile of ``values`` (nearest rank), or nan if there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * percent / 100))]


def two_workers(
    ours: Any,
    ceiling: Any,
    scripts: dict[str, Path],
    wrk: Callable[..., Any],
    connections: int,
    repeats: int,
    seconds: float,
) -> dict[str, Paired]:
    """The list and get-one routes on two-worker servers, taking turns, wrk on both cores."""
    points: dict[str, Paired] = {}
    for route in ("list", "get"):
        for server in (ours, ceiling):
            wrk(server, scripts[route], connections, 2, client_cores=BOTH_CORES)
        points[route] = paired = Paired()
        for repetition in range(repeats):
            for server, runs in ((ours, paired.ours), (ceiling, paired.theirs)):
                point = wrk(server, scripts[route], connections, seconds, client_cores=BOTH_CORES)
                runs.append(point.rps)
                print(
                    f"  {route:5} 2 workers c={connections} rep {repetition + 1} "
                    f"{server.name:20} {point.rps:8.0f} req/s  p99 {point.p99_ms:7.1f} ms  "
                    f"non-2xx {point.non2xx}",
                    flush=True,
                )
    return points


def invalidation_latency(
    host: str, writer_port: int, reader_port: int, items: int, samples: int, seed: int
) -> Latencies:
    """``samples`` times: read an item through B (cached), PATCH it through A, read B until
    the new price shows."""
    rng = random.Random(seed)
    latencies = Latencies()

    async def measure() -> None:
        writer, reader = Connection(host, writer_port, 5), Connection(host, reader_port, 5)
        try:
            for _ in range(samples):
                path = f"/items/{rng.randint(1, items)}"
                await reader.request("GET", path)  # cached from here on
                cached = await reader.request("GET", path)
                latencies.cached_reads.append(cached.seconds)
                price = (_json(cached)["price_cents"] + 1) % 100_000
                sent = time.perf_counter()
                written = await writer.request("PATCH", path, {"price_cents": price})
                acknowledged = time.perf_counter()
                if written.status != 200:
                    raise SystemExit(f"PATCH {path} answered {written.status}: {written.body!r}")
                while True:
                    read = await reader.request("GET", path)
                    if _json(read)["price_cents"] == price:
                        seen = time.perf_counter()
                        latencies.from_ack.append(seen - acknowledged)
                        latencies.from_send.append(seen - sent)
                        break
                    latencies.stale_after_ack += 1
                    if time.perf_counter() - acknowledged > 5:
                        latencies.never_seen += 1
                        break
        finally:
            writer.close()
            reader.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(measure())
    return latencies


def _json(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    return body


async def commit_rate(dsn: str, clients: int, seconds: float, notify: bool) -> float:
    """Transactions committed per second by ``clients`` connections, each doing an INSERT and
    then ``pg_notify`` (or, with ``notify`` false, a SELECT of the same payload), with one
    connection listening, as the service's processes do."""
    setup = await asyncpg.connect(dsn)
    try:
        await setup.execute(
            "CREATE TABLE IF NOT EXISTS notify_bench (id bigserial PRIMARY KEY, client int)"
        )
        await setup.add_listener(NOTIFY_CHANNEL, lambda *_: None)
        connections = [await asyncpg.connect(dsn) for _ in range(clients)]
        second = "SELECT pg_notify($1, $2)" if notify else "SELECT $1::text, $2::text"
        payload = '{"origin":"bench","keys":[["item",1]],"namespaces":[]}'
        committed = 0
        deadline = time.perf_counter() + seconds

        async def client(number: int, connection: asyncpg.Connection) -> None:
            nonlocal committed
            while time.perf_counter() < deadline:
                async with connection.transaction():
                    await connection.execute(INSERT, number)
                    await connection.execute(second, NOTIFY_CHANNEL, payload)
                committed += 1

        started = time.perf_counter()
        await asyncio.gather(*(client(n, c) for n, c in enumerate(connections)))
        elapsed = time.perf_counter() - started
        for connection in connections:
            await connection.close()
        return committed / elapsed
    finally:
        await setup.close()


def raw_commits(dsn: str, clients: int, seconds: float, repeats: int) -> Paired:
    """Commits per second with pg_notify (ours) and without (theirs), taking turns."""
    paired = Paired()
    for repetition in range(repeats):
        turns = [(True, paired.ours), (False, paired.theirs)]
        for notify, runs in turns if repetition % 2 == 0 else turns[::-1]:
            rate = asyncio.run(commit_rate(dsn, clients, seconds, notify))
            runs.append(rate)
            print(
                f"  raw commits c={clients} rep {repetition + 1} "
                f"{'with' if notify else 'without'} pg_notify {rate:8.0f}/s",
                flush=True,
            )
    return paired


def report(
    workers: dict[str, Paired],
    one_worker: dict[str, float],
    latencies: Latencies,
    service_writes: Paired,
    database_writes: dict[int, Paired],
    connections: int,
) -> list[str]:
    """The Markdown tables of the several-process points."""
    labels = {"list": "GET /items?limit=50 (owner + tags)", "get": "GET /items/{id} (random ids)"}
    lines = [
        f"Two workers on two cores (uvicorn `--workers 2`, both servers, wrk and PostgreSQL "
        f"sharing the two cores), {connections} connections:",
        "",
        "| route | ours req/s | ceiling req/s | ours / ceiling, 2 workers | "
        "ours / ceiling, 1 worker (above) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for route, paired in workers.items():
        lines.append(
            f"| {labels[route]} | {statistics.median(paired.ours):,.0f} "
            f"| {statistics.median(paired.theirs):,.0f} | {paired.ratio():.2f}x "
            f"| {one_worker[route]:.2f}x |"
        )
    empty = sum(paired.empty_runs() for paired in workers.values())
    if empty:
        lines += ["", f"{empty} runs got no answer at all and are left out of the ratios."]
    samples = len(latencies.from_ack) + latencies.never_seen
    lines += [
        "",
        f"Invalidation between two instances: {samples} PATCHes through instance A of an item "
        "instance B had cached, each followed by reads through B until one showed the new "
        "price.",
        "",
        "| time | p50 ms | p90 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, values in (
        ("A's acknowledgement to B's first fresh read", latencies.from_ack),
        ("PATCH sent to B's first fresh read", latencies.from_send),
        ("B's cached read (for scale)", latencies.cached_reads),
    ):
        cells = [f"{percentile(values, p) * 1000:.2f}" for p in (50, 90, 99)]
        lines.append(f"| {name} | {' | '.join(cells)} | {max(values, default=0) * 1000:.2f} |")
    lines += [
        "",
        f"Reads through B that still showed the old price after A's acknowledgement: "
        f"{latencies.stale_after_ack} over the {samples} samples; samples never fresh within "
        f"5 s: {latencies.never_seen}.",
        "",
        "Write throughput with the cache's NOTIFY on and off:",
        "",
        "| writes | NOTIFY on /s | NOTIFY off /s | on / off |",
        "| --- | ---: | ---: | ---: |",
        f"| POST /items (with tags), 2 workers, {connections} connections, `CACHE_NOTIFY` "
        f"| {statistics.median(service_writes.ours):,.0f} "
        f"| {statistics.median(service_writes.theirs):,.0f} | {service_writes.ratio():.2f}x |",
    ]
    for clients, paired in database_writes.items():
        lines.append(
            f"| raw transactions, {clients} connection{'s' if clients > 1 else ''}: "
            f"INSERT + `pg_notify` vs INSERT + SELECT | {statistics.median(paired.ours):,.0f} "
            f"| {statistics.median(paired.theirs):,.0f} | {paired.ratio():.2f}x |"
        )
    return lines
