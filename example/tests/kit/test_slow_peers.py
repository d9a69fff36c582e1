"""Clients that stop reading, or send their headers too slowly or too large, against a real
uvicorn process: capacity stays with the requests the service is working on.

Each attack runs against the service as the README's development command serves it (plain
uvicorn: the kit's send deadline alone) and as its image does (``--http`` with the module's
bounded protocol), where the connection itself is bounded too.
"""

import asyncio
import contextlib
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.harness.servers import serving
from tests.harness.waiting import scrape

# A kit-only service: a route to probe, a long download, an upload.
SERVED_APP = """
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import StreamingResponse

from my_service import PUBLIC, access, create_app, query_budget

app = create_app()


@app.get("/ping")
@query_budget(0)
@access(PUBLIC)
async def ping() -> dict[str, str]:
    return {"status": "pong"}


@app.get("/report")
@query_budget(0)
@access(PUBLIC)
async def report() -> dict[str, str]:
    return {"text": "x" * 32768}


@app.get("/download")
@query_budget(0)
@access(PUBLIC)
async def download() -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(400):
            yield b"x" * 65536

    return StreamingResponse(chunks(), media_type="application/octet-stream")


@app.post("/upload")
@query_budget(0)
@access(PUBLIC)
async def upload(request: Request) -> dict[str, int]:
    return {"bytes": len(await request.body())}
"""

IN_FLIGHT = 4
PROBES = 40
# Every wait of a test is bounded by this: a broken bound fails the test, never hangs it.
GIVE_UP = 30.0


@dataclass
class Server:
    """A running service: its address and whether it runs the bounded protocol."""

    host: str
    port: int
    bounded: bool

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def start(tmp_path: Path, bounded: bool) -> Iterator[Server]:
    settings = {
        "GUARD_MAX_IN_FLIGHT": str(IN_FLIGHT),
        "GUARD_MAX_WAITING": "2",
        "GUARD_WAIT_TIMEOUT": "0.5",
        "GUARD_ADAPTIVE": "false",
        "SEND_TIMEOUT": "1",
        "HEADER_READ_TIMEOUT": "1",
        "MAX_HEADER_BYTES": "32768",
    }
    protocol = ["--http", "my_service:BoundedHttpToolsProtocol"] if bounded else []
    with serving(tmp_path, SERVED_APP, settings, *protocol) as port:
        yield Server("127.0.0.1", port, bounded)


