"""Hostile clients at the HTTP layer, against real servers of one rendering.

Usage: ``.venv/bin/python benchmarks/hostile.py [--project example] [--servers NAME ...]
[--attacks NAME ...]``. For each server (see SERVERS) on a fresh PostgreSQL database with
one owner of 200,000 items and a page of items with tags: start it (one worker), then run
each attack (see ATTACKS) and print what it did to everyone else:

- ``health-pipelined``: the service as deployed (its guard on, its own deadlines); 100
  connections, each with a 4 KiB receive buffer, pipeline 50 ``GET /items?limit=100`` and
  never read, while ``/health`` is asked every 10 ms for 30 s, each time on a new
  connection, on the service's port and on its ``PROBE_PORT`` at once: its median, p99,
  slowest, and how many took over 250 ms.
- ``health-loop``: the same service under a closed loop of 256 wrk connections on
  ``GET /items?limit=100``, with ``/health`` probed the same way.
- ``pipeline``: ten connections per worker, each with a 4 KiB receive buffer, pipeline 300
  ``GET /openapi.json`` and never read; once the send deadline has passed, 40 probes of
  ``/owners`` (how many 200) and the guard's gauges from ``/metrics``.
- ``export``: the same with ten stalled readers of ``/owners/1/items.csv``.
- ``header``: one request with a 32 MB header, sent as fast as the server takes it, while
  ``/health`` is probed every 10 ms on another connection (the slowest probe).
- ``slow-header``: a connection that sends its headers one byte a second: when (whether)
  the server closes it.
- ``throughput``: wrk on ``/items?limit=50`` (32 connections, 5 s), req/s.
- ``profile``: with PROFILING_ENABLED=true, eight ``?profile=1`` at once: their statuses,
  and the slowest ``/health`` meanwhile.

The server is pinned to core 0, the clients to core 1 (where taskset exists). Not part of
the test suite: the figures depend on the machine.
"""

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import tokens
from postgres import connected, execute, sqlalchemy_url
from servers import free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
EXPORT_ROWS = 200_000
SEND_TIMEOUT = 5.0
PROBES = 40
# The health attacks: how long /health is probed, and the answer time it must stay within.
HEALTH_SECONDS = 30.0
HEALTH_TIMEOUT = 10.0
HEALTH_TARGET = 0.25
# The health attacks run the service as deployed: its guard and send deadline as they come.
# (None: the variable is not set at all).
AS_DEPLOYED: dict[str, str | None] = {
    "GUARD_ENABLED": "true",
    "SEND_TIMEOUT": None,
    "HEADER_READ_TIMEOUT": None,
    "SLOW_REQUEST_MS": None,
    "PROBE_PORT": "",  # a free port of the run's
}


def server_command(name: str, port: int) -> list[str]:
    address = ["--host", "127.0.0.1", "--port", str(port)]
    uvicorn = [str(BIN / "uvicorn"), "my_service:app", *address, "--no-access-log"]
    commands = {
        "uvicorn": uvicorn,
        "uvicorn-h11": [*uvicorn, "--http", "h11"],
        "uvicorn-bounded": [*uvicorn, "--http", "my_service:BoundedHttpToolsProtocol"],
        "granian": [
            str(BIN / "granian"),
            "--interface",
            "asgi",
            *address,
            "--no-ws",
            "my_service:app",
        ],
        "hypercorn": [
            str(BIN / "hypercorn"),
            "my_service:app",
            "--bind",
            f"127.0.0.1:{port}",
            "--read-timeout",
            "10",
        ],
    }
    command = commands[name]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    return command


async def seed(database: str) -> None:
    async with connected(f"{POSTGRES}/{database}") as connection:
        await connection.execute("INSERT INTO owner (name) VALUES ('Big'), ('Small')")
        await connection.execute(
            "INSERT INTO item (name, description, price_cents, owner_id, created_at) "
            "SELECT 'item ' || n, '', n, CASE WHEN n <= $1 THEN 1 ELSE 2 END, now() "
            "FROM generate_series(1, $1 + 1000) AS n",
            EXPORT_ROWS,
        )
        await connection.execute("INSERT INTO tag (name) VALUES ('red'), ('blue')")
        await connection.execute(
            "INSERT INTO itemtaglink (item_id, tag_id) SELECT id, 1 + id % 2 FROM item"
        )
        await connection.execute("ANALYZE")


