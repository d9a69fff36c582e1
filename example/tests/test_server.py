"""A real uvicorn process under a flood: it stays up, answers 200 or 503, and stays healthy."""

import asyncio
import os
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import scrape

# A service with one slow route, so that a flood of requests overloads it for sure.
FLOODED_APP = """
import asyncio

from my_service import create_app, query_budget

app = create_app()


@app.get("/slow")
@query_budget(0)
async def slow() -> dict[str, str]:
    await asyncio.sleep(0.2)
    return {"status": "done"}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """The flooded app under uvicorn on a free port: 2 in flight, 2 waiting."""
    (tmp_path / "flooded_app.py").write_text(FLOODED_APP)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path.cwd())]),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'flood.db'}",
        "GUARD_MAX_IN_FLIGHT": "2",
        "GUARD_MAX_WAITING": "2",
        "GUARD_WAIT_TIMEOUT": "0.5",
    }
    command = [sys.executable, "-m", "uvicorn", "flooded_app:app", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--no-access-log"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    log = []
    for line in process.stderr:  # wait for start-up, or for the process to end
        log.append(line)
        if "Application startup complete" in line:
            break
    else:
        pytest.fail("uvicorn did not start:\n" + "".join(log))
    try:
        yield f"http://127.0.0.1:{port}"
        assert process.poll() is None, "the server died under the flood"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_a_flooded_server_answers_200_or_503_and_stays_healthy(server: str) -> None:
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(base_url=server, limits=limits, timeout=10) as client:

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
        refused = ("guard_rejected_full_total", "guard_rejected_waited_too_long_total")
        assert sum(samples[name] for name in refused) == statuses[503]
