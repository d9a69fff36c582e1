"""wrk, driven: one bounded run of a route's Lua script against a server, as a ``Point``.

The scripts are in ``wrk/``, one per route (``list.lua``, ``get.lua``, ``get-hot.lua``,
``create.lua``, ``update.lua``, ``batch.lua``), each built on ``point.lua`` (per-thread
seeds, the parameters, the RESULT line) and, for the writes, ``items.lua`` (random bodies).
The driver puts that folder on ``LUA_PATH`` and passes the data's shape after ``--``, so
that the scripts and the seeded tables cannot disagree.
"""

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import tokens
from dataset import BATCH_ROWS, ITEMS, MAX_TAGS_PER_ITEM, OWNERS, PAGE, SEED, TAGS, hot_ids
from loadclient import CLIENT_TIMEOUT
from servers import CLIENT_CORE, HOST, Server

SCRIPTS = Path(__file__).resolve().parent / "wrk"


@dataclass
class Point:
    """One wrk run: one server, one route, one connection count, one repetition."""

    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    socket_errors: int
    rss_mib: float
    cpu_ms: float  # the server's CPU time per request answered, its backlog's included


def wrk(
    server: Server, route: str, connections: int, seconds: float, client_cores: str = CLIENT_CORE
) -> Point:
    """One bounded wrk run of ``route``'s script against ``server``, with its peak memory.

    The server's clients' headers (the token) go on ``-H``; a run whose answers were mostly
    not 2xx stops the benchmark.
    """
    headers = [f"--header={name}: {value}" for name, value in server.headers().items()]
    command = [
        "taskset", "-c", client_cores, "wrk", "-t1", f"-c{connections}", f"-d{round(seconds)}s",
        "--timeout", f"{CLIENT_TIMEOUT:.0f}s", *headers, "-s", str(SCRIPTS / f"{route}.lua"),
        f"http://{HOST}:{server.port}", "--", *script_parameters(),
    ]  # fmt: skip
    environment = {**os.environ, "LUA_PATH": f"{SCRIPTS}/?.lua;;"}
    ticks = server.cpu_ticks()
    with server.peak_rss() as peak:
        output = subprocess.run(
            command, capture_output=True, text=True, check=True, timeout=seconds + 30,
            env=environment,
        ).stdout  # fmt: skip
    server.settle()
    cpu_seconds = (server.cpu_ticks() - ticks) / os.sysconf("SC_CLK_TCK")
    point, requests = _point(output, peak[0], cpu_seconds)
    tokens.check_not_refused(point.non2xx, requests, f"wrk {route} on {server.name}")
    return point


def script_parameters() -> list[str]:
    """What the scripts read from ``params``: the seed and the shape of the seeded data."""
    values = {
        "seed": SEED,
        "page": PAGE,
        "items": ITEMS,
        "tags": TAGS,
        "owners": OWNERS,
        "max_tags": MAX_TAGS_PER_ITEM,
        "batch_rows": BATCH_ROWS,
        "hot": ",".join(str(number) for number in hot_ids()),
    }
    return [f"{name}={value}" for name, value in values.items()]


def _point(output: str, rss_mib: float, cpu_seconds: float) -> tuple[Point, int]:
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    point = Point(
        rps=result["requests"] / (result["microseconds"] / 1e6),
        p50_ms=result["p50"] / 1000,
        p99_ms=result["p99"] / 1000,
        non2xx=result["non2xx"],
        socket_errors=result["socket_errors"] + result["timeouts"],
        rss_mib=rss_mib,
        cpu_ms=cpu_seconds * 1000 / max(result["requests"], 1),
    )
    return point, result["requests"]
