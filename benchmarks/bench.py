"""Benchmark the generated service against a raw-asyncpg ceiling and an N+1 variant.

Run through ``benchmarks/run``, which installs what this needs. Steps:

1. render the template's working tree with real Copier (PostgreSQL, example domain);
2. create a fresh database, seed it deterministically (1,000 owners, 200 tags, 100,000 items
   with 0-5 tags each) by COPY, then VACUUM ANALYZE;
3. start, under uvicorn (uvloop, httptools, one worker, no access log, pinned to core 0):
   the rendered service, a copy whose list route loads tags row by row (N+1), a copy whose
   list and get-one routes are public (open reads), and the raw ceiling in ``ceiling.py``;
4. drive them with wrk pinned to core 1, servers taking turns point by point, each point
   repeated, at 32 and 64 connections: the list, get-one (random ids), get-one (hot set),
   create, update (PATCH with tags) and batch create routes; the service with a token, the
   open reads without one, so that the two side by side show what checking tokens costs;
5. overload at ten times capacity, with the service's overload guard (when it has one) and
   with uvicorn's ``--limit-concurrency`` instead, measured with ``loadclient.py``;
6. 128 parallel writers (create, then get), then check the table holds exactly the rows
   that were acknowledged;
7. several processes (``processes.py``): two workers on two cores against the ceiling with
   two, the invalidation latency between two instances, and write throughput with the
   cache's NOTIFY on and off;
8. print the tables and the targets, met or not.

``--only access`` runs the list and get-one routes on the service and the open reads alone,
and reports those.

Where each step lives: ``testbed.py`` (1-2, with ``dataset.py``), ``servers.py`` (3),
``throughput.py`` with ``wrk_driver.py`` and the Lua scripts in ``wrk/`` (4),
``overload_tenfold.py`` (5), ``parallel_writers.py`` (6), ``processes.py`` (7) and
``report.py`` (8). This module holds the options and the order of the steps.
"""

import argparse
import os
from pathlib import Path

import processes
import tokens
from charts import beside, routes_chart
from overload_tenfold import Overload, measure_overload
from parallel_writers import WRITERS, WriterCheck, parallel_writers
from report import BARE, ROUTE_LABELS, Results, access_document, document
from servers import BENCHMARKS, CLIENT_CORE, Server, serving
from testbed import (
    DEFAULT_POSTGRES,
    MODULE,
    OPEN_READS,
    Service,
    Testbed,
    make_nplus1,
    make_open_reads,
    testbed,
)
from throughput import Matrix, run_matrix

TARGET = f"{MODULE}:app"
# bare.py fetches the service's answers with the run's token.
BARE_AUTHORIZATION = {"SOURCE_AUTHORIZATION": tokens.AUTHORIZATION}
POOL_SIZE = 10
# The measuring steps a whole run takes, each announced as it starts ("step 2 of 4: ...").
STEPS = 4
# The overload servers: the service with its guard, and the guard off behind uvicorn's limit.
GUARDED, LIMITED = "ours", "ours, guard off, --limit-concurrency"


def main() -> None:
    """Run every step in order, then print the report (and write it to ``--output``)."""
    args = parse_arguments()
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    with testbed("bench", args.postgres) as bed:
        base, throughput = environments(bed, args.connections)
        service = Service.read(bed.project, base, POOL_SIZE)
        routes, matrix = measure_routes(bed, base, throughput if service.has_guard else base, args)
        if args.output:
            chart = beside(args.output, "routes")
            routes_chart(matrix, routes, ROUTE_LABELS, args.connections, chart)
        if args.only == "access":
            text = access_document(matrix, routes, args, bed.tag_links, bed.minutes())
            report(text, args.output)
            return
        overload, writers = measure_overload_and_writers(bed, base, service, args)
        several = measure_several_processes(bed, base, throughput, args)
        results = Results(
            tag_links=bed.tag_links,
            repeats=args.repeats,
            seconds=args.seconds,
            connection_counts=args.connections,
            writers_seconds=args.writers_seconds,
            service=service,
            routes=routes,
            matrix=matrix,
            overload=overload,
            guarded=GUARDED,
            limited=LIMITED,
            writers=writers,
            several=several,
            minutes=bed.minutes(),
        )
    report(document(results), args.output)


def report(text: str, output: Path | None) -> None:
    """Print the report, and write it to ``output`` when there is one."""
    print("\n" + text)
    if output:
        output.write_text(text + "\n")


