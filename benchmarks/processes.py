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

``several_processes`` starts the servers each point needs, measures them in turn and returns
what ``report.py`` prints.
"""

import asyncio
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import uvloop
from dataset import ITEMS, SEED
from loadclient import Connection, percentile
from postgres import connected
from servers import BENCHMARKS, BOTH_CORES, HOST, Server, serving
from testbed import MODULE, Testbed
from wrk_driver import wrk

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


@dataclass
class SeveralProcesses:
    """What the several-process points measured, at ``connections`` connections."""

    connections: int
    workers: dict[str, Paired]
    latencies: Latencies
    service_writes: Paired
    database_writes: dict[int, Paired]


def several_processes(
    bed: Testbed,
    base: dict[str, str],
    throughput: dict[str, str],
    connections: int,
    repeats: int,
    seconds: float,
    invalidations: int,
) -> SeveralProcesses:
    """Two workers against the ceiling with two, the invalidation latency between two
    instances, and write throughput with NOTIFY on and off."""
    target = f"{MODULE}:app"
    ours = Server("ours", 8611, bed.project, target, throughput, workers=2, cores=BOTH_CORES)
    ceiling = Server("ceiling", 8612, BENCHMARKS, "ceiling:app", base, workers=2, cores=BOTH_CORES)
    with serving(bed.work, ours, ceiling):
        workers = two_workers(ours, ceiling, connections, repeats, seconds)
    # The NOTIFY pair starts fresh, side by side: reusing the server the points above had
    # warmed made NOTIFY look 1.3-1.5x faster, which two fresh servers did not confirm.
    notifying = Server("ours", 8616, bed.project, target, throughput, workers=2, cores=BOTH_CORES)
    quiet_env = {**throughput, "CACHE_NOTIFY": "false"}
    quiet = Server(
        "ours, no NOTIFY", 8613, bed.project, target, quiet_env, workers=2, cores=BOTH_CORES
    )
    with serving(bed.work, notifying, quiet):
        service_writes = notify_writes(notifying, quiet, connections, repeats, seconds)
    writer = Server("instance A", 8614, bed.project, target, base, cores=BOTH_CORES)
    reader = Server("instance B", 8615, bed.project, target, base, cores=BOTH_CORES)
    with serving(bed.work, writer, reader):
        latencies = invalidation_latency(HOST, writer.port, reader.port, ITEMS, invalidations, SEED)
    print(
        f"  invalidation: p50 {percentile(latencies.from_ack, 50) * 1000:.2f} ms "
        f"p99 {percentile(latencies.from_ack, 99) * 1000:.2f} ms after the write",
        flush=True,
    )
    # One connection alone, then 32 at once: the lock shows only when commits contend.
    database_writes = {
        clients: raw_commits(bed.dsn, clients, seconds, repeats) for clients in (1, 32)
    }
    return SeveralProcesses(connections, workers, latencies, service_writes, database_writes)


def two_workers(
    ours: Server, ceiling: Server, connections: int, repeats: int, seconds: float
) -> dict[str, Paired]:
    """The list and get-one routes on two-worker servers, taking turns, wrk on both cores."""
    points: dict[str, Paired] = {}
    for route in ("list", "get"):
        for server in (ours, ceiling):
            wrk(server, route, connections, 2, client_cores=BOTH_CORES)
        points[route] = paired = Paired()
        for repetition in range(repeats):
            for server, runs in ((ours, paired.ours), (ceiling, paired.theirs)):
                point = wrk(server, route, connections, seconds, client_cores=BOTH_CORES)
                runs.append(point.rps)
                print(
                    f"  {route:5} 2 workers c={connections} rep {repetition + 1} "
                    f"{server.name:20} {point.rps:8.0f} req/s  p99 {point.p99_ms:7.1f} ms  "
                    f"non-2xx {point.non2xx}",
                    flush=True,
                )
    return points


def notify_writes(
    notifying: Server, quiet: Server, connections: int, repeats: int, seconds: float
) -> Paired:
    """POST /items on two-worker servers with the cache's NOTIFY on (ours) and off (theirs)."""
    writes = Paired()
    for server in (notifying, quiet):
        wrk(server, "create", connections, 2, client_cores=BOTH_CORES)
    for repetition in range(repeats):
        turns = [(notifying, writes.ours), (quiet, writes.theirs)]
        # Each repetition swaps who goes first: the table grows with every create.
        for server, runs in turns if repetition % 2 == 0 else turns[::-1]:
            point = wrk(server, "create", connections, seconds, client_cores=BOTH_CORES)
            runs.append(point.rps)
            print(
                f"  create 2 workers c={connections} rep {repetition + 1} {server.name:20} "
                f"{point.rps:8.0f} req/s  non-2xx {point.non2xx}",
                flush=True,
            )
    return writes


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
    async with connected(dsn) as setup:
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
