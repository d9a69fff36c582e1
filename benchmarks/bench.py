"""Benchmark the generated service against a raw-asyncpg ceiling and an N+1 variant.

Run through ``benchmarks/run``, which installs what this needs. Steps:

1. render the template's working tree with real Copier (PostgreSQL, example domain);
2. create a fresh database, seed it deterministically (1,000 owners, 200 tags, 100,000 items
   with 0-5 tags each) by COPY, then VACUUM ANALYZE;
3. start, under uvicorn (uvloop, httptools, one worker, no access log, pinned to core 0):
   the rendered service, a copy whose list route loads tags row by row (N+1), and the raw
   ceiling in ``ceiling.py``;
4. drive them with wrk pinned to core 1, servers taking turns point by point, each point
   repeated, at 32 and 64 connections: the list, get-one (random ids), get-one (hot set),
   create, update (PATCH with tags) and batch create routes;
5. overload at ten times capacity, with the service's overload guard (when it has one) and
   with uvicorn's ``--limit-concurrency`` instead, measured with ``loadclient.py``;
6. 128 parallel writers (create, then get), then check the table holds exactly the rows
   that were acknowledged;
7. several processes (``processes.py``): two workers on two cores against the ceiling with
   two, the invalidation latency between two instances, and write throughput with the
   cache's NOTIFY on and off;
8. print the tables and the targets, met or not.
"""

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import copier
import processes
import uvloop
from loadclient import BROKEN, TIMEOUT, Connection, Response, closed_loop, run_workers

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
SERVER_CORE, CLIENT_CORE = "0", "1"
MODULE = "my_service"
SEED = 20240601
OWNERS, TAGS, ITEMS, MAX_TAGS_PER_ITEM = 1_000, 200, 100_000, 5
PAGE = 50
BATCH_ROWS = 100
HOT_SET = 100
POOL_SIZE = 10
CLIENT_TIMEOUT = 5.0

# The N+1 variant: the list route keeps the owner join but loads each row's tags on its own,
# with the same statement the service batches for the whole page.
NPLUS1_PATCHES = [
    (
        "    if tags:\n"
        '        postgresql = connection.dialect.name == "postgresql"\n'
        "        statement = _TAGS_OF_ITEMS_ANY if postgresql else _TAGS_OF_ITEMS_IN\n"
        '        links = await connection.execute(statement, {"item_ids": list(tags)})\n',
        "    for one_item in list(tags):\n"
        '        links = await connection.execute(_TAGS_OF_ITEMS_ANY, {"item_ids": [one_item]})\n',
    ),
]

LUA_COMMON = """
local counter = 0
setup = function(thread)
  counter = counter + 1
  thread:set("number", counter)
end
init = function(args)
  math.randomseed(%(seed)d + number)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nRESULT {"requests": %%d, "microseconds": %%d, "non2xx": %%d, "socket_errors": %%d, '
    .. '"timeouts": %%d, "p50": %%d, "p99": %%d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""

LUA_ROUTES = {
    "list": """
request = function()
  return wrk.format("GET", "/items?limit=%(page)d&after=" .. math.random(0, %(items)d - %(page)d))
end
""",
    "get": """
request = function()
  return wrk.format("GET", "/items/" .. math.random(1, %(items)d))
end
""",
    "get-hot": """
