"""Charts of a benchmark run, written beside its Markdown as PNG files.

- ``routes_chart``: each route's req/s on each server (the service, the ceiling, the N+1
  variant, the open reads), side by side, at each connection count (``bench.py``).
- ``overload_chart``: goodput and the 503s' median latency against offered load, for the
  guard, uvicorn's ``--limit-concurrency`` and no guard (``overload.py``).

matplotlib draws them on a bare ``Figure`` (no pyplot, no global state), which writes PNG
through its Agg canvas: files only, no screen needed.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullLocator
from throughput import Matrix

# One colour per server, the same in every chart of a run.
COLOURS = {
    "ours": "#1f77b4",
    "ceiling": "#7f7f7f",
    "n+1": "#d62728",
    "ours, open reads": "#2ca02c",
    "bare FastAPI": "#9467bd",
    "guard": "#1f77b4",
    "no guard": "#d62728",
    "--limit-concurrency": "#ff7f0e",
}


def colour(server: str) -> str | None:
    """A server's colour: by its name, or its flag for uvicorn's limit (which names its value);
    None leaves a variant to matplotlib's cycle.
    """
    return COLOURS.get(server) or COLOURS.get(server.split(" ")[0])


def beside(output: Path, section: str) -> Path:
    """Where a section's chart goes, beside the Markdown ``output``: RESULT-section.png."""
    return output.with_name(f"{output.stem}-{section}.png")


def routes_chart(
    matrix: Matrix,
    routes: Mapping[str, Sequence[str]],
    labels: Mapping[str, str],
    connection_counts: Sequence[int],
    path: Path,
) -> Path:
    """A panel per route: median req/s of each server at each connection count."""
    columns = 3
    rows = -(-len(routes) // columns)
    figure = Figure(figsize=(5 * columns, 3.6 * rows), layout="tight")
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis, (route, servers) in zip(axes.flat, routes.items(), strict=False):
        width = 0.8 / len(servers)
        for number, server in enumerate(servers):
            places = [
                index + (number - (len(servers) - 1) / 2) * width
                for index in range(len(connection_counts))
            ]
            rates = [
                matrix.median(route, connections, server, "rps")
                for connections in connection_counts
            ]
            axis.bar(places, rates, width, label=server, color=colour(server))
        axis.set_xticks(range(len(connection_counts)))
        axis.set_xticklabels([f"{connections} conns" for connections in connection_counts])
        axis.set_title(labels.get(route, route), fontsize=10)
        axis.set_ylabel("req/s")
        axis.legend(fontsize=8)
    for axis in list(axes.flat)[len(routes) :]:
        axis.set_visible(False)
    figure.suptitle("Throughput by route: the service beside the ceiling and the N+1 variant")
    figure.savefig(path, dpi=110)
    return path


class Scenario(Protocol):
    """What the overload chart reads of one scenario's outcome."""

    @property
    def goodput(self) -> float: ...

    def median_refusal(self) -> float: ...


def overload_chart(
    results: Mapping[str, Mapping[str, Scenario]], factors: Sequence[float], path: Path
) -> Path:
    """Goodput (a share of capacity) and the 503s' median latency against offered load,
    one line per server, for the open-loop scenarios at ``factors`` times capacity.
    """
    figure = Figure(figsize=(11, 4), layout="tight")
    served, refused = figure.subplots(1, 2)
    for name, outcomes in results.items():
        capacity = outcomes["capacity"].goodput
        loads = [factor for factor in factors if f"open {factor:g}x" in outcomes]
        scenarios = [outcomes[f"open {factor:g}x"] for factor in loads]
        line = colour(name)
        served.plot(loads, [s.goodput / capacity for s in scenarios], "o-", label=name, color=line)
        refused.plot(
            loads, [s.median_refusal() * 1000 for s in scenarios], "o-", label=name, color=line
        )
    served.set_title("Goodput under open-loop arrivals")
    served.set_ylabel("goodput / capacity")
    served.set_ylim(bottom=0)
    refused.set_title("How fast a 503 comes back")
    refused.set_ylabel("median 503 latency, ms")
    refused.set_yscale("log")
    refused.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    refused.yaxis.set_minor_locator(NullLocator())
    for axis in (served, refused):
        axis.set_xlabel("offered load / capacity")
        axis.set_xscale("log")
        axis.set_xticks(list(factors), [f"{factor:g}x" for factor in factors])
        axis.xaxis.set_minor_locator(NullLocator())
        axis.legend(fontsize=8)
    figure.savefig(path, dpi=110)
    return path