# One server of each kind for the module's tests: each test ends with the connections it
# opened closed, and those that take the guard's places wait until it has all of them back.
@pytest.fixture(scope="module", params=[False, True], ids=["uvicorn", "bounded protocol"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The service under uvicorn, as served in development and by the image."""
    yield from start(tmp_path_factory.mktemp("server"), bounded=request.param)


@pytest.fixture(scope="module")
def bounded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service under uvicorn with the module's bounded protocol, as the image runs it."""
    yield from start(tmp_path_factory.mktemp("bounded-server"), bounded=True)


async def never_reading(server: Server, request: bytes, count: int) -> list[socket.socket]:
    """Ten connections, each with a small receive buffer, that send ``count`` pipelined
    copies of ``request`` and never read a byte of the answers.
    """
    loop = asyncio.get_running_loop()
    connections = []
    for _ in range(10):
        connection = socket.socket()
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        connection.setblocking(False)
        await loop.sock_connect(connection, (server.host, server.port))
        # Until the server stops reading this connection: it has enough to answer.
        with contextlib.suppress(TimeoutError, OSError):
            await asyncio.wait_for(loop.sock_sendall(connection, request * count), timeout=2)
        connections.append(connection)
    return connections


@pytest.fixture
async def attackers() -> AsyncIterator[list[socket.socket]]:
    """Where a test keeps its attacking connections; all closed at the end."""
    connections: list[socket.socket] = []
    yield connections
    for connection in connections:
        connection.close()


async def guard_gauges(client: httpx.AsyncClient) -> dict[str, float]:
    samples = await scrape(client)
    return {
        "in_flight": samples["guard_in_flight"],
        "waiting": samples["guard_waiting"],
        "responses_not_read": samples["guard_responses_not_read_total"],
    }


async def wait_until(
    client: httpx.AsyncClient, what: str, condition: Callable[[dict[str, float]], bool]
) -> dict[str, float]:
    """Poll the guard's gauges until ``condition`` holds; fail if it does not in time."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + GIVE_UP
    while loop.time() < give_up:
        gauges = await guard_gauges(client)
        if condition(gauges):
            return gauges
        await asyncio.sleep(0.1)  # polling a condition, bounded above
    pytest.fail(f"{what} did not happen within {GIVE_UP:g} s: {gauges}")


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET /report HTTP/1.1\r\nHost: test\r\n\r\n",
        b"GET /download HTTP/1.1\r\nHost: test\r\n\r\n",
    ],
    ids=["pipelined and never read", "downloads never read"],
)
async def test_clients_that_never_read_lose_their_places_at_the_send_deadline(
    server: Server, attackers: list[socket.socket], request_line: bytes
) -> None:
    attackers.extend(await never_reading(server, request_line, count=300))
    async with httpx.AsyncClient(base_url=server.url, timeout=GIVE_UP) as client:
        await wait_until(
            client,
            "taking every place in the guard",
            lambda gauges: gauges["in_flight"] == IN_FLIGHT,
        )
        await wait_until(
            client,
            "freeing the guard",
            lambda gauges: gauges["in_flight"] == gauges["waiting"] == 0,
        )
        statuses = Counter([(await client.get("/ping")).status_code for _ in range(PROBES)])
        gauges = await guard_gauges(client)
    assert statuses[200] >= PROBES * 0.9, statuses
    assert (gauges["in_flight"], gauges["waiting"]) == (0, 0), gauges


async def test_a_client_that_reads_slowly_gets_its_whole_download(server: Server) -> None:
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as client,
        client.stream("GET", "/download") as response,
    ):
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
    assert (response.status_code, size) == (200, 400 * 65536)


async def send_head(server: Server, head: bytes) -> bytes:
    """Send ``head`` on a new connection, return what the server answers until it closes."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(head)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=GIVE_UP)
    finally:
        writer.close()


async def test_headers_over_the_limit_are_refused_with_431(bounded_server: Server) -> None:
    cookie = b"Cookie: " + b"a" * 40_000 + b"\r\n"
    answer = await send_head(
        bounded_server, b"GET /ping HTTP/1.1\r\nHost: test\r\n" + cookie + b"\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:200]
    assert b'{"detail":"the request\'s headers exceed 32768 bytes"}' in answer


async def test_headers_within_the_limit_and_large_bodies_are_served(
    bounded_server: Server,
) -> None:
    async with httpx.AsyncClient(base_url=bounded_server.url, timeout=10) as client:
        cookie = await client.get("/ping", headers={"cookie": "a" * 30_000})
        upload = await client.post("/upload", content=b"x" * 500_000)
    assert cookie.status_code == 200, cookie.text
    assert upload.json() == {"bytes": 500_000}


async def test_a_huge_header_is_cut_off_and_the_service_answers(bounded_server: Server) -> None:
    # 1 MiB of one header, never finished. A server without the limit reads all of it and
    # waits for the rest until its header deadline (408); this one stops at the limit and
    # closes, which over the bytes it left unread resets the connection. How much the
    # kernel buffers before that depends on the machine's load, not on the server.
    reader, writer = await asyncio.open_connection(bounded_server.host, bounded_server.port)
    answer = b""
    reset = False
    try:
        writer.write(b"GET /ping HTTP/1.1\r\nHost: test\r\nX-Huge: ")
        for _ in range(16):
            writer.write(b"a" * 65536)
            await asyncio.wait_for(writer.drain(), timeout=GIVE_UP)
        answer = await asyncio.wait_for(reader.read(), timeout=GIVE_UP)
    except (ConnectionResetError, BrokenPipeError):
        reset = True
    finally:
        writer.close()
    async with httpx.AsyncClient(base_url=bounded_server.url, timeout=10) as client:
        health = await client.get("/health")
    assert reset or answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert health.status_code == 200


async def test_headers_sent_a_byte_at_a_time_are_cut_off_at_the_deadline(
    bounded_server: Server,
) -> None:
    reader, writer = await asyncio.open_connection(bounded_server.host, bounded_server.port)
    head = b"GET /ping HTTP/1.1\r\nHost: test\r\nX-Slow: " + b"a" * 1000
    answer = b""
    try:
        for byte in head:  # at 20 bytes a second: 50 s for the whole head
            writer.write(bytes([byte]))
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                answer = await asyncio.wait_for(reader.read(1000), timeout=0.05)
            if answer or reader.at_eof():
                break
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer[:200]


async def test_a_connection_that_sends_nothing_is_closed_at_the_deadline(
    bounded_server: Server,
) -> None:
    assert await send_head(bounded_server, b"") == b""