def environments(
    bed: Testbed, connection_counts: list[int]
) -> tuple[dict[str, str], dict[str, str]]:
    """The service's environment as shipped (base), and as the throughput points run it."""
    base = {
        "DATABASE_URL": bed.database_url,
        "CREATE_TABLES": "false",
        "DATABASE_POOL_SIZE": str(POOL_SIZE),
    }
    # For throughput, the guard's line holds every connection wrk opens: the route is
    # measured, not the guard. The overload scenario runs the shipped defaults.
    throughput = {
        **base,
        "GUARD_MAX_WAITING": str(max(connection_counts)),
        "GUARD_WAIT_TIMEOUT": "10",
    }
    return base, throughput


def measure_routes(
    bed: Testbed, base: dict[str, str], environment: dict[str, str], args: argparse.Namespace
) -> tuple[dict[str, list[str]], Matrix]:
    """Step 4: every route on the service, the ceiling, the N+1 and the open reads it serves
    (with ``--only access``, the list and get-one routes on the service and the open reads).
    """
    ours = Server("ours", 8101, bed.project, TARGET, environment)
    opened = make_open_reads(bed.project, bed.work)
    open_reads = Server(OPEN_READS, 8106, opened, TARGET, environment, anonymous=True)
    if args.only == "access":
        servers = [ours, open_reads]
        routes = {"list": servers, "get": servers}
    else:
        nplus1 = make_nplus1(bed.project, bed.work)
        naive = Server("n+1", 8102, nplus1, TARGET, environment)
        ceiling = Server("ceiling", 8103, BENCHMARKS, "ceiling:app", base)
        # Started after ours, whose answers it serves.
        source = {"SOURCE_URL": f"http://127.0.0.1:{ours.port}"}
        bare = Server(BARE, 8107, BENCHMARKS, "bare:app", {**source, **BARE_AUTHORIZATION})
        servers = [ours, naive, ceiling, open_reads, bare]
        routes = {
            "list": [ours, ceiling, naive, open_reads],
            "get": [ours, ceiling, open_reads],
            "get-hot": [ours, bare],
            "create": [ours, ceiling],
            "update": [ours, ceiling],
            "batch": [ours],
        }
    with serving(bed.work, *servers):
        steps = 1 if args.only == "access" else STEPS
        print(f"step 1 of {steps}: throughput and latency (wrk)", flush=True)
        matrix = run_matrix(routes, args.connections, args.repeats, args.seconds)
    names = {route: [server.name for server in servers] for route, servers in routes.items()}
    return names, matrix


def measure_overload_and_writers(
    bed: Testbed, base: dict[str, str], service: Service, args: argparse.Namespace
) -> tuple[Overload, WriterCheck]:
    """Steps 5 and 6, on a fresh service with the shipped guard settings."""
    guarded = Server(GUARDED, 8105, bed.project, TARGET, base)
    limited = Server(
        LIMITED, 8104, bed.project, TARGET, {**base, "GUARD_ENABLED": "false"},
        ["--limit-concurrency", str(service.capacity + service.waiting)],
    )  # fmt: skip
    with serving(bed.work, guarded):
        print(f"step 2 of {STEPS}: overload", flush=True)
        with serving(bed.work, limited):
            overload = measure_overload(
                [guarded, limited], service.capacity, args.repeats, args.overload_seconds
            )
        print(f"step 3 of {STEPS}: parallel writers", flush=True)
        writers = parallel_writers(guarded, bed.dsn, WRITERS, args.writers_seconds)
    return overload, writers


def measure_several_processes(
    bed: Testbed, base: dict[str, str], throughput: dict[str, str], args: argparse.Namespace
) -> processes.SeveralProcesses:
    """Step 7, at the largest connection count."""
    print(f"step 4 of {STEPS}: several processes", flush=True)
    return processes.several_processes(
        bed, base, throughput, max(args.connections), args.repeats, args.seconds,
        args.invalidations,
    )  # fmt: skip


def parse_arguments() -> argparse.Namespace:
    """The command line: how long and how often each point runs, and where PostgreSQL is."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5, help="length of each wrk point")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of each point")
    parser.add_argument("--connections", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--overload-seconds", type=float, default=8)
    parser.add_argument("--writers-seconds", type=float, default=8)
    parser.add_argument(
        "--invalidations", type=int, default=200, help="samples of the two-instance latency"
    )
    parser.add_argument(
        "--only",
        choices=["access"],
        help="access: only the list and get-one routes, with a token and open, side by side",
    )
    parser.add_argument("--output", type=Path, help="also write the tables (Markdown) here")
    parser.add_argument(
        "--postgres",
        default=DEFAULT_POSTGRES,
        help="a PostgreSQL URL whose user may create databases",
    )
    return parser.parse_args()


if __name__ == "__main__":
    main()
