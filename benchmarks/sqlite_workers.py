"""SQLite under several uvicorn workers and many writers: what the writers get.

Usage: ``.venv/bin/python benchmarks/sqlite_workers.py [PROJECT ...]`` (default: ``example``),
each PROJECT a rendering with the example domain. For each, and for 1, 2 and 4 workers: a
fresh SQLite file, migrated; uvicorn with that many workers; wrk's 200 connections sending
``POST /items`` as fast as they are answered, for 15 s; then the same again while another
process holds SQLite's write lock for 6 s in the middle of the run (a batch job, a backup, a
long migration). Prints created items per second (and its ratio to one worker in the same
run), the answers by status, and wrk's latency percentiles and slowest answer. Not part of
the test suite: the figures depend on the machine.
"""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import tokens
from servers import free_port

WORKERS = (1, 2, 4)
CONNECTIONS = 200
SECONDS = 15
HOLD = 6.0

SCRIPT = Path(__file__).resolve().parent / "wrk" / "count_statuses.lua"


def hold_write_lock(database: Path, after: float, seconds: float) -> None:
    time.sleep(after)
    holder = sqlite3.connect(database, isolation_level=None, timeout=30)
    holder.execute("BEGIN IMMEDIATE")
    time.sleep(seconds)
    holder.execute("COMMIT")
    holder.close()


def run(
    project: Path, workers: int, hold: bool, script: Path
) -> tuple[Counter[int], dict[str, float]]:
    with tempfile.TemporaryDirectory() as directory:
        database = Path(directory) / "bench.db"
        environment = {
            **{name: value for name, value in os.environ.items() if name != "DATABASE_URL"},
            **tokens.ENVIRONMENT,
            "DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        }
        subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            cwd=project,
            env=environment,
            check=True,
            capture_output=True,
        )
        with serving(project, environment, workers) as base:
            if hold:
                threading.Thread(
                    target=hold_write_lock, args=(database, SECONDS / 3, HOLD), daemon=True
                ).start()
            output = subprocess.run(
                [
                    *("wrk", "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--timeout", "30s"),
                    *("-H", f"Authorization: {tokens.AUTHORIZATION}"),
                    *("-s", str(script), f"{base}/items"),
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
    return parse_wrk(output)


@contextmanager
def serving(project: Path, environment: dict[str, str], workers: int) -> Iterator[str]:
    """uvicorn with ``workers`` workers on the project, for the block; yields its base URL."""
    port = free_port()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", f"{module_of(project)}:app", "--port", str(port)),
            *("--workers", str(workers), "--no-access-log", "--log-level", "warning"),
        ],
        cwd=project,
        env=environment,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        # The first answered POST also creates owner 1, whom every item of the script names.
        for _ in range(200):
            try:
                httpx.post(
                    f"{base}/owners", json={"name": "Ada"}, headers=tokens.HEADERS, timeout=5
                )
                break
            except httpx.TransportError:
                time.sleep(0.1)
        time.sleep(2)  # every worker up
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def parse_wrk(output: str) -> tuple[Counter[int], dict[str, float]]:
    """The answers by status and the latency percentiles count_statuses.lua wrote."""
    statuses: Counter[int] = Counter()
    for status, count in re.findall(r"^status (\d+) (\d+)$", output, re.M):
        statuses[int(status)] += int(count)
    errors = re.search(r"Socket errors: (.*)", output)
    latency = {name: float(value) for name, value in re.findall(r"^(p\d+) ([\d.]+)$", output, re.M)}
    if errors:
        print(f"    wrk socket errors: {errors.group(1)}")
    return statuses, latency


def module_of(project: Path) -> str:
    # The service is the one module at the top of the project, beside loadtest.py.
    return next(path.stem for path in project.glob("*.py") if path.name != "loadtest.py")


def main() -> None:
    projects = [Path(argument) for argument in sys.argv[1:]] or [Path("example")]
    for project in projects:
        print(f"{project}: POST /items, {CONNECTIONS} connections, {SECONDS} s per run")
        print(
            "| workers | lock held | created/s | vs 1 worker | 201 | 503 | 500 | p50 ms | p99 ms "
            "| slowest ms |"
        )
        print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for hold in (False, True):
            baseline = None
            for workers in WORKERS:
                statuses, latency = run(project.resolve(), workers, hold, SCRIPT)
                created = statuses[201] / SECONDS
                baseline = baseline or created
                print(
                    f"| {workers} | {f'{HOLD:g} s' if hold else 'no'} | {created:.0f} "
                    f"| {created / baseline:.2f} | {statuses[201]} | {statuses[503]} "
                    f"| {statuses[500]} | {latency.get('p50', float('nan')):.0f} "
                    f"| {latency.get('p99', float('nan')):.0f} "
                    f"| {latency.get('p100', float('nan')):.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