local hot = {%(hot)s}
request = function()
  return wrk.format("GET", "/items/" .. hot[math.random(#hot)])
end
""",
    "create": """
local headers = {["Content-Type"] = "application/json"}
request = function()
  local chosen, ids = {}, {}
  for _ = 1, math.random(0, %(max_tags)d) do
    local tag = math.random(1, %(tags)d)
    if not chosen[tag] then
      chosen[tag] = true
      ids[#ids + 1] = tag
    end
  end
  local body = string.format(
    '{"name": "bench item", "description": "made by the benchmark", "price_cents": %%d, '
    .. '"owner_id": %%d, "tag_ids": [%%s]}',
    math.random(0, 100000), math.random(1, %(owners)d), table.concat(ids, ", "))
  return wrk.format("POST", "/items", headers, body)
end
""",
    "update": """
local headers = {["Content-Type"] = "application/json"}
request = function()
  local chosen, ids = {}, {}
  for _ = 1, math.random(0, %(max_tags)d) do
    local tag = math.random(1, %(tags)d)
    if not chosen[tag] then
      chosen[tag] = true
      ids[#ids + 1] = tag
    end
  end
  local body = string.format(
    '{"price_cents": %%d, "tag_ids": [%%s]}', math.random(0, 100000), table.concat(ids, ", "))
  return wrk.format("PATCH", "/items/" .. math.random(1, %(items)d), headers, body)
end
""",
    "batch": """
local headers = {["Content-Type"] = "application/json"}
request = function()
  local rows = {}
  for row = 1, %(batch_rows)d do
    local chosen, ids = {}, {}
    for _ = 1, math.random(0, %(max_tags)d) do
      local tag = math.random(1, %(tags)d)
      if not chosen[tag] then
        chosen[tag] = true
        ids[#ids + 1] = tag
      end
    end
    rows[row] = string.format(
      '{"name": "bench item", "description": "made by the benchmark", "price_cents": %%d, '
      .. '"owner_id": %%d, "tag_ids": [%%s]}',
      math.random(0, 100000), math.random(1, %(owners)d), table.concat(ids, ", "))
  end
  local body = '{"items": [' .. table.concat(rows, ", ") .. ']}'
  return wrk.format("POST", "/items/batch", headers, body)
end
""",
}


@dataclass
class Server:
    """A uvicorn process serving one app, pinned to the server core (by default)."""

    name: str
    port: int
    directory: Path
    target: str
    environment: dict[str, str]
    extra: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    workers: int = 1
    cores: str = SERVER_CORE

    def start(self, log_dir: Path) -> None:
        # Another process on the port would answer the readiness check in our server's place.
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((HOST, self.port))
            except OSError:
                raise SystemExit(f"port {self.port} for {self.name} is taken") from None
        command = [
            "taskset", "-c", self.cores, str(VENV_BIN / "uvicorn"), self.target,
            "--host", HOST, "--port", str(self.port), "--loop", "uvloop", "--http", "httptools",
            "--workers", str(self.workers), "--no-access-log", "--log-level", "warning",
            *self.extra,
        ]  # fmt: skip
        log = (log_dir / f"{self.name}.log").open("wb")
        self.process = subprocess.Popen(
            command, cwd=self.directory, env={**os.environ, **self.environment},
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        for _ in range(300):
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited at start-up; see {log.name}")
            try:
                with urllib.request.urlopen(f"http://{HOST}:{self.port}/items/1", timeout=1):
                    return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        raise SystemExit(f"{self.name} did not answer on port {self.port} within 30 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def settle(self, limit: float = 15.0) -> None:
        """Wait until the server has drained the requests a finished load left queued.

        wrk stops sending at its deadline, but a server behind on its work keeps serving the
        backlog; servers share one core, so the next point must not start before that ends.
        """
        pid = self.process.pid if self.process else 0
        deadline = time.perf_counter() + limit
        previous = -1
        while time.perf_counter() < deadline:
            try:
                # With --workers, the work is done by the children of uvicorn's supervisor.
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                busy = sum(_cpu_ticks(process) for process in [str(pid), *children])
            except OSError:
                return
            if busy - previous <= 1:
                return
            previous = busy
            time.sleep(0.2)

    @contextmanager
    def peak_rss(self) -> Iterator[list[float]]:
        """Sample this server's resident memory while the block runs; yields [peak MiB]."""
        peak = [0.0]
        stop = threading.Event()
        status = Path(f"/proc/{self.process.pid if self.process else 0}/status")

        def sample() -> None:
            while not stop.is_set():
                try:
                    for line in status.read_text().splitlines():
                        if line.startswith("VmRSS:"):
                            peak[0] = max(peak[0], int(line.split()[1]) / 1024)
                except OSError:
                    return
                stop.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            yield peak
        finally:
            stop.set()
            sampler.join()


def _cpu_ticks(pid: str) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks


@dataclass
class Point:
    """One wrk run: one server, one route, one connection count, one repetition."""

    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    socket_errors: int
    rss_mib: float


# --- Preparing the project and the data --------------------------------------------------


def render(work: Path) -> Path:
    """Render the working tree (uncommitted changes included) with the example on PostgreSQL."""
    snapshot = work / "template"
    shutil.copytree(
        ROOT, snapshot,
        ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", ".*_cache", "my-service"),
    )  # fmt: skip
    project = work / "project"
    copier.run_copy(
        str(snapshot), project, data={"database": "postgresql", "include_example": True},
        defaults=True, unsafe=False, quiet=True,
    )  # fmt: skip
    return project


def make_nplus1(project: Path, work: Path) -> Path:
    """A copy of the rendered project whose list route loads tags with one query per row."""
    copy = work / "nplus1"
    copy.mkdir()
    source = (project / f"{MODULE}.py").read_text()
    for old, new in NPLUS1_PATCHES:
        if old not in source:
            raise SystemExit(f"cannot build the N+1 variant: {old.strip()!r} left the module")
        source = source.replace(old, new, 1)
    (copy / f"{MODULE}.py").write_text(source)
    return copy


def settings_of(project: Path, environment: dict[str, str]) -> dict[str, str]:
    """The rendered service's settings and their defaults, as the module declares them."""
    script = (
        f"import json, {MODULE}\n"
        f"print(json.dumps({{name: str(f.default) for name, f in "
        f"{MODULE}.Settings.model_fields.items()}}))"
    )
    output = subprocess.run(
        [sys.executable, "-c", script], cwd=project, env={**os.environ, **environment},
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return dict(json.loads(output))


def create_tables(project: Path, database_url: str) -> None:
    """Create the tables as a team would: the rendered project's migrations, to head."""
    subprocess.run(
        [str(VENV_BIN / "alembic"), "upgrade", "head"], cwd=project, check=True,
        env={**os.environ, "DATABASE_URL": database_url}, stdout=subprocess.DEVNULL,
    )  # fmt: skip


async def seed(dsn: str) -> int:
    """Fill the tables deterministically; returns the number of tag links."""
    rng = random.Random(SEED)
    started = datetime(2025, 1, 1, tzinfo=UTC)
    owners = [(number, f"owner {number:04d}") for number in range(1, OWNERS + 1)]
    tags = [(number, f"tag-{number:03d}") for number in range(1, TAGS + 1)]
    items, links = [], []
    for number in range(1, ITEMS + 1):
        items.append(
            (
                number,
                f"item {number}",
                f"a seeded item, number {number}, for the benchmark",
                rng.randrange(100, 100_000),
                rng.randint(1, OWNERS),
                started + timedelta(seconds=number),
            )
        )
        for tag in rng.sample(range(1, TAGS + 1), rng.randint(0, MAX_TAGS_PER_ITEM)):
            links.append((number, tag))
    connection = await asyncpg.connect(dsn)
    try:
        await connection.copy_records_to_table("owner", records=owners, columns=["id", "name"])
        await connection.copy_records_to_table("tag", records=tags, columns=["id", "name"])
        await connection.copy_records_to_table(
            "item",
            records=items,
            columns=["id", "name", "description", "price_cents", "owner_id", "created_at"],
        )
        await connection.copy_records_to_table(
            "itemtaglink", records=links, columns=["item_id", "tag_id"]
        )
        for table in ("owner", "tag", "item"):
            await connection.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"
            )
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()
    return len(links)


async def postgres(dsn: str, sql: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


# --- Measuring ----------------------------------------------------------------------------


def write_scripts(work: Path) -> dict[str, Path]:
    """The wrk Lua scripts, one per route, each seeded per thread."""
    rng = random.Random(SEED)
    values = {
        "seed": SEED,
        "page": PAGE,
        "items": ITEMS,
        "tags": TAGS,
        "owners": OWNERS,
        "max_tags": MAX_TAGS_PER_ITEM,
        "batch_rows": BATCH_ROWS,
        "hot": ", ".join(str(number) for number in rng.sample(range(1, ITEMS + 1), HOT_SET)),
    }
    scripts = {}
    for route, body in LUA_ROUTES.items():
        path = work / f"{route}.lua"
        path.write_text(LUA_COMMON % values + body % values)
        scripts[route] = path
    return scripts


def wrk(
    server: Server, script: Path, connections: int, seconds: float, client_cores: str = CLIENT_CORE
) -> Point:
    """One bounded wrk run against ``server``, with its peak memory."""
    command = [
        "taskset", "-c", client_cores, "wrk", "-t1", f"-c{connections}", f"-d{round(seconds)}s",
        "--timeout", f"{CLIENT_TIMEOUT:.0f}s", "-s", str(script), f"http://{HOST}:{server.port}",
    ]  # fmt: skip
    with server.peak_rss() as peak:
        output = subprocess.run(
            command, capture_output=True, text=True, check=True, timeout=seconds + 30
        ).stdout
    server.settle()
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    return Point(
        rps=result["requests"] / (result["microseconds"] / 1e6),
        p50_ms=result["p50"] / 1000,
        p99_ms=result["p99"] / 1000,
        non2xx=result["non2xx"],
        socket_errors=result["socket_errors"] + result["timeouts"],
        rss_mib=peak[0],
    )


def queries_per_request(server: Server, route: str) -> float:
    """The median statement count the route reports in ``Server-Timing``, over a few calls."""
    rng = random.Random(SEED)
    counts = []
    for _ in range(9):
        if route == "list":
            path, body = f"/items?limit={PAGE}&after={rng.randrange(ITEMS - PAGE)}", None
        elif route in ("get", "get-hot"):
            path, body = f"/items/{rng.randint(1, ITEMS)}", None
        elif route == "update":
            tag_ids = _create_body(rng, "")["tag_ids"]
            path, body = f"/items/{rng.randint(1, ITEMS)}", {"price_cents": 1, "tag_ids": tag_ids}
        elif route == "batch":
            rows = [_create_body(rng, "bench item") for _ in range(BATCH_ROWS)]
            path, body = "/items/batch", {"items": rows}
        else:
            path, body = "/items", _create_body(rng, "bench item")
        request = urllib.request.Request(
            f"http://{HOST}:{server.port}{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="PATCH" if route == "update" else None,
        )
        with urllib.request.urlopen(request, timeout=CLIENT_TIMEOUT) as response:
            counts.append(_queries(response.headers.get("server-timing", "")))
    known = [count for count in counts if count is not None]
    return statistics.median(known) if known else float("nan")


def _queries(server_timing: str) -> int | None:
    match = re.search(r'desc="(\d+) quer(?:y|ies)"', server_timing)
    return int(match.group(1)) if match else None


def _create_body(rng: random.Random, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": "made by the benchmark",
        "price_cents": rng.randrange(100_000),
        "owner_id": rng.randint(1, OWNERS),
        "tag_ids": rng.sample(range(1, TAGS + 1), rng.randint(0, MAX_TAGS_PER_ITEM)),
    }


@dataclass
class Matrix:
    """Every wrk point: (route, connections, server) -> one Point per repetition."""

    points: dict[tuple[str, int, str], list[Point]] = field(default_factory=dict)
    queries: dict[tuple[str, str], float] = field(default_factory=dict)

    def median(self, route: str, connections: int, server: str, metric: str) -> float:
        return statistics.median(
            getattr(point, metric) for point in self.points[route, connections, server]
        )

    def ratio(self, route: str, connections: int, ours: str, other: str) -> float:
        """The median over repetitions of ours / other, each repetition paired."""
        pairs = zip(
            self.points[route, connections, ours],
            self.points[route, connections, other],
            strict=True,
        )
        return statistics.median(mine.rps / theirs.rps for mine, theirs in pairs)


def run_matrix(
    routes: dict[str, list[Server]],
    scripts: dict[str, Path],
    connection_counts: list[int],
    repeats: int,
    seconds: float,
) -> Matrix:
    matrix = Matrix()
    for route, servers in routes.items():
        for server in servers:
            matrix.queries[route, server.name] = queries_per_request(server, route)
            wrk(
                server, scripts[route], connection_counts[0], 2
            )  # warm caches and the JIT-free paths
        for connections in connection_counts:
            for repetition in range(repeats):
                for server in servers:
                    point = wrk(server, scripts[route], connections, seconds)
                    matrix.points.setdefault((route, connections, server.name), []).append(point)
                    print(
                        f"  {route:8} c={connections:<3} rep {repetition + 1}  {server.name:9} "
                        f"{point.rps:8.0f} req/s  p99 {point.p99_ms:7.1f} ms  "
                        f"non-2xx {point.non2xx}",
                        flush=True,
                    )
    return matrix


@dataclass
class LoadRun:
    """One closed-loop run of ``loadclient``: admitted, shed and lost requests."""

    seconds: float
    responses: list[Response]
    rss_mib: float

    def _of(self, predicate: Callable[[int], bool]) -> list[Response]:
        return [response for response in self.responses if predicate(response.status)]

    @property
    def goodput(self) -> float:
        return len(self._of(lambda status: 200 <= status < 300)) / self.seconds

    @property
    def p99_admitted_ms(self) -> float:
        return _percentile([r.seconds for r in self._of(lambda s: 200 <= s < 300)], 99) * 1000

    @property
    def shed(self) -> int:
        return len(self._of(lambda status: status == 503))

    @property
    def p50_shed_ms(self) -> float:
        return _percentile([r.seconds for r in self._of(lambda s: s == 503)], 50) * 1000

    @property
    def timeouts(self) -> int:
        return len(self._of(lambda status: status == TIMEOUT))

    @property
    def other_failures(self) -> int:
        return len(self._of(lambda status: status == BROKEN or (status >= 300 and status != 503)))


def _percentile(values: list[float], percent: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * percent / 100))]


def load(server: Server, clients: int, seconds: float) -> LoadRun:
    """``clients`` closed-loop clients on the list route for ``seconds``."""
    rng = random.Random(SEED + clients)

    def next_request(_: int) -> tuple[str, str, object]:
        return "GET", f"/items?limit={PAGE}&after={rng.randrange(ITEMS - PAGE)}", None

    with server.peak_rss() as peak, asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        responses = runner.run(
            closed_loop(HOST, server.port, clients, seconds, CLIENT_TIMEOUT, next_request)
        )
    server.settle()
    return LoadRun(seconds, responses, peak[0])


@dataclass
class WriterCheck:
    """The parallel writers' outcome, and what the table holds afterwards."""

    acknowledged: int = 0
    read_back: int = 0
    shed: int = 0
    timeouts: int = 0
    failures: list[str] = field(default_factory=list)
    rows: int = 0
    missing: int = 0
    duplicated: int = 0
    unacknowledged_rows: int = 0
    unknown_outcomes: int = 0


def parallel_writers(server: Server, dsn: str, clients: int, seconds: float) -> WriterCheck:
    """``clients`` workers each looping create-with-tags then get; then count the rows."""
    check = WriterCheck()
    prefix = f"writer-{os.getpid()}-{int(time.time())}"
    acknowledged: dict[str, list[int]] = {}
    unknown: set[str] = set()

    async def worker(number: int, deadline: float) -> None:
        rng = random.Random(SEED + number)
        connection = Connection(HOST, server.port, CLIENT_TIMEOUT)
        sequence = 0
        try:
            while time.perf_counter() < deadline:
                sequence += 1
                name = f"{prefix}-{number}-{sequence}"
                body = _create_body(rng, name)
                created = await connection.request("POST", "/items", body)
                if created.status != 201:
                    _tally(check, created, "POST /items")
                    if created.status in (TIMEOUT, BROKEN):
                        unknown.add(name)
                    continue
                item: Any = created.json()
                acknowledged[name] = sorted(set(body["tag_ids"]))
                check.acknowledged += 1
                fetched = await connection.request("GET", f"/items/{item['id']}")
                if fetched.status != 200:
                    _tally(check, fetched, "GET /items/{id}")
                    continue
                got: Any = fetched.json()
                tags = sorted(tag["id"] for tag in got["tags"])
                if got["name"] != name or tags != acknowledged[name]:
                    check.failures.append(f"GET /items/{item['id']} returned {got}")
                else:
                    check.read_back += 1
        finally:
            connection.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run_workers(clients, seconds, worker))
        rows = runner.run(_rows_named(dsn, prefix))
    check.rows = sum(count for count, _ in rows.values())
    check.duplicated = sum(1 for count, _ in rows.values() if count > 1)
    check.missing = sum(1 for name in acknowledged if name not in rows)
    check.missing += sum(
        1 for name, (_, tags) in rows.items() if name in acknowledged and tags != acknowledged[name]
    )
    extra = set(rows) - set(acknowledged)
    check.unacknowledged_rows = len(extra)
    check.unknown_outcomes = len(unknown)
    if extra - unknown:
        check.failures.append(f"{len(extra - unknown)} rows no client was told about")
    return check


def _tally(check: WriterCheck, response: Response, what: str) -> None:
    if response.status == 503:
        check.shed += 1
    elif response.status == TIMEOUT:
        check.timeouts += 1
    else:
        detail = response.body[:200].decode(errors="replace")
        check.failures.append(f"{what}: status {response.status} {detail}")


async def _rows_named(dsn: str, prefix: str) -> dict[str, tuple[int, list[int]]]:
    connection = await asyncpg.connect(dsn)
    try:
        records = await connection.fetch(
            """
            SELECT item.name, count(DISTINCT item.id) AS copies,
                   coalesce(array_agg(DISTINCT itemtaglink.tag_id)
                            FILTER (WHERE itemtaglink.tag_id IS NOT NULL), '{}') AS tags
            FROM item LEFT JOIN itemtaglink ON itemtaglink.item_id = item.id
            WHERE item.name LIKE $1 GROUP BY item.name
            """,
            prefix + "-%",
        )
    finally:
        await connection.close()
    return {record["name"]: (record["copies"], sorted(record["tags"])) for record in records}


# --- Reporting ----------------------------------------------------------------------------


def report_matrix(
    matrix: Matrix, routes: dict[str, list[Server]], connection_counts: list[int]
) -> list[str]:
    labels = {
        "list": f"GET /items?limit={PAGE} (owner + tags)",
        "get": "GET /items/{id} (random ids)",
        "get-hot": "GET /items/{id} (hot set)",
        "create": "POST /items (with tags)",
        "update": "PATCH /items/{id} (with tags)",
        "batch": f"POST /items/batch ({BATCH_ROWS} rows with tags)",
    }
    lines = [
        _row(
            "route",
            "server",
            "conns",
            "req/s",
            "p50 ms",
            "p99 ms",
            "non-2xx",
            "queries/req",
            "peak RSS MiB",
            "ours / this",
        ),
        _row("---", "---", "---", *["---:"] * 7),
    ]
    for route, servers in routes.items():
        for connections in connection_counts:
            for server in servers:
                key = (route, connections, server.name)
                runs = matrix.points[key]
                ratio = (
                    ""
                    if server.name == "ours"
                    else f"{matrix.ratio(route, connections, 'ours', server.name):.2f}x"
                )
                lines.append(
                    _row(
                        labels[route],
                        server.name,
                        connections,
                        f"{matrix.median(*key, 'rps'):,.0f}",
                        f"{matrix.median(*key, 'p50_ms'):.1f}",
                        f"{matrix.median(*key, 'p99_ms'):.1f}",
                        sum(point.non2xx + point.socket_errors for point in runs),
                        f"{matrix.queries[route, server.name]:g}",
                        f"{max(point.rss_mib for point in runs):.0f}",
                        ratio,
                    )
                )
    return lines


def batch_rows_ratio(matrix: Matrix, connections: int) -> float:
    """Rows a second created by batches over rows a second created one per request."""
    batches = matrix.median("batch", connections, "ours", "rps") * BATCH_ROWS
    return batches / matrix.median("create", connections, "ours", "rps")


def report_rows(matrix: Matrix, connection_counts: list[int]) -> list[str]:
    lines = [
        "| creates | conns | rows/s | batch / single |",
        "| --- | ---: | ---: | ---: |",
    ]
    for connections in connection_counts:
        single = matrix.median("create", connections, "ours", "rps")
        lines.append(_row("POST /items, one row a request", connections, f"{single:,.0f}", ""))
        lines.append(
            _row(
                f"POST /items/batch, {BATCH_ROWS} rows a request",
                connections,
                f"{matrix.median('batch', connections, 'ours', 'rps') * BATCH_ROWS:,.0f}",
                f"{batch_rows_ratio(matrix, connections):.1f}x",
            )
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5, help="length of each wrk point")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of each point")
    parser.add_argument("--connections", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--overload-seconds", type=float, default=8)
    parser.add_argument("--writers-seconds", type=float, default=8)
    parser.add_argument(
        "--invalidations", type=int, default=200, help="samples of the two-instance latency"
    )
    parser.add_argument("--output", type=Path, help="also write the tables (Markdown) here")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL URL whose user may create databases",
    )
    args = parser.parse_args()
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    began = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="sqlmodel-starter-bench-"))
    database = f"bench_{os.getpid()}"
    dsn = f"{args.postgres.rsplit('/', 1)[0]}/{database}"
    database_url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
    servers: list[Server] = []
    try:
        print(f"rendering the template into {work}", flush=True)
        project = render(work)
        nplus1 = make_nplus1(project, work)
        asyncio.run(postgres(args.postgres, f'CREATE DATABASE "{database}"'))
        create_tables(project, database_url)
        links = asyncio.run(seed(dsn))
        print(f"seeded {OWNERS} owners, {TAGS} tags, {ITEMS} items, {links} tag links", flush=True)

        base = {
            "DATABASE_URL": database_url,
            "CREATE_TABLES": "false",
            "DATABASE_POOL_SIZE": str(POOL_SIZE),
        }
        settings = settings_of(project, base)
        has_guard = "guard_enabled" in settings
        has_cache = "cache_ttl_seconds" in settings
        capacity = int(settings.get("guard_max_in_flight", POOL_SIZE)) if has_guard else POOL_SIZE
        waiting = (
            int(settings.get("guard_max_waiting", capacity // 2)) if has_guard else capacity // 2
        )
        # For throughput, the guard's line holds every connection wrk opens: the route is
        # measured, not the guard. The overload scenario runs the shipped defaults.
        throughput = {
            **base,
            "GUARD_MAX_WAITING": str(max(args.connections)),
            "GUARD_WAIT_TIMEOUT": "10",
        }
        ours = Server("ours", 8101, project, f"{MODULE}:app", throughput if has_guard else base)
        guarded = Server("ours", 8105, project, f"{MODULE}:app", base)
        naive = Server("n+1", 8102, nplus1, f"{MODULE}:app", throughput if has_guard else base)
        ceiling = Server("ceiling", 8103, BENCHMARKS, "ceiling:app", base)
        servers = [ours, naive, ceiling]
        for server in servers:
            server.start(work)

        scripts = write_scripts(work)
        routes = {
            "list": [ours, ceiling, naive],
            "get": [ours, ceiling],
            "get-hot": [ours],
            "create": [ours, ceiling],
            "update": [ours, ceiling],
            "batch": [ours],
        }
        print("throughput and latency (wrk)", flush=True)
        matrix = run_matrix(routes, scripts, args.connections, args.repeats, args.seconds)
        naive.stop()
        ceiling.stop()
        ours.stop()
        guarded.start(work)
        servers.append(guarded)
        ours = guarded

        print("overload", flush=True)
        limited = Server(
            "ours, guard off, --limit-concurrency", 8104, project, f"{MODULE}:app",
            {**base, "GUARD_ENABLED": "false"},
            ["--limit-concurrency", str(capacity + waiting)],
        )  # fmt: skip
        limited.start(work)
        servers.append(limited)
        overload: dict[str, list[tuple[LoadRun, LoadRun]]] = {ours.name: [], limited.name: []}
        for repetition in range(args.repeats):
            for server in (ours, limited):
                at_capacity = load(server, capacity, args.overload_seconds * 0.6)
                overloaded = load(server, capacity * 10, args.overload_seconds)
                overload[server.name].append((at_capacity, overloaded))
                print(
                    f"  rep {repetition + 1} {server.name:38} capacity {at_capacity.goodput:6.0f}/s"
                    f"  overload goodput {overloaded.goodput:6.0f}/s  503s {overloaded.shed}"
                    f"  timeouts {overloaded.timeouts}",
                    flush=True,
                )
        limited.stop()

        print("parallel writers", flush=True)
        writers = parallel_writers(ours, dsn, 128, args.writers_seconds)
        ours.stop()

        print("several processes", flush=True)
        several = several_processes(
            project, work, base, throughput, scripts, dsn, matrix, args, servers
        )

        lines = [
            f"Data: {OWNERS} owners, {TAGS} tags, {ITEMS} items, {links} tag links (seed {SEED}). "
            f"{args.repeats} repetitions of {args.seconds:g} s per point; medians; "
            "ratios are medians of per-repetition ratios.",
            "",
            *report_matrix(matrix, routes, args.connections),
            "",
            *report_rows(matrix, args.connections),
            "",
            "`get-hot` is " + ("served by the module's cache." if has_cache else
            "the same uncached route on a hot set of 100 ids: this module has no cache yet."),
            "",
            *report_overload(overload, capacity, waiting, has_guard, ours.name),
            "",
            *report_writers(writers, args.writers_seconds),
            "",
            *several,
            "",
            *report_targets(
                matrix, overload, writers, args.connections, has_cache, has_guard,
                ours.name, limited.name,
            ),
            "",
            f"Benchmark took {(time.perf_counter() - began) / 60:.1f} minutes.",
        ]  # fmt: skip
        text = "\n".join(lines)
        print("\n" + text)
        if args.output:
            args.output.write_text(text + "\n")
    finally:
        for server in servers:
            server.stop()
        asyncio.run(postgres(args.postgres, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        shutil.rmtree(work, ignore_errors=True)


def several_processes(
    project: Path,
    work: Path,
    base: dict[str, str],
    throughput: dict[str, str],
    scripts: dict[str, Path],
    dsn: str,
    matrix: Matrix,
    args: argparse.Namespace,
    servers: list[Server],
) -> list[str]:
    """Two workers against the ceiling with two, the invalidation latency between two
    instances, and write throughput with NOTIFY on and off; returns the report's lines."""
    connections = max(args.connections)
    both = processes.BOTH_CORES
    target = f"{MODULE}:app"
    ours = Server("ours", 8611, project, target, throughput, workers=2, cores=both)
    ceiling = Server("ceiling", 8612, BENCHMARKS, "ceiling:app", base, workers=2, cores=both)
    # The NOTIFY pair starts fresh, side by side: reusing the server the points above had
    # warmed made NOTIFY look 1.3-1.5x faster, which two fresh servers did not confirm.
    notifying = Server("ours", 8616, project, target, throughput, workers=2, cores=both)
    quiet_env = {**throughput, "CACHE_NOTIFY": "false"}
    quiet = Server("ours, no NOTIFY", 8613, project, target, quiet_env, workers=2, cores=both)
    for server in (ours, ceiling):
        server.start(work)
        servers.append(server)
    workers = processes.two_workers(
        ours, ceiling, scripts, wrk, connections, args.repeats, args.seconds
    )
    ceiling.stop()
    ours.stop()
    for server in (notifying, quiet):
        server.start(work)
        servers.append(server)
    service_writes = processes.Paired()
    for server in (notifying, quiet):
        wrk(server, scripts["create"], connections, 2, client_cores=both)
    for repetition in range(args.repeats):
        turns = [(notifying, service_writes.ours), (quiet, service_writes.theirs)]
        # Each repetition swaps who goes first: the table grows with every create.
        for server, runs in turns if repetition % 2 == 0 else turns[::-1]:
            point = wrk(server, scripts["create"], connections, args.seconds, client_cores=both)
            runs.append(point.rps)
            print(
                f"  create 2 workers c={connections} rep {repetition + 1} {server.name:20} "
                f"{point.rps:8.0f} req/s  non-2xx {point.non2xx}",
                flush=True,
            )
    quiet.stop()
    notifying.stop()

    writer = Server("instance A", 8614, project, target, base, cores=both)
    reader = Server("instance B", 8615, project, target, base, cores=both)
    for server in (writer, reader):
        server.start(work)
        servers.append(server)
    latencies = processes.invalidation_latency(
        HOST, writer.port, reader.port, ITEMS, args.invalidations, SEED
    )
    print(
        f"  invalidation: p50 {processes.percentile(latencies.from_ack, 50) * 1000:.2f} ms "
        f"p99 {processes.percentile(latencies.from_ack, 99) * 1000:.2f} ms after the write",
        flush=True,
    )
    writer.stop()
    reader.stop()

    # One connection alone, then 32 at once: the lock shows only when commits contend.
    database_writes = {
        clients: processes.raw_commits(dsn, clients, args.seconds, args.repeats)
        for clients in (1, 32)
    }
    one_worker = {
        route: matrix.ratio(route, connections, "ours", "ceiling") for route in ("list", "get")
    }
    return processes.report(
        workers, one_worker, latencies, service_writes, database_writes, connections
    )


def report_overload(
    overload: dict[str, list[tuple[LoadRun, LoadRun]]],
    capacity: int,
    waiting: int,
    has_guard: bool,
    ours: str,
) -> list[str]:
    guard = (
        f"the service's overload guard ({capacity} in flight, {waiting} waiting)"
        if has_guard
        else "NO overload guard: this module does not have one yet, so `ours` is unprotected"
    )
    lines = [
        f"Overload: the list route, closed loop, {capacity} clients (capacity) then "
        f"{capacity * 10} (ten times), {CLIENT_TIMEOUT:g} s client timeout, no retries. "
        f"`{ours}` runs with {guard}; the baseline has the guard off and uvicorn's "
        f"`--limit-concurrency {capacity + waiting}`.",
        "",
        _row(
            "server",
            "req/s at capacity",
            "p99 ms at capacity",
            "RSS MiB at capacity",
            "goodput under overload",
            "goodput / capacity",
            "p99 admitted ms",
            "503s",
            "median 503 ms",
            "client timeouts",
            "other failures",
            "peak RSS MiB",
        ),
        _row("---", *["---:"] * 11),
    ]
    for name, runs in overload.items():
        capacity_runs = [run[0] for run in runs]
        overloaded = [run[1] for run in runs]
        lines.append(
            _row(
                name,
                f"{_median(capacity_runs, lambda run: run.goodput):,.0f}",
                f"{_median(capacity_runs, lambda run: run.p99_admitted_ms):.1f}",
                f"{_median(capacity_runs, lambda run: run.rss_mib):.0f}",
                f"{_median(overloaded, lambda run: run.goodput):,.0f}",
                f"{statistics.median(o.goodput / c.goodput for c, o in runs):.2f}",
                f"{_median(overloaded, lambda run: run.p99_admitted_ms):.1f}",
                f"{_median(overloaded, lambda run: run.shed):,.0f}",
                f"{_median(overloaded, lambda run: run.p50_shed_ms):.1f}",
                f"{_median(overloaded, lambda run: run.timeouts):,.0f}",
                f"{_median(overloaded, lambda run: run.other_failures):,.0f}",
                f"{_median(overloaded, lambda run: run.rss_mib):.0f}",
            )
        )
    return lines


def _median(runs: list[LoadRun], metric: Callable[[LoadRun], float]) -> float:
    return statistics.median(metric(run) for run in runs)


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def report_writers(check: WriterCheck, seconds: float) -> list[str]:
    return [
        f"Parallel writers: 128 clients for {seconds:g} s, each looping POST /items (with tags) "
        "then GET /items/{id}; afterwards the table is compared with what was acknowledged.",
        "",
        _row(
            "acknowledged creates",
            "read back intact",
            "503s",
            "client timeouts",
            "other failures",
            "rows found",
            "acknowledged but missing or wrong",
            "duplicated",
            "rows from unanswered creates",
        ),
        _row(*["---:"] * 9),
        f"| {check.acknowledged:,} | {check.read_back:,} | {check.shed:,} | {check.timeouts:,} "
        f"| {len(check.failures):,} | {check.rows:,} | {check.missing} | {check.duplicated} "
        f"| {check.unacknowledged_rows} of {check.unknown_outcomes} |",
        *(f"- failure: {failure}" for failure in check.failures[:5]),
    ]


def report_targets(
    matrix: Matrix,
    overload: dict[str, list[tuple[LoadRun, LoadRun]]],
    writers: WriterCheck,
    connection_counts: list[int],
    has_cache: bool,
    has_guard: bool,
    ours: str,
    limited: str,
) -> list[str]:
    lines = ["| target | measured | met |", "| --- | --- | --- |"]

    def target(name: str, measured: str, met: bool) -> None:
        lines.append(f"| {name} | {measured} | {'yes' if met else 'NO'} |")

    for connections in connection_counts:
        list_ceiling = matrix.ratio("list", connections, "ours", "ceiling")
        list_naive = matrix.ratio("list", connections, "ours", "n+1")
        get_ceiling = matrix.ratio("get", connections, "ours", "ceiling")
        hot = matrix.median("get-hot", connections, "ours", "rps") / matrix.median(
            "get", connections, "ours", "rps"
        )
        wanted = 0.45 if connections <= 32 else 0.4
        target(
            f"list >= {wanted}x ceiling (c={connections})",
            f"{list_ceiling:.2f}x",
            list_ceiling >= wanted,
        )
        target(f"list >= 30x N+1 (c={connections})", f"{list_naive:.1f}x", list_naive >= 30)
        target(
            f"get-one, uncached, >= 0.35x ceiling (c={connections})",
            f"{get_ceiling:.2f}x",
            get_ceiling >= 0.35,
        )
        target(
            f"cached get-one >= 5x uncached (c={connections})",
            f"{hot:.2f}x" + ("" if has_cache else " (no cache in the module yet)"),
            hot >= 5,
        )  # fmt: skip
        create_ceiling = matrix.ratio("create", connections, "ours", "ceiling")
        update_ceiling = matrix.ratio("update", connections, "ours", "ceiling")
        target(
            f"POST with tags >= 0.4x ceiling (c={connections})",
            f"{create_ceiling:.2f}x",
            create_ceiling >= 0.4,
        )
        target(
            f"PATCH with tags >= 0.4x ceiling (c={connections})",
            f"{update_ceiling:.2f}x",
            update_ceiling >= 0.4,
        )
        rows = batch_rows_ratio(matrix, connections)
        target(f"batch rows/s >= 10x single creates' (c={connections})", f"{rows:.1f}x", rows >= 10)
    guarded = overload[ours]
    baseline = overload[limited]
    timeouts = statistics.median(run[1].timeouts for run in guarded)
    goodput = statistics.median(run[1].goodput / run[0].goodput for run in guarded)
    p99 = statistics.median(run[1].p99_admitted_ms / run[0].p99_admitted_ms for run in guarded)
    shed = statistics.median(run[1].p50_shed_ms for run in guarded)
    rss = statistics.median(run[1].rss_mib / run[0].rss_mib for run in guarded)
    base_goodput = statistics.median(run[1].goodput / run[0].goodput for run in baseline)
    base_shed = statistics.median(run[1].p50_shed_ms for run in baseline)
    note = "" if has_guard else " (no guard yet)"
    target("overload: zero client timeouts" + note, f"{timeouts:.0f}", timeouts == 0)
    target("overload: goodput >= 90% of capacity" + note, f"{goodput:.0%}", goodput >= 0.9)
    target("overload: p99 admitted <= 2x capacity p99" + note, f"{p99:.1f}x", p99 <= 2)
    target("overload: median 503 < 5 ms" + note, f"{shed:.1f} ms", shed < 5)
    target("overload: peak RSS <= 1.5x capacity" + note, f"{rss:.2f}x", rss <= 1.5)
    target(
        "overload: goodput at least --limit-concurrency's" + note,
        f"{goodput:.0%} vs {base_goodput:.0%}",
        goodput >= base_goodput,
    )
    target(
        "overload: median 503 at most 2x --limit-concurrency's" + note,
        f"{shed:.1f} ms vs {base_shed:.1f} ms",
        shed <= 2 * base_shed,
    )
    target(
        "parallel writers lose nothing, duplicate nothing",
        f"{writers.missing} missing, {writers.duplicated} duplicated, "
        f"{len(writers.failures)} failures",
        writers.missing == 0 and writers.duplicated == 0 and not writers.failures,
    )
    return lines


if __name__ == "__main__":
    main()
