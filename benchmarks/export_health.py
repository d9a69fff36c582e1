"""How the CSV export of a large owner affects everyone else: /health latency during it.

Usage: ``.venv/bin/python benchmarks/export_health.py [PROJECT ...]`` (default: ``example``),
each PROJECT a rendering with the example domain. For each: create a fresh PostgreSQL
database, migrate it, start the project under uvicorn (one worker), seed one owner with
300,000 items, then download ``/owners/1/items.csv`` while probing ``/health`` every 5 ms
on a connection of its own and watching ``pg_stat_activity``; print the probes' latency
percentiles, the export's duration and size, and the most service connections seen idle
in a transaction. Not part of the test suite: the figures depend on the machine.
"""

import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import tokens
from postgres import connected, execute, sqlalchemy_url
from servers import free_port, stop_process
from testbed import create_tables

POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
ROWS = 300_000
PROBE_EVERY = 0.005


async def admin(sql: str) -> None:
    await execute(f"{POSTGRES}/postgres", sql)


async def seed(database: str) -> None:
    async with connected(f"{POSTGRES}/{database}") as connection:
        await connection.execute("INSERT INTO owner (name) VALUES ('Big')")
        await connection.execute(
            "INSERT INTO item (name, description, price_cents, owner_id, created_at) "
            "SELECT 'item ' || n, '', n, 1, now() FROM generate_series(1, $1) AS n",
            ROWS,
        )
        await connection.execute("ANALYZE")


def start(project: Path, database_url: str, port: int) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        **tokens.ENVIRONMENT,
        "DATABASE_URL": database_url,
        "PYTHONPATH": str(project),
    }
    command = [sys.executable, "-m", "uvicorn", "my_service:app", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--no-access-log"], cwd=project, env=env, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "Application startup complete" in line:
            return process
    raise RuntimeError(f"uvicorn did not start in {project}")


async def measure(base: str, database: str) -> tuple[list[float], float, int, int]:
    latencies: list[float] = []
    done = asyncio.Event()

    async def count_idle_in_transaction() -> int:
        # The service's sessions left inside a transaction while it waits on something else.
        most = 0
        async with connected(f"{POSTGRES}/postgres") as connection:
            while not done.is_set():
                idle: int = await connection.fetchval(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = $1 AND state = 'idle in transaction'",
                    database,
                )
                most = max(most, idle)
                await asyncio.sleep(0.02)
        return most

    async def probe() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            while not done.is_set():
                started = time.perf_counter()
                response = await client.get("/health")
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200
                await asyncio.sleep(PROBE_EVERY)

    async def export() -> tuple[float, int]:
        size = 0
        started = time.perf_counter()
        async with (
            httpx.AsyncClient(base_url=base, timeout=300, headers=tokens.HEADERS) as client,
            client.stream("GET", "/owners/1/items.csv") as response,
        ):
            assert response.status_code == 200, response.status_code
            async for chunk in response.aiter_bytes():
                size += len(chunk)
        done.set()
        return time.perf_counter() - started, size

    prober = asyncio.create_task(probe())
    watcher = asyncio.create_task(count_idle_in_transaction())
    await asyncio.sleep(0.2)  # probes before the export, as a baseline in the same list
    duration, size = await export()
    await prober
    return latencies, duration, size, await watcher


def percentile(values: list[float], fraction: float) -> float:
    return sorted(values)[min(len(values) - 1, int(fraction * len(values)))]


async def bench(project: Path) -> None:
    database = f"export_bench_{uuid.uuid4().hex[:10]}"
    database_url = f"{sqlalchemy_url(POSTGRES)}/{database}"
    await admin(f'CREATE DATABASE "{database}"')
    try:
        # The service refuses to start on a database behind its migrations.
        create_tables(project, database_url)
        port = free_port()
        server = start(project, database_url, port)
        try:
            await seed(database)
            latencies, duration, size, idle = await measure(f"http://127.0.0.1:{port}", database)
        finally:
            stop_process(server)
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    ms = [latency * 1000 for latency in latencies]
    print(
        f"{project}: export of {ROWS:,} rows, {size / 1e6:.1f} MB in {duration:.2f} s; "
        f"/health over {len(ms)} probes: p50 {statistics.median(ms):.1f} ms, "
        f"p99 {percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms; "
        f"at most {idle} connection(s) idle in transaction"
    )


if __name__ == "__main__":
    for argument in sys.argv[1:] or ["example"]:
        asyncio.run(bench(Path(argument).resolve()))
