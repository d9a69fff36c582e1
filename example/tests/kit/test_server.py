"""A real uvicorn process under a flood or slow uploads: it stays up, healthy and serving."""

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness.servers import serving
from tests.harness.tokens import FULL_ACCESS
from tests.harness.waiting import scrape

# A service with one slow route, so that a flood of requests overloads it for sure.
FLOODED_APP = """
import asyncio

from fastapi import Request

from my_service import create_app, query_budget

app = create_app()


@app.get("/slow")
@query_budget(0)
async def slow() -> dict[str, str]:
    await asyncio.sleep(0.2)
    return {"status": "done"}


@app.post("/upload")
@query_budget(0)
async def upload(request: Request) -> dict[str, int]:
    return {"bytes": len(await request.body())}
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """The flooded app under uvicorn on a free port: 2 in flight, 2 waiting, bodies in 1 s."""
    settings = {
        "GUARD_MAX_IN_FLIGHT": "2",
        "GUARD_MAX_WAITING": "2",
        "GUARD_WAIT_TIMEOUT": "0.5",
        "BODY_READ_TIMEOUT": "1",
    }
    with serving(tmp_path, FLOODED_APP, settings) as port:
        yield f"http://127.0.0.1:{port}"


async def test_a_flooded_server_answers_200_or_503_and_stays_healthy(server: str) -> None:
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(
        base_url=server, limits=limits, timeout=10, headers=FULL_ACCESS
    ) as client:

        async def check_health() -> list[int]:
            statuses = []
            for _ in range(20):
                statuses.append((await client.get("/health")).status_code)
            return statuses

        flood = asyncio.gather(*(client.get("/slow") for _ in range(100)))
        responses, health = await asyncio.gather(flood, check_health())
        statuses = Counter(response.status_code for response in responses)
        assert set(statuses) == {200, 503}, statuses
        assert statuses[200] >= 4, statuses
        assert health == [200] * 20
        assert all(
            response.headers["retry-after"] in {"1", "2", "3"}
            for response in responses
            if response.status_code == 503
        )
        samples = await scrape(client)
        assert samples["guard_admitted_total"] == statuses[200]
        refused = (
            "guard_rejected_full_total",
            "guard_rejected_waited_too_long_total",
            "guard_rejected_standing_line_total",
            "guard_rejected_kept_connection_total",
        )
        assert sum(samples[name] for name in refused) == statuses[503]


async def start_slow_upload(server: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send the headers of an upload and one byte of its body, and nothing more."""
    host, port = server.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: 1000\r\n\r\nx"
    )
    await writer.drain()
    return reader, writer


async def guard_counters(client: httpx.AsyncClient) -> dict[str, float]:
    """The guard's samples from /metrics, by field name."""
    samples = await scrape(client)
    return {
        name.removeprefix("guard_").removesuffix("_total"): value
        for name, value in samples.items()
        if name.startswith("guard_")
    }


async def test_slow_uploads_hold_no_place_and_are_cut_off_at_the_deadline(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=10, headers=FULL_ACCESS) as client:
        # As many trickling uploads as the guard admits: 2 in flight and 2 waiting.
        uploads = [await start_slow_upload(server) for _ in range(4)]
        for _ in range(200):  # until the server has started reading all four bodies
            if (await guard_counters(client))["reading_bodies"] == 4:
                break
        else:
            pytest.fail(f"the server is not reading four bodies: {await guard_counters(client)}")
        served = await asyncio.gather(
            client.get("/slow"),
            client.get("/slow"),
            client.post("/upload", content=b"x" * 100),
            client.post("/upload", content=b"x" * 100),
        )
        assert [response.status_code for response in served] == [200] * 4
        assert [response.json() for response in served[2:]] == [{"bytes": 100}] * 2
        answers = []
        for reader, writer in uploads:
            # Bounded: an upload never cut off fails the test instead of hanging it.
            answers.append(await asyncio.wait_for(reader.readline(), timeout=10))
            writer.close()
        assert answers == [b"HTTP/1.1 408 Request Timeout\r\n"] * 4
        counters = await guard_counters(client)
        assert (counters["bodies_too_slow"], counters["reading_bodies"]) == (4, 0)
        assert counters["admitted"] == 4
