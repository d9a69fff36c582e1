"""What one refusal costs the server: refusals per second of a saturated core.

The rendered service (SQLite, default answers) runs with one place and no line, the place
held by a request that never ends; clients that retry at once then get nothing but 503s,
and the server's core spends its whole time refusing. Variants: the guard (refusal in its
ASGI middleware), the guard with ``early_refusal.EarlyRefusal`` (refusal in uvicorn's
protocol, after the headers), and uvicorn's ``--limit-concurrency 1`` without the guard.
Run: ``.venv/bin/python benchmarks/refusal.py``.
"""

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import tokens
import uvloop
from loadclient import Connection
from servers import CLIENT_CORE, HOST, cpu_ticks, stop_process
from testbed import MODULE, create_tables, render

BENCHMARKS = Path(__file__).resolve().parent
HOLD_APP = f"""
import asyncio

from {MODULE} import app, query_budget


@app.get("/hold")
@query_budget(0)
async def hold() -> dict[str, str]:
    await asyncio.sleep(3600)
    return {{}}
"""


def start(
    project: Path, port: int, extra: list[str], environment: dict[str, str]
) -> subprocess.Popen[bytes]:
    command = [
        "taskset", "-c", "0", sys.executable, "-m", "uvicorn", "hold_app:app", "--port", str(port),
        "--host", HOST, "--loop", "uvloop", "--no-access-log", "--log-level", "error",
        "--timeout-graceful-shutdown", "1", *extra,
    ]  # fmt: skip
    env = {
        **os.environ,
        **tokens.ENVIRONMENT,
        **environment,
        "PYTHONPATH": f"{project}{os.pathsep}{BENCHMARKS}",
    }
    process = subprocess.Popen(command, cwd=project, env=env, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=1):
                return process
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the server on port {port} did not start")


async def storm(port: int, clients: int, seconds: float) -> tuple[int, int]:
    holder = Connection(HOST, port, seconds + 10)
    holding = asyncio.create_task(holder.request("GET", "/hold"))
    await asyncio.sleep(0.5)
    deadline = time.perf_counter() + seconds
    counts = {"503": 0, "other": 0}

    async def client() -> None:
        connection = Connection(HOST, port, 5)
        while time.perf_counter() < deadline:
            response = await connection.request("GET", "/items?limit=10")
            counts["503" if response.status == 503 else "other"] += 1
        connection.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    holding.cancel()
    holder.close()
    return counts["503"], counts["other"]


def cpu_seconds(pid: int) -> float:
    return cpu_ticks(pid) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 4.0
    work = Path(tempfile.mkdtemp(prefix="sqlmodel-starter-refusal-"))
    try:
        project = render(work)
        (project / "hold_app.py").write_text(HOLD_APP)
        base = {
            "DATABASE_URL": f"sqlite+aiosqlite:///{work / 'refusal.db'}",
            "GUARD_MAX_IN_FLIGHT": "1",
            "GUARD_MAX_WAITING": "0",
            "GUARD_ADAPTIVE": "false",
        }
        # The service refuses to start on a database behind its migrations.
        create_tables(project, base["DATABASE_URL"])
        variants = [
            ("guard (ASGI middleware)", ["--http", "httptools"], base),
            ("guard, refused in the protocol", ["--http", "early_refusal:EarlyRefusal"], base),
            ("uvicorn --limit-concurrency, no guard",
             ["--http", "httptools", "--limit-concurrency", "2"],
             {**base, "GUARD_ENABLED": "false"}),
        ]  # fmt: skip
        print("| variant | refusals/s | server CPU | CPU per refusal us | other answers |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for number, (name, extra, environment) in enumerate(variants):
            row = refusal_row(project, 8121 + number, name, extra, environment, seconds)
            print(row, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def refusal_row(
    project: Path,
    port: int,
    name: str,
    extra: list[str],
    environment: dict[str, str],
    seconds: float,
) -> str:
    """One variant under the storm: refusals a second, and the server CPU they cost."""
    process = start(project, port, extra, environment)
    try:
        before = cpu_seconds(process.pid)
        started = time.perf_counter()
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            refused, other = runner.run(storm(port, 64, seconds))
        elapsed = time.perf_counter() - started - 0.5  # the storm waits 0.5 s for the holder
        used = cpu_seconds(process.pid) - before
    finally:
        stop_process(process)
    return (
        f"| {name} | {refused / elapsed:,.0f} | {used / elapsed:.0%} "
        f"| {used / max(refused, 1) * 1e6:.0f} | {other} |"
    )


if __name__ == "__main__":
    main()
