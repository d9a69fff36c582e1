"""The benchmark's report: the Markdown tables ``bench.py`` prints and ``--output`` writes.

RESULTS.md quotes these tables run after run, so their columns and their wording stay put:
a change here is a change to what readers compare across releases.
"""

import argparse
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from dataset import BATCH_ROWS, ITEMS, OWNERS, PAGE, SEED, TAGS
from loadclient import CLIENT_TIMEOUT, percentile
from overload_tenfold import LoadRun, Overload
from parallel_writers import WRITERS, WriterCheck
from processes import SeveralProcesses
from testbed import OPEN_READS, Service
from throughput import Matrix

# A target: what it asks, what was measured, and whether that meets it.
Target = tuple[str, str, bool]


@dataclass
class Results:
    """Everything one run measured, and how it was run."""

    tag_links: int
    repeats: int
    seconds: float
    connection_counts: list[int]
    writers_seconds: float
    service: Service
    routes: dict[str, list[str]]  # route -> the names of the servers it was measured on
    matrix: Matrix
    overload: Overload
    guarded: str  # the server names in ``overload``
    limited: str
    writers: WriterCheck
    several: SeveralProcesses
    minutes: float


def document(results: Results) -> str:
    """The whole report, in Markdown."""
    has_cache = results.service.has_cache
    sections = [
        [_data_line(results.tag_links, results.repeats, results.seconds)],
        matrix_table(results.matrix, results.routes, results.connection_counts),
        rows_table(results.matrix, results.connection_counts),
        [_hot_set_note(has_cache)],
        overload_table(results.overload, results.service, results.guarded),
        writers_table(results.writers, results.writers_seconds),
        several_processes_tables(results.several, results.matrix),
        access_table(results.matrix, results.connection_counts),
        targets_table(
            [
                *route_targets(results.matrix, results.connection_counts, has_cache),
                *access_targets(results.matrix, results.connection_counts),
                *overload_targets(
                    results.overload, results.service, results.guarded, results.limited
                ),
                writers_target(results.writers),
            ]
        ),
        [f"Benchmark took {results.minutes:.1f} minutes."],
    ]
    return "\n\n".join("\n".join(lines) for lines in sections)


def access_document(
    matrix: Matrix,
    routes: dict[str, list[str]],
    args: argparse.Namespace,
    tag_links: int,
    minutes: float,
) -> str:
    """The report of ``--only access``: the list and get-one routes, with a token and open."""
    sections = [
        [_data_line(tag_links, args.repeats, args.seconds)],
        matrix_table(matrix, routes, args.connections),
        access_table(matrix, args.connections),
        targets_table(access_targets(matrix, args.connections)),
        [f"Benchmark took {minutes:.1f} minutes."],
    ]
    return "\n\n".join("\n".join(lines) for lines in sections)


def _data_line(tag_links: int, repeats: int, seconds: float) -> str:
    return (
        f"Data: {OWNERS} owners, {TAGS} tags, {ITEMS} items, {tag_links} tag links "
        f"(seed {SEED}). {repeats} repetitions of {seconds:g} s per point; "
        "medians; ratios are medians of per-repetition ratios."
    )


# A bare FastAPI route answering the service's bytes for the hot set (bare.py): the floor
# for a cache hit.
BARE = "bare FastAPI"


def _hot_set_note(has_cache: bool) -> str:
    if has_cache:
        return (
            "`get-hot` is served by the module's cache; `bare FastAPI` answers the same bytes "
            "from a dict, with nothing else around its route (`bare.py`)."
        )
    return (
        "`get-hot` is the same uncached route on a hot set of 100 ids: "
        "this module has no cache yet."
    )


def row(*cells: object) -> str:
    """One Markdown table row."""
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


# --- Throughput and latency ---------------------------------------------------------------

ROUTE_LABELS = {
    "list": f"GET /items?limit={PAGE} (owner + tags)",
    "get": "GET /items/{id} (random ids)",
    "get-hot": "GET /items/{id} (hot set)",
    "create": "POST /items (with tags)",
    "update": "PATCH /items/{id} (with tags)",
    "batch": f"POST /items/batch ({BATCH_ROWS} rows with tags)",
}


