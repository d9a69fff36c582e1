"""A small closed-loop HTTP/1.1 client on raw asyncio, for the scenarios wrk cannot measure.

wrk reports one latency distribution for all responses; under overload the benchmark needs
admitted requests and 503s apart, client timeouts counted, and (for the parallel writers)
each response's body. Each virtual client owns one keep-alive connection, sends a request,
waits for its answer or the timeout, and never retries: a timed-out request is counted and
its connection replaced. ``LoadResult`` sorts what a load got back: admitted, refused, lost.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson
import tokens

CLIENT_TIMEOUT = 5.0  # how long the benchmarks' clients, wrk's included, wait for an answer
TIMEOUT = -1  # the status recorded for a request that got no answer in time
BROKEN = -2  # the status recorded for a request whose connection failed


@dataclass(slots=True)
class Response:
    """What one request got back, and how long it took."""

    status: int
    seconds: float
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> object:
        """The body parsed as JSON."""
        return orjson.loads(self.body)


class Connection:
    """One keep-alive connection to ``host:port``, reopened after a failure or a close;
    its requests carry the run's token (``tokens.py``).
    """

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(self, method: str, path: str, body: object = None) -> Response:
        """Send one request; a timeout or a broken connection is a Response too."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                return await self._exchange(method, path, body, started)
        except TimeoutError:
            self.close()
            return Response(TIMEOUT, time.perf_counter() - started)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            self.close()
            return Response(BROKEN, time.perf_counter() - started)

    def close(self) -> None:
        """Drop the connection; the next request opens a new one."""
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None

    async def _exchange(self, method: str, path: str, body: object, started: float) -> Response:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        payload = b"" if body is None else orjson.dumps(body)
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Authorization: {tokens.AUTHORIZATION}\r\n"
        )
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        writer.write(head.encode() + b"\r\n" + payload)
        status_line, *lines = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        headers = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        content = await reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Response(
            int(status_line.split()[1]), time.perf_counter() - started, headers, content
        )


async def closed_loop(
    host: str,
    port: int,
    clients: int,
    seconds: float,
    timeout: float,
    next_request: Callable[[int], tuple[str, str, object]],
) -> list[Response]:
    """Run ``clients`` connections for ``seconds``, each asking ``next_request(client)``."""
    deadline = time.perf_counter() + seconds
    results: list[Response] = []

    async def client(number: int) -> None:
        connection = Connection(host, port, timeout)
        try:
            while time.perf_counter() < deadline:
                results.append(await connection.request(*next_request(number)))
        finally:
            connection.close()

    await asyncio.gather(*(client(number) for number in range(clients)))
    check_access(results, f"{clients} clients on port {port}")
    return results


def check_access(responses: list[Response], what: str) -> None:
    """Stop the run when most of ``responses`` are 401s or 403s: the load measured nothing."""
    refused = sum(response.status in (401, 403) for response in responses)
    tokens.check_not_refused(refused, len(responses), what)


async def run_workers(
    clients: int, seconds: float, worker: Callable[[int, float], Awaitable[None]]
) -> None:
    """Run ``worker(number, deadline)`` for each of ``clients`` numbers, all at once."""
    deadline = time.perf_counter() + seconds
    await asyncio.gather(*(worker(number, deadline) for number in range(clients)))


def percentile(values: list[float], percent: float) -> float:
    """The ``percent`` percentile of ``values`` (nearest rank), or nan if there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * percent / 100))]


@dataclass
class LoadResult:
    """What a load got back over ``seconds``: admitted, refused (503) and lost requests."""

    seconds: float
    responses: list[Response]

    def of(self, predicate: Callable[[int], bool]) -> list[Response]:
        """The responses whose status ``predicate`` accepts."""
        return [response for response in self.responses if predicate(response.status)]

    @property
    def goodput(self) -> float:
        """Admitted (2xx) responses a second."""
        return len(self.of(_admitted)) / self.seconds

    def p99_admitted(self) -> float:
        """The 99th percentile of the admitted responses' latency, in seconds."""
        return percentile([response.seconds for response in self.of(_admitted)], 99)

    @property
    def refused(self) -> int:
        """The 503s."""
        return len(self.of(_refused))

    def median_refusal(self) -> float:
        """The median latency of the 503s, in seconds."""
        return percentile([response.seconds for response in self.of(_refused)], 50)

    @property
    def timeouts(self) -> int:
        """Requests that got no answer within the client's timeout."""
        return len(self.of(lambda status: status == TIMEOUT))

    @property
    def failures(self) -> int:
        """Broken connections and answers neither admitted nor refused."""
        return len(self.of(lambda status: status == BROKEN or (status >= 300 and status != 503)))


def _admitted(status: int) -> bool:
    return 200 <= status < 300


def _refused(status: int) -> bool:
    return status == 503
