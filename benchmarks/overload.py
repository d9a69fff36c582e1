"""The overload guard against three kinds of clients and a burst, beside its baselines.

Run through ``benchmarks/run overload``. It renders the template (PostgreSQL, example), seeds
the benchmark's data, and runs three servers in turn on the server core: the service with its
guard (defaults), the same with the guard off, and the guard off behind uvicorn's
``--limit-concurrency``. Against each, on the list route, in this order:

1. unloaded: one client, one request at a time (the unloaded p99);
2. capacity: ``--capacity-clients`` closed-loop clients (goodput at capacity);
3. retry storm: ten times as many closed-loop clients, each retrying a 503 at once;
4. polite: as many clients, honouring Retry-After with its jitter;
5. open loop: Poisson arrivals at 1.5x, 3x and 10x the guarded service's capacity, latency
   from the scheduled send time;
6. burst: twice the guard's ceiling of parallel requests against the idle service.

Throughout 3-6 a probe asks ``/health`` every 50 ms. Every ratio pairs figures of one run.
"""

import argparse
import asyncio
import os
import random
import resource
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import uvloop
from charts import beside, overload_chart
from dataset import PAGE, SEED, list_path
from loadclient import CLIENT_TIMEOUT, Connection, LoadResult, Response, check_access, percentile
from servers import CLIENT_CORE, HOST, Server, serving
from testbed import DEFAULT_POSTGRES, MODULE, Testbed, settings_of, testbed

TARGET = f"{MODULE}:app"


@dataclass
class Outcome(LoadResult):
    """What one scenario got back from one server, with /health meanwhile."""

    health: list[float] = field(default_factory=list)
    client_cpu: float = 0.0
    guard: dict[str, float] = field(default_factory=dict)

    def health_p99(self) -> float:
        return percentile([latency for latency in self.health if latency >= 0], 99)

    @property
    def health_failures(self) -> int:
        return sum(1 for latency in self.health if latency < 0)


async def probe_health(port: int, until: asyncio.Event, latencies: list[float]) -> None:
    connection = Connection(HOST, port, CLIENT_TIMEOUT)
    try:
        while not until.is_set():
            response = await connection.request("GET", "/health")
            latencies.append(response.seconds if response.status == 200 else -1.0)
            await asyncio.sleep(0.05)
    finally:
        connection.close()


async def closed_loop(port: int, clients: int, seconds: float, polite: bool) -> list[Response]:
    """Clients that send again as soon as answered; polite ones wait out Retry-After."""
    deadline = time.perf_counter() + seconds
    results: list[Response] = []

    async def client(number: int) -> None:
        rng = random.Random(SEED + number)
        connection = Connection(HOST, port, CLIENT_TIMEOUT)
        failures = 0
        try:
            while time.perf_counter() < deadline:
                response = await connection.request("GET", list_path(rng))
                results.append(response)
                if not polite or response.status != 503:
                    failures = 0
                    continue
                failures += 1
                retry_after = response.headers.get("retry-after", "")
                delay = float(retry_after) if retry_after.isdigit() else 0.05 * 2**failures
                delay *= rng.uniform(0.5, 1.5)
                await asyncio.sleep(max(0.0, min(delay, deadline - time.perf_counter())))
        finally:
            connection.close()

    await asyncio.gather(*(client(number) for number in range(clients)))
    return results


async def open_loop(port: int, rate: float, seconds: float) -> list[Response]:
    """Poisson arrivals at ``rate``; each latency counts from the scheduled send time."""
    rng = random.Random(SEED)
    results: list[Response] = []
    idle: list[Connection] = []

    async def send(scheduled: float, path: str) -> None:
        connection = idle.pop() if idle else Connection(HOST, port, CLIENT_TIMEOUT)
        response = await connection.request("GET", path)  # errors come back as responses
        response.seconds = time.perf_counter() - scheduled
        results.append(response)
        idle.append(connection)

    start = time.perf_counter()
    scheduled = start
    # The group waits for the requests still in flight when the arrivals stop.
    async with asyncio.TaskGroup() as sending:
        while True:
            scheduled += rng.expovariate(rate)
            if scheduled >= start + seconds:
                break
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sending.create_task(send(scheduled, list_path(rng)))
    for connection in idle:
        connection.close()
    return results