def matrix_table(
    matrix: Matrix, routes: dict[str, list[str]], connection_counts: list[int]
) -> list[str]:
    """Each route, connection count and server: medians, errors, statements, memory, ratio."""
    lines = [
        row(
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
        row("---", "---", "---", *["---:"] * 7),
    ]
    for route, servers in routes.items():
        for connections in connection_counts:
            lines += [_matrix_row(matrix, route, connections, server) for server in servers]
    return lines


def _matrix_row(matrix: Matrix, route: str, connections: int, server: str) -> str:
    key = (route, connections, server)
    runs = matrix.points[key]
    ratio = "" if server == "ours" else f"{matrix.ratio(route, connections, 'ours', server):.2f}x"
    return row(
        ROUTE_LABELS[route],
        server,
        connections,
        f"{matrix.median(*key, 'rps'):,.0f}",
        f"{matrix.median(*key, 'p50_ms'):.1f}",
        f"{matrix.median(*key, 'p99_ms'):.1f}",
        sum(point.non2xx + point.socket_errors for point in runs),
        f"{matrix.queries[route, server]:g}",
        f"{max(point.rss_mib for point in runs):.0f}",
        ratio,
    )


def rows_table(matrix: Matrix, connection_counts: list[int]) -> list[str]:
    """Rows a second created one per request and by batches."""
    lines = [
        "| creates | conns | rows/s | batch / single |",
        "| --- | ---: | ---: | ---: |",
    ]
    for connections in connection_counts:
        single = matrix.median("create", connections, "ours", "rps")
        lines.append(row("POST /items, one row a request", connections, f"{single:,.0f}", ""))
        lines.append(
            row(
                f"POST /items/batch, {BATCH_ROWS} rows a request",
                connections,
                f"{matrix.median('batch', connections, 'ours', 'rps') * BATCH_ROWS:,.0f}",
                f"{matrix.batch_rows_ratio(connections):.1f}x",
            )
        )
    return lines


# --- Overload and parallel writers --------------------------------------------------------


def overload_table(overload: Overload, service: Service, guarded: str) -> list[str]:
    """Each overload server at capacity and at ten times capacity."""
    capacity, waiting = service.capacity, service.waiting
    guard = (
        f"the service's overload guard ({capacity} in flight, {waiting} waiting)"
        if service.has_guard
        else "NO overload guard: this module does not have one yet, so `ours` is unprotected"
    )
    return [
        f"Overload: the list route, closed loop, {capacity} clients (capacity) then "
        f"{capacity * 10} (ten times), {CLIENT_TIMEOUT:g} s client timeout, no retries. "
        f"`{guarded}` runs with {guard}; the baseline has the guard off and uvicorn's "
        f"`--limit-concurrency {capacity + waiting}`.",
        "",
        row(
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
        row("---", *["---:"] * 11),
        *(_overload_row(name, runs) for name, runs in overload.items()),
    ]


def _overload_row(name: str, runs: list[tuple[LoadRun, LoadRun]]) -> str:
    capacity_runs = [run[0] for run in runs]
    overloaded = [run[1] for run in runs]
    return row(
        name,
        f"{_median(capacity_runs, lambda run: run.goodput):,.0f}",
        f"{_median(capacity_runs, lambda run: run.p99_admitted() * 1000):.1f}",
        f"{_median(capacity_runs, lambda run: run.rss_mib):.0f}",
        f"{_median(overloaded, lambda run: run.goodput):,.0f}",
        f"{statistics.median(o.goodput / c.goodput for c, o in runs):.2f}",
        f"{_median(overloaded, lambda run: run.p99_admitted() * 1000):.1f}",
        f"{_median(overloaded, lambda run: run.refused):,.0f}",
        f"{_median(overloaded, lambda run: run.median_refusal() * 1000):.1f}",
        f"{_median(overloaded, lambda run: run.timeouts):,.0f}",
        f"{_median(overloaded, lambda run: run.failures):,.0f}",
        f"{_median(overloaded, lambda run: run.rss_mib):.0f}",
    )


def _median(runs: list[LoadRun], metric: Callable[[LoadRun], float]) -> float:
    return statistics.median(metric(run) for run in runs)


def writers_table(check: WriterCheck, seconds: float) -> list[str]:
    """What the parallel writers were told, against what the table holds."""
    return [
        f"Parallel writers: {WRITERS} clients for {seconds:g} s, each looping POST /items "
        "(with tags) then GET /items/{id}; afterwards the table is compared with what was "
        "acknowledged.",
        "",
        row(
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
        row(*["---:"] * 9),
        f"| {check.acknowledged:,} | {check.read_back:,} | {check.shed:,} | {check.timeouts:,} "
        f"| {len(check.failures):,} | {check.rows:,} | {check.missing} | {check.duplicated} "
        f"| {check.unacknowledged_rows} of {check.unknown_outcomes} |",
        *(f"- failure: {failure}" for failure in check.failures[:5]),
    ]


# --- Several processes --------------------------------------------------------------------


def several_processes_tables(several: SeveralProcesses, matrix: Matrix) -> list[str]:
    """Two workers against one, the invalidation latency, and writes with NOTIFY on and off."""
    return [
        *_two_workers_table(several, matrix),
        "",
        *_invalidation_table(several),
        "",
        *_notify_table(several),
    ]


def _two_workers_table(several: SeveralProcesses, matrix: Matrix) -> list[str]:
    connections = several.connections
    lines = [
        f"Two workers on two cores (uvicorn `--workers 2`, both servers, wrk and PostgreSQL "
        f"sharing the two cores), {connections} connections:",
        "",
        "| route | ours req/s | ceiling req/s | ours / ceiling, 2 workers | "
        "ours / ceiling, 1 worker (above) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for route, paired in several.workers.items():
        one_worker = matrix.ratio(route, connections, "ours", "ceiling")
        lines.append(
            f"| {ROUTE_LABELS[route]} | {statistics.median(paired.ours):,.0f} "
            f"| {statistics.median(paired.theirs):,.0f} | {paired.ratio():.2f}x "
            f"| {one_worker:.2f}x |"
        )
    empty = sum(paired.empty_runs() for paired in several.workers.values())
    if empty:
        lines += ["", f"{empty} runs got no answer at all and are left out of the ratios."]
    return lines


def _invalidation_table(several: SeveralProcesses) -> list[str]:
    latencies = several.latencies
    samples = len(latencies.from_ack) + latencies.never_seen
    lines = [
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
    return [
        *lines,
        "",
        f"Reads through B that still showed the old price after A's acknowledgement: "
        f"{latencies.stale_after_ack} over the {samples} samples; samples never fresh within "
        f"5 s: {latencies.never_seen}.",
    ]


def _notify_table(several: SeveralProcesses) -> list[str]:
    service_writes = several.service_writes
    lines = [
        "Write throughput with the cache's NOTIFY on and off:",
        "",
        "| writes | NOTIFY on /s | NOTIFY off /s | on / off |",
        "| --- | ---: | ---: | ---: |",
        f"| POST /items (with tags), 2 workers, {several.connections} connections, "
        f"`CACHE_NOTIFY` | {statistics.median(service_writes.ours):,.0f} "
        f"| {statistics.median(service_writes.theirs):,.0f} | {service_writes.ratio():.2f}x |",
    ]
    for clients, paired in several.database_writes.items():
        lines.append(
            f"| raw transactions, {clients} connection{'s' if clients > 1 else ''}: "
            f"INSERT + `pg_notify` vs INSERT + SELECT | {statistics.median(paired.ours):,.0f} "
            f"| {statistics.median(paired.theirs):,.0f} | {paired.ratio():.2f}x |"
        )
    return lines


# --- Targets ------------------------------------------------------------------------------


def targets_table(targets: list[Target]) -> list[str]:
    """The targets, what was measured, and whether it was met."""
    return [
        "| target | measured | met |",
        "| --- | --- | --- |",
        *(f"| {name} | {measured} | {'yes' if met else 'NO'} |" for name, measured, met in targets),
    ]


def route_targets(matrix: Matrix, connection_counts: list[int], has_cache: bool) -> list[Target]:
    """The routes' targets against the ceiling and the N+1, at each connection count."""
    targets = []
    for connections in connection_counts:
        list_ceiling = matrix.ratio("list", connections, "ours", "ceiling")
        list_naive = matrix.ratio("list", connections, "ours", "n+1")
        get_ceiling = matrix.ratio("get", connections, "ours", "ceiling")
        hot = matrix.median("get-hot", connections, "ours", "rps") / matrix.median(
            "get", connections, "ours", "rps"
        )
        create_ceiling = matrix.ratio("create", connections, "ours", "ceiling")
        update_ceiling = matrix.ratio("update", connections, "ours", "ceiling")
        rows = matrix.batch_rows_ratio(connections)
        wanted = 0.45 if connections <= 32 else 0.4
        no_cache = "" if has_cache else " (no cache in the module yet)"
        c = f"(c={connections})"
        targets += [
            (f"list >= {wanted}x ceiling {c}", f"{list_ceiling:.2f}x", list_ceiling >= wanted),
            (f"list >= 30x N+1 {c}", f"{list_naive:.1f}x", list_naive >= 30),
            (
                f"get-one, uncached, >= 0.35x ceiling {c}",
                f"{get_ceiling:.2f}x",
                get_ceiling >= 0.35,
            ),
            (f"cached get-one >= 5x uncached {c}", f"{hot:.2f}x{no_cache}", hot >= 5),
            (
                f"POST with tags >= 0.4x ceiling {c}",
                f"{create_ceiling:.2f}x",
                create_ceiling >= 0.4,
            ),
            (
                f"PATCH with tags >= 0.4x ceiling {c}",
                f"{update_ceiling:.2f}x",
                update_ceiling >= 0.4,
            ),
            (f"batch rows/s >= 10x single creates' {c}", f"{rows:.1f}x", rows >= 10),
        ]
        if ("get-hot", connections, BARE) in matrix.points:
            bare = matrix.ratio("get-hot", connections, "ours", BARE)
            targets.append(
                (f"cached get-one >= 0.9x a bare FastAPI route {c}", f"{bare:.2f}x", bare >= 0.9)
            )
    return targets


def access_table(matrix: Matrix, connection_counts: list[int]) -> list[str]:
    """The service with a token against its open reads without one: req/s and server CPU."""
    lines = [
        f"Checking tokens: `ours` driven with a token, `{OPEN_READS}` (the list and get-one "
        "routes public) without one. CPU ms/req is the server's CPU time per request, the "
        "backlog a point leaves included.",
        "",
        "| route | conns | req/s with a token | req/s open | with / open "
        "| CPU ms/req with a token | CPU ms/req open | with / open |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for route in ("list", "get"):
        for connections in connection_counts:
            cells = []
            for metric, shown in (("rps", "{:,.0f}"), ("cpu_ms", "{:.2f}")):
                cells += [
                    shown.format(matrix.median(route, connections, server, metric))
                    for server in ("ours", OPEN_READS)
                ]
                cells.append(f"{matrix.ratio(route, connections, 'ours', OPEN_READS, metric):.2f}x")
            lines.append(row(ROUTE_LABELS[route], connections, *cells))
    return lines


def access_targets(matrix: Matrix, connection_counts: list[int]) -> list[Target]:
    """What checking tokens costs: the service with a token against its open reads."""
    targets = []
    for route in ("list", "get"):
        for connections in connection_counts:
            ratio = matrix.ratio(route, connections, "ours", OPEN_READS)
            targets.append(
                (
                    f"{route} with a token >= 0.95x open reads without one (c={connections})",
                    f"{ratio:.2f}x",
                    ratio >= 0.95,
                )
            )
    return targets


def overload_targets(
    overload: Overload, service: Service, guarded: str, limited: str
) -> list[Target]:
    """The guard at ten times capacity, against its own capacity and the baseline."""
    runs, baseline = overload[guarded], overload[limited]
    timeouts = statistics.median(run[1].timeouts for run in runs)
    goodput = statistics.median(run[1].goodput / run[0].goodput for run in runs)
    p99 = statistics.median(run[1].p99_admitted() / run[0].p99_admitted() for run in runs)
    shed = statistics.median(run[1].median_refusal() * 1000 for run in runs)
    rss = statistics.median(run[1].rss_mib / run[0].rss_mib for run in runs)
    base_goodput = statistics.median(run[1].goodput / run[0].goodput for run in baseline)
    base_shed = statistics.median(run[1].median_refusal() * 1000 for run in baseline)
    note = "" if service.has_guard else " (no guard yet)"
    return [
        ("overload: zero client timeouts" + note, f"{timeouts:.0f}", timeouts == 0),
        ("overload: goodput >= 90% of capacity" + note, f"{goodput:.0%}", goodput >= 0.9),
        ("overload: p99 admitted <= 2x capacity p99" + note, f"{p99:.1f}x", p99 <= 2),
        ("overload: median 503 < 5 ms" + note, f"{shed:.1f} ms", shed < 5),
        ("overload: peak RSS <= 1.5x capacity" + note, f"{rss:.2f}x", rss <= 1.5),
        (
            "overload: goodput at least --limit-concurrency's" + note,
            f"{goodput:.0%} vs {base_goodput:.0%}",
            goodput >= base_goodput,
        ),
        (
            "overload: median 503 at most 2x --limit-concurrency's" + note,
            f"{shed:.1f} ms vs {base_shed:.1f} ms",
            shed <= 2 * base_shed,
        ),
    ]


def writers_target(writers: WriterCheck) -> Target:
    """The parallel writers: nothing lost, nothing duplicated."""
    return (
        "parallel writers lose nothing, duplicate nothing",
        f"{writers.missing} missing, {writers.duplicated} duplicated, "
        f"{len(writers.failures)} failures",
        writers.missing == 0 and writers.duplicated == 0 and not writers.failures,
    )
