"""Throughput and latency with wrk: every route against its servers, taking turns.

For each route, each server is asked a few times how many statements the route runs (its
``Server-Timing``), then warmed with a short wrk run; then, for each connection count and
repetition, the servers take turns point by point, so that a drift of the shared machine
falls on all of them alike.
"""

import json
import random
import re
import statistics
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from dataset import BATCH_ROWS, ITEMS, SEED, list_path, new_item
from loadclient import CLIENT_TIMEOUT
from servers import HOST, Server
from wrk_driver import Point, wrk


@dataclass
class Matrix:
    """Every wrk point: (route, connections, server) -> one Point per repetition."""

    points: dict[tuple[str, int, str], list[Point]] = field(default_factory=dict)
    queries: dict[tuple[str, str], float] = field(default_factory=dict)

    def median(self, route: str, connections: int, server: str, metric: str) -> float:
        """The median over repetitions of one ``Point`` field."""
        values = [getattr(point, metric) for point in self.points[route, connections, server]]
        return float(statistics.median(values))

    def ratio(
        self, route: str, connections: int, ours: str, other: str, metric: str = "rps"
    ) -> float:
        """The median over repetitions of ours / other (req/s, or another ``Point`` field),
        each repetition paired.
        """
        pairs = zip(
            self.points[route, connections, ours],
            self.points[route, connections, other],
            strict=True,
        )
        return statistics.median(
            getattr(mine, metric) / getattr(theirs, metric) for mine, theirs in pairs
        )

    def batch_rows_ratio(self, connections: int) -> float:
        """Rows a second created by batches over rows a second created one per request."""
        batches = self.median("batch", connections, "ours", "rps") * BATCH_ROWS
        return batches / self.median("create", connections, "ours", "rps")


def run_matrix(
    routes: dict[str, list[Server]], connection_counts: list[int], repeats: int, seconds: float
) -> Matrix:
    """Measure each route on its servers at each connection count, ``repeats`` times."""
    matrix = Matrix()
    total = sum(len(servers) for servers in routes.values()) * len(connection_counts) * repeats
    started = time.perf_counter()
    for route, servers in routes.items():
        for server in servers:
            matrix.queries[route, server.name] = queries_per_request(server, route)
            wrk(server, route, connection_counts[0], 2)  # warm caches and the JIT-free paths
        for connections in connection_counts:
            for repetition in range(repeats):
                for server in servers:
                    point = wrk(server, route, connections, seconds)
                    matrix.points.setdefault((route, connections, server.name), []).append(point)
                    done = sum(len(points) for points in matrix.points.values())
                    left = (time.perf_counter() - started) / done * (total - done) / 60
                    print(
                        f"  {route:8} c={connections:<3} rep {repetition + 1}  {server.name:9} "
                        f"{point.rps:8.0f} req/s  p99 {point.p99_ms:7.1f} ms  "
                        f"non-2xx {point.non2xx}  CPU {point.cpu_ms:.2f} ms/req  "
                        f"[{done}/{total}, about {left:.1f} min left of these]",
                        flush=True,
                    )
    return matrix


def queries_per_request(server: Server, route: str) -> float:
    """The median statement count the route reports in ``Server-Timing``, over a few calls."""
    rng = random.Random(SEED)
    counts = []
    for _ in range(9):
        path, body = _sample_request(route, rng)
        request = urllib.request.Request(
            f"http://{HOST}:{server.port}{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", **server.headers()},
            method="PATCH" if route == "update" else None,
        )
        with urllib.request.urlopen(request, timeout=CLIENT_TIMEOUT) as response:
            counts.append(_queries(response.headers.get("server-timing", "")))
    known = [count for count in counts if count is not None]
    return float(statistics.median(known)) if known else float("nan")


def _sample_request(route: str, rng: random.Random) -> tuple[str, Any]:
    # The same kind of request as the route's wrk script sends: a path and a JSON body.
    if route == "list":
        return list_path(rng), None
    if route in ("get", "get-hot"):
        return f"/items/{rng.randint(1, ITEMS)}", None
    if route == "update":
        tag_ids = new_item(rng, "")["tag_ids"]
        return f"/items/{rng.randint(1, ITEMS)}", {"price_cents": 1, "tag_ids": tag_ids}
    if route == "batch":
        return "/items/batch", {"items": [new_item(rng, "bench item") for _ in range(BATCH_ROWS)]}
    return "/items", new_item(rng, "bench item")


def _queries(server_timing: str) -> int | None:
    match = re.search(r'desc="(\d+) quer(?:y|ies)"', server_timing)
    return int(match.group(1)) if match else None