async def burst(port: int, size: int) -> list[Response]:
    """``size`` requests at the same instant, each on a connection of its own."""
    rng = random.Random(SEED)
    connections = [Connection(HOST, port, CLIENT_TIMEOUT) for _ in range(size)]
    for connection in connections:  # connect first, so the requests leave together
        await connection.request("GET", "/health")
    try:
        return list(
            await asyncio.gather(
                *(connection.request("GET", list_path(rng)) for connection in connections)
            )
        )
    finally:
        for connection in connections:
            connection.close()


def measure(server: Server, scenario: Callable[[], object], probe: bool = True) -> Outcome:
    """Run one scenario (a coroutine factory) with the health probe beside it."""

    async def both() -> tuple[list[Response], list[float], float]:
        health: list[float] = []
        stop = asyncio.Event()
        prober = asyncio.create_task(probe_health(server.port, stop, health)) if probe else None
        started = time.perf_counter()
        responses = await scenario()  # type: ignore[misc]
        elapsed = time.perf_counter() - started
        stop.set()
        if prober is not None:
            await prober
        return responses, health, elapsed

    cpu = resource.getrusage(resource.RUSAGE_SELF)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        responses, health, elapsed = runner.run(both())
    used = resource.getrusage(resource.RUSAGE_SELF)
    check_access(responses, f"overload on {server.name}")
    guard = guard_counters(server)
    server.settle()
    client_cpu = (used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime) / elapsed
    return Outcome(elapsed, responses, health, client_cpu, guard)