class Server:
    def __init__(
        self, name: str, project: Path, database: str, extra: dict[str, str | None]
    ) -> None:
        self.name = name
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.probe_port = free_port() if extra.get("PROBE_PORT") == "" else None
        env = {
            **os.environ,
            **tokens.ENVIRONMENT,
            "DATABASE_URL": f"{sqlalchemy_url(POSTGRES)}/{database}",
            "PYTHONPATH": str(project),
            "SEND_TIMEOUT": str(SEND_TIMEOUT),
            "HEADER_READ_TIMEOUT": "10",
            "SLOW_REQUEST_MS": "100000",
            "GUARD_ENABLED": "false",
        }
        for variable, value in extra.items():
            if value is None:
                env.pop(variable, None)
            else:
                env[variable] = value
        if self.probe_port is not None:
            env["PROBE_PORT"] = str(self.probe_port)
        self.process = subprocess.Popen(
            server_command(name, self.port),
            cwd=project,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def ready(self) -> None:
        async with authorized_client(self.base, 2) as client:
            for _ in range(300):
                try:
                    if (await client.get("/health")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start")

    def stop(self) -> None:
        stop_process(self.process)


async def stalled(
    server: Server, request: bytes, count: int, connections: int = 10
) -> list[socket.socket]:
    """``connections`` connections that each send ``request`` ``count`` times and never read."""
    sockets = []
    for _ in range(connections):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.setblocking(False)
        payload = request * count
        loop = asyncio.get_running_loop()
        # When the server stops reading, what is sent is enough.
        with contextlib.suppress(TimeoutError, OSError):
            await asyncio.wait_for(loop.sock_sendall(sock, payload), timeout=2)
        sockets.append(sock)
    return sockets


def authorized_client(base: str, timeout: float) -> httpx.AsyncClient:
    """A client of the service at ``base`` that sends the run's token."""
    return httpx.AsyncClient(base_url=base, timeout=timeout, headers=tokens.HEADERS)


def authorized_get(path: str) -> bytes:
    """A raw GET of ``path`` with the run's token, for the stalled connections."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {tokens.AUTHORIZATION}\r\n\r\n".encode()
    )


async def guard_gauges(client: httpx.AsyncClient) -> str:
    text = (await client.get("/metrics")).text
    wanted = ("guard_in_flight ", "guard_waiting ")
    return ", ".join(line for line in text.splitlines() if line.startswith(wanted)) or "-"


async def probe_owners(server: Server) -> tuple[Counter[int | str], str]:
    statuses: Counter[int | str] = Counter()
    async with authorized_client(server.base, 5) as client:
        for _ in range(PROBES):
            try:
                statuses[(await client.get("/owners")).status_code] += 1
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1
        try:
            gauges = await guard_gauges(client)
        except httpx.HTTPError as exc:
            gauges = type(exc).__name__
    return statuses, gauges


async def guard_free(server: Server, give_up: float) -> float | None:
    """Seconds until /metrics shows nothing in flight or waiting; None if not by ``give_up``."""
    started = time.perf_counter()
    async with authorized_client(server.base, 5) as client:
        while time.perf_counter() - started < give_up:
            gauges = await guard_gauges(client)
            if gauges == "guard_in_flight 0.0, guard_waiting 0.0":
                return time.perf_counter() - started
            await asyncio.sleep(0.2)
    return None


async def attack_stalled(server: Server, request: bytes, count: int) -> str:
    sockets = await stalled(server, request, count)
    try:
        await asyncio.sleep(SEND_TIMEOUT)
        free = await guard_free(server, give_up=30)
        statuses, gauges = await probe_owners(server)
    finally:
        for sock in sockets:
            sock.close()
    served = statuses.get(200, 0)
    after = "never" if free is None else f"{SEND_TIMEOUT + free:.1f} s"
    served_line = f"{served} of {PROBES} /owners served {dict(statuses)}"
    return f"guard free after {after}; {served_line}; {gauges}"


async def attack_pipeline(server: Server) -> str:
    request = authorized_get("/openapi.json")
    return await attack_stalled(server, request, 300)


async def attack_export(server: Server) -> str:
    request = authorized_get("/owners/1/items.csv")
    return await attack_stalled(server, request, 1)


@dataclass
class Probes:
    """What /health answered, probe by probe: when each began (seconds from the first) and
    how long it took; and how many got no 200.
    """

    began: list[float] = field(default_factory=list)
    took: list[float] = field(default_factory=list)
    failed: int = 0


async def probe_health(client: httpx.AsyncClient, done: Callable[[float], bool]) -> Probes:
    """/health asked every 10 ms until ``done(seconds since the first probe)``."""
    probes = Probes()
    first = time.perf_counter()
    while not done(time.perf_counter() - first):
        started = time.perf_counter()
        try:
            if (await client.get("/health")).status_code != 200:
                probes.failed += 1
        except httpx.HTTPError:
            probes.failed += 1
        probes.began.append(started - first)
        probes.took.append(time.perf_counter() - started)
        await asyncio.sleep(0.01)
    return probes


async def probing(server: Server, done: asyncio.Event) -> tuple[float, int]:
    """The slowest /health while ``done`` is not set, and how many failed."""
    async with authorized_client(server.base, 60) as client:
        probes = await probe_health(client, lambda _: done.is_set())
    return max(probes.took, default=0.0), probes.failed


async def attack_header(server: Server) -> str:
    done = asyncio.Event()
    prober = asyncio.create_task(probing(server, done))
    await asyncio.sleep(0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    started = time.perf_counter()
    outcome = "sent whole"
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        chunk = b"a" * 65536
        for _ in range(32 * 1024 * 1024 // len(chunk)):
            writer.write(chunk)
            await writer.drain()
        writer.write(b"\r\n\r\n")
        await writer.drain()
    except OSError:
        outcome = "cut off"
    try:
        answer = await asyncio.wait_for(reader.readline(), timeout=120)
    except (TimeoutError, OSError):
        answer = b""
    elapsed = time.perf_counter() - started
    writer.close()
    await asyncio.sleep(0.5)
    done.set()
    worst, failed = await prober
    status = answer.decode(errors="replace").strip() or "closed"
    return (
        f"{outcome}, answered {status!r} after {elapsed:.2f} s; "
        f"slowest /health {worst * 1000:.0f} ms, {failed} failed"
    )


async def attack_slow_header(server: Server, give_up: float = 75.0) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    header = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 1000
    started = time.perf_counter()
    closed = None
    for byte in header:
        if reader.at_eof() or writer.is_closing():
            break
        try:
            writer.write(bytes([byte]))
            await writer.drain()
            data = await asyncio.wait_for(reader.read(1024), timeout=1)
        except TimeoutError:
            data = None
        except OSError:
            data = b""
        if data is not None:
            closed = time.perf_counter() - started
            answer = data.split(b"\r\n", 1)[0].decode(errors="replace") or "nothing"
            break
        if time.perf_counter() - started > give_up:
            break
    writer.close()
    if closed is None:
        return f"still open after {time.perf_counter() - started:.0f} s"
    return f"closed after {closed:.1f} s, answering {answer!r}"


def attack_throughput(server: Server) -> str:
    command = ["wrk", "-t1", "-c32", "-d5s", f"--header=Authorization: {tokens.AUTHORIZATION}"]
    command.append(f"{server.base}/items?limit=50")
    if shutil.which("taskset"):
        command = ["taskset", "-c", "1", *command]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("Requests/sec"))
    non2xx = next((line for line in output.splitlines() if "Non-2xx" in line), "")
    return f"{float(line.split()[1]):.0f} req/s {non2xx.strip()}"


async def attack_profile(server: Server) -> str:
    done = asyncio.Event()
    prober = asyncio.create_task(probing(server, done))
    async with authorized_client(server.base, 60) as client:
        started = time.perf_counter()
        answers = await asyncio.gather(
            *(client.get("/items", params={"limit": 50, "profile": "1"}) for _ in range(8)),
            return_exceptions=True,
        )
        elapsed = time.perf_counter() - started
    done.set()
    worst, failed = await prober
    statuses = Counter(
        answer.status_code if isinstance(answer, httpx.Response) else type(answer).__name__
        for answer in answers
    )
    return (
        f"statuses {dict(statuses)} in {elapsed:.1f} s; slowest /health {worst * 1000:.0f} ms, "
        f"{failed} failed"
    )


async def health_on_new_connections(base: str, seconds: float) -> str:
    """/health at ``base`` probed for ``seconds``, each time on a new connection (10 s
    timeout): its median, p99 and slowest, and how many probes got no 200 in time.
    """
    # A new connection for each probe, as a kubelet's or a load balancer's health check makes.
    fresh = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=HEALTH_TIMEOUT, limits=fresh) as client:
        probes = await probe_health(client, lambda elapsed: elapsed >= seconds)
    over = [
        f"{took * 1000:.0f} ms at {began:.1f} s"
        for began, took in zip(probes.began, probes.took, strict=True)
        if took > HEALTH_TARGET
    ]
    timings = sorted(probes.took)
    median, p99 = timings[len(timings) // 2], timings[int(len(timings) * 0.99)]
    return (
        f"median {median * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"slowest {timings[-1] * 1000:.0f} ms, {len(over)} of {len(timings)} over "
        f"{HEALTH_TARGET * 1000:.0f} ms {over[:3]}, {probes.failed} failed"
    )


async def health_while(server: Server, seconds: float) -> str:
    """/health probed on the service's port and on its probe port at once, for ``seconds``."""
    assert server.probe_port is not None
    on_service, on_probe = await asyncio.gather(
        health_on_new_connections(server.base, seconds),
        health_on_new_connections(f"http://127.0.0.1:{server.probe_port}", seconds),
    )
    return f"/health on the service's port: {on_service}; on PROBE_PORT: {on_probe}"


async def attack_health_pipelined(server: Server) -> str:
    request = authorized_get("/items?limit=100")
    sockets = await stalled(server, request, 50, connections=100)
    try:
        return await health_while(server, HEALTH_SECONDS)
    finally:
        for sock in sockets:
            sock.close()


async def attack_health_loop(server: Server) -> str:
    command = ["wrk", "-t2", "-c256", f"-d{HEALTH_SECONDS:.0f}s", "--timeout=20s"]
    command += [f"--header=Authorization: {tokens.AUTHORIZATION}", f"{server.base}/items?limit=100"]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "1", *command]
    loop = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    await asyncio.sleep(1)  # the loop at full pace before the first probe
    health = await health_while(server, HEALTH_SECONDS - 2)
    output = (await loop.communicate())[0].decode()
    rate = next(line for line in output.splitlines() if line.startswith("Requests/sec"))
    non2xx = next((line.strip() for line in output.splitlines() if "Non-2xx" in line), "")
    return f"{health}; the loop {float(rate.split()[1]):.0f} req/s {non2xx}"


ATTACKS = {
    "health-pipelined": attack_health_pipelined,
    "health-loop": attack_health_loop,
    "pipeline": attack_pipeline,
    "export": attack_export,
    "header": attack_header,
    "slow-header": attack_slow_header,
    "throughput": attack_throughput,
    "profile": attack_profile,
}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project", type=Path, default=ROOT / "example")
    parser.add_argument("--servers", nargs="+", default=["uvicorn"])
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS))
    parser.add_argument("--repeats", type=int, default=1)
    options = parser.parse_args()
    project = options.project.resolve()
    database = f"hostile_{uuid.uuid4().hex[:10]}"
    await execute(f"{POSTGRES}/postgres", f'CREATE DATABASE "{database}"')
    try:
        subprocess.run(
            [str(BIN / "alembic"), "upgrade", "head"],
            cwd=project,
            env={**os.environ, "DATABASE_URL": f"{sqlalchemy_url(POSTGRES)}/{database}"},
            check=True,
            capture_output=True,
        )
        await seed(database)
        for _ in range(options.repeats):
            for attack in options.attacks:
                for name in options.servers:
                    extra: dict[str, str | None] = {}
                    if attack == "profile":
                        extra = {"PROFILING_ENABLED": "true"}
                    elif attack.startswith("health"):
                        extra = AS_DEPLOYED
                    server = Server(name, project, database, extra)
                    try:
                        await server.ready()
                        run = ATTACKS[attack]
                        if asyncio.iscoroutinefunction(run):
                            result = await run(server)
                        else:
                            result = await asyncio.to_thread(run, server)
                        alive = "" if server.process.poll() is None else " (server died)"
                        print(f"{attack:12} {name:16} {result}{alive}", flush=True)
                    finally:
                        server.stop()
    finally:
        await execute(f"{POSTGRES}/postgres", f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
