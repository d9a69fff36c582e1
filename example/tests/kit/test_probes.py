"""The probes on a port of their own (PROBE_PORT): /health and /ready answered as on the
service's port, one request a connection, anything else refused in the one error shape; the
worker processes of one instance share the port.
"""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import my_service
from my_service import Settings, create_app

from tests.harness.databases import database_server, sqlite_file_at_head
from tests.harness.servers import free_port, serving

Answer = tuple[str, dict[str, str], bytes]
SERVED_APP = """
from my_service import create_app

app = create_app()
"""
NOT_READY = b'{"detail":"the database is unavailable; retry after the delay in Retry-After"}'


async def ask(port: int, request: bytes) -> Answer:
    """Send ``request`` on a new connection to ``port``: the status line, headers and body
    of the answer, read until the server closes the connection.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    return status, headers, body


def request(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: probe\r\n\r\n".encode()


def service_settings(database_url: str, tmp_path: Path, probe_port: int) -> Settings:
    if database_server() is None:
        tmp_path.mkdir(exist_ok=True)
        database_url = sqlite_file_at_head(tmp_path / "service.db")
    return Settings(database_url=database_url, probe_port=probe_port)


@pytest.fixture
async def probe_port(database_url: str, tmp_path: Path) -> AsyncIterator[int]:
    """The port on which a started service answers its probes."""
    port = free_port()
    app = create_app(service_settings(database_url, tmp_path, port))
    async with app.router.lifespan_context(app):
        yield port


async def test_health_and_ready_answer_on_the_probe_port(probe_port: int) -> None:
    status, headers, body = await ask(probe_port, request("/health"))
    assert (status, body) == ("HTTP/1.1 200 OK", b'{"status":"ok"}')
    assert (headers["content-type"], headers["connection"]) == ("application/json", "close")
    status, _, body = await ask(probe_port, request("/ready?from=kubelet"))
    assert (status, body) == ("HTTP/1.1 200 OK", b'{"status":"ready"}')
    status, headers, body = await ask(probe_port, request("/health", "HEAD"))
    assert (status, headers["content-length"], body) == ("HTTP/1.1 200 OK", "15", b"")


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (request("/items"), "HTTP/1.1 404 Not Found"),
        (request("/health", "POST"), "HTTP/1.1 405 Method Not Allowed"),
        # Headers that never end, past 8 KiB: cut off without waiting for the rest.
        (
            b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 9000,
            "HTTP/1.1 431 Request Header Fields Too Large",
        ),
    ],
    ids=["another path", "another method", "headers too large"],
)
async def test_anything_but_a_probe_is_refused_in_the_one_error_shape(
    probe_port: int, sent: bytes, expected: str
) -> None:
    status, headers, body = await ask(probe_port, sent)
    assert status == expected
    assert headers["content-type"] == "application/json"
    assert set(json.loads(body)) == {"detail"}


async def test_a_connection_that_asks_nothing_is_closed_at_the_read_timeout(
    probe_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(my_service, "PROBE_READ_TIMEOUT", 0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", probe_port)
    try:
        assert await asyncio.wait_for(reader.read(), timeout=5) == b""
    finally:
        writer.close()


async def test_ready_on_the_probe_port_is_a_503_while_the_database_cannot_answer() -> None:
    port, nothing_listens = free_port(), free_port()
    url = f"postgresql+asyncpg://nobody@127.0.0.1:{nothing_listens}/nothing"
    app = create_app(Settings(database_url=url, cache_notify=False, probe_port=port))
    async with app.router.lifespan_context(app):
        status, headers, body = await ask(port, request("/ready"))
        assert (status, body) == ("HTTP/1.1 503 Service Unavailable", NOT_READY)
        assert headers["retry-after"] in {"1", "2", "3"}
        # Alive all the same: restarting the instance would not bring the database back.
        assert (await ask(port, request("/health")))[0] == "HTTP/1.1 200 OK"


async def test_the_workers_of_an_instance_share_the_probe_port(
    database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    first = create_app(service_settings(database_url, tmp_path / "first", port))
    second = create_app(service_settings(database_url, tmp_path / "second", port))
    async with first.router.lifespan_context(first):
        async with second.router.lifespan_context(second):
            for _ in range(4):
                assert (await ask(port, request("/health")))[0] == "HTTP/1.1 200 OK"
        # One worker gone, the other still answers on the port.
        assert (await ask(port, request("/health")))[0] == "HTTP/1.1 200 OK"


async def test_without_a_probe_port_the_probes_are_on_the_service_port_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # As .env.example has it: PROBE_PORT= leaves it unset.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROBE_PORT", "")
    assert Settings.from_env().probe_port is None


@pytest.fixture
def served_probe_port(tmp_path: Path) -> Iterator[int]:
    """The probe port of the service under a real uvicorn with two worker processes."""
    port = free_port()
    with serving(tmp_path, SERVED_APP, {"PROBE_PORT": str(port)}, "--workers", "2"):
        yield port


async def test_under_uvicorn_the_workers_answer_on_the_probe_port(served_probe_port: int) -> None:
    answer: Answer | None = None
    for _ in range(100):  # the workers start after uvicorn says it is running
        with contextlib.suppress(OSError):
            answer = await ask(served_probe_port, request("/ready"))
            break
        await asyncio.sleep(0.1)
    assert answer is not None, "nothing answered on the probe port"
    assert (answer[0], answer[2]) == ("HTTP/1.1 200 OK", b'{"status":"ready"}')
    for _ in range(10):
        assert (await ask(served_probe_port, request("/health")))[0] == "HTTP/1.1 200 OK"