def guard_counters(server: Server) -> dict[str, float]:
    """The guard's samples in /metrics as the scenario left them, by field name."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{server.port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    counters = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith("guard_"):
            counters[name.removeprefix("guard_").removesuffix("_total")] = float(value)
    return counters


# Open-loop arrivals at these multiples of the capacity measured first.
OPEN_LOADS = (1.5, 3, 10)
SCENARIOS = ("storm", "polite", *(f"open {factor:g}x" for factor in OPEN_LOADS), "burst")


def run_server(
    server: Server, work: Path, args: argparse.Namespace, capacity_rate: float | None
) -> tuple[dict[str, Outcome], float]:
    with serving(work, server):
        measure(server, lambda: closed_loop(server.port, 4, 1.0, False), probe=False)  # warm up
        unloaded = measure(server, lambda: closed_loop(server.port, 1, 2.0, False), probe=False)
        at_capacity = measure(
            server, lambda: closed_loop(server.port, args.capacity_clients, args.seconds, False)
        )
        rate = capacity_rate or at_capacity.goodput
        many = args.capacity_clients * 10
        outcomes = {
            "unloaded": unloaded,
            "capacity": at_capacity,
            "storm": measure(server, lambda: closed_loop(server.port, many, args.seconds, False)),
            "polite": measure(server, lambda: closed_loop(server.port, many, args.seconds, True)),
        }
        for factor in OPEN_LOADS:
            outcomes[f"open {factor:g}x"] = measure(
                server, lambda factor=factor: open_loop(server.port, rate * factor, args.seconds)
            )
        bursts = []
        for _ in range(3):
            time.sleep(1.0)  # idle between bursts
            bursts.append(measure(server, lambda: burst(server.port, args.burst)))
        outcomes["burst"] = Outcome(
            sum(outcome.seconds for outcome in bursts),
            [response for outcome in bursts for response in outcome.responses],
            [latency for outcome in bursts for latency in outcome.health],
            max(outcome.client_cpu for outcome in bursts),
            bursts[-1].guard,
        )
        return outcomes, rate


def report(results: dict[str, dict[str, Outcome]], rate: float, args: argparse.Namespace) -> str:
    lines = [
        f"List route (`GET /items?limit={PAGE}`), {args.seconds:g} s per scenario. Capacity: "
        f"{args.capacity_clients} closed-loop clients; storm and polite: "
        f"{args.capacity_clients * 10} clients; open loop rates are multiples of the guarded "
        f"service's capacity ({rate:,.0f} req/s); burst: {args.burst} parallel requests, three "
        "times, against the idle service. Goodput is 2xx/s over the server's own capacity; "
        "p99 admitted is over the server's own unloaded p99 (one client).",
        "",
        "| scenario | server | goodput req/s | goodput / capacity | p99 admitted / unloaded | 503s "
        "| median 503 ms | client timeouts | other failures | health p99 ms (not 200) "
        "| guard limit after | client CPU |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for scenario in SCENARIOS:
        for name, outcomes in results.items():
            outcome = outcomes[scenario]
            capacity = outcomes["capacity"].goodput
            unloaded = outcomes["unloaded"].p99_admitted()
            goodput = (
                f"{len(outcome.of(lambda s: 200 <= s < 300))} of {len(outcome.responses)} served"
                if scenario == "burst"
                else f"{outcome.goodput / capacity:.2f}"
            )
            lines.append(
                f"| {scenario} | {name} | {outcome.goodput:,.0f} | {goodput} "
                f"| {outcome.p99_admitted() / unloaded:.1f}x "
                f"| {outcome.refused:,} | {outcome.median_refusal() * 1000:.1f} "
                f"| {outcome.timeouts:,} | {outcome.failures:,} "
                f"| {outcome.health_p99() * 1000:.1f} ({outcome.health_failures}) "
                f"| {_limit(outcome)} | {outcome.client_cpu:.0%} |"
            )
    lines += [
        "",
        "| server | capacity req/s | unloaded p99 ms | p99 at capacity ms |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, outcomes in results.items():
        lines.append(
            f"| {name} | {outcomes['capacity'].goodput:,.0f} "
            f"| {outcomes['unloaded'].p99_admitted() * 1000:.1f} "
            f"| {outcomes['capacity'].p99_admitted() * 1000:.1f} |"
        )
    return "\n".join(lines)


def _limit(outcome: Outcome) -> str:
    limit = outcome.guard.get("limit")
    return "-" if limit is None else f"{limit:.0f}"


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4, help="length of each scenario")
    parser.add_argument("--capacity-clients", type=int, default=10)
    parser.add_argument("--burst", type=int, default=20, help="parallel requests in a burst")
    parser.add_argument("--output", type=Path, help="also write the table (Markdown) here")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=VALUE,...",
        help="also measure the guarded service with these settings, repeatable",
    )
    parser.add_argument("--no-baselines", action="store_true", help="measure the guard only")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES)
    return parser.parse_args()


def main() -> None:
    args = parse_arguments()
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    with testbed("overload", args.postgres) as bed:
        results: dict[str, dict[str, Outcome]] = {}
        rate: float | None = None
        for server in servers_to_measure(bed, args):
            print(f"measuring {server.name}", flush=True)
            results[server.name], measured = run_server(server, bed.work, args, rate)
            rate = rate or measured
        assert rate is not None
        text = report(results, rate, args)
        text += f"\n\nThe run took {bed.minutes():.1f} minutes."
    print("\n" + text)
    if args.output:
        args.output.write_text(text + "\n")
        overload_chart(results, OPEN_LOADS, beside(args.output, "overload"))


def servers_to_measure(bed: Testbed, args: argparse.Namespace) -> list[Server]:
    """The guard, then (unless ``--no-baselines``) its baselines, then each ``--variant``."""
    base = {"DATABASE_URL": bed.database_url, "CREATE_TABLES": "false"}
    settings = settings_of(bed.project, base)
    ceiling = int(settings["guard_max_in_flight"]) + int(settings["guard_max_waiting"])
    unguarded = {**base, "GUARD_ENABLED": "false"}
    servers = [
        Server("guard", 18411, bed.project, TARGET, base),
        Server("no guard", 18412, bed.project, TARGET, unguarded),
        Server(
            f"--limit-concurrency {ceiling}", 18413, bed.project, TARGET, unguarded,
            ["--limit-concurrency", str(ceiling)],
        ),
    ]  # fmt: skip
    if args.no_baselines:
        servers = servers[:1]
    for number, variant in enumerate(args.variant):
        settings_changed = dict(pair.split("=", 1) for pair in variant.split(","))
        servers.append(
            Server(f"guard, {variant}", 18414 + number, bed.project, TARGET,
                   {**base, **settings_changed}),
        )  # fmt: skip
    return servers


if __name__ == "__main__":
    main()
