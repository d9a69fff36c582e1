"""A started export is never cut off because the offload line is full at a later batch."""

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from starlette.types import Message

from my_service import EXPORT_BATCH_ROWS, Offloader, Settings, create_app

from tests.harness.databases import database_at_head
from tests.harness.tokens import FULL_ACCESS


@pytest.fixture
def export_database(tmp_path: Path) -> Iterator[str]:
    """A database of its own, migrated: the export reads through a pool of connections."""
    with database_at_head(tmp_path, "export") as url:
        yield url


async def test_an_export_waits_for_a_busy_pool_instead_of_breaking_off(
    export_database: str,
) -> None:
    # No guard, one offload thread and no line: what exposed the cut-off exports.
    settings = Settings(
        database_url=export_database, guard_enabled=False, offload_threads=1, offload_max_waiting=0
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with app.state.engine.begin() as connection:
            await connection.execute(text("INSERT INTO owner (name) VALUES ('Ada')"))
            await connection.execute(
                text(
                    "INSERT INTO item (name, description, price_cents, archived, owner_id,"
                    " created_at) SELECT 'item', '', 1, false, 1, CURRENT_TIMESTAMP"
                    " FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
                    " WHERE i < :rows) SELECT i FROM n) AS numbers"
                ),
                {"rows": EXPORT_BATCH_ROWS + 1},
            )
        offloader: Offloader = app.state.offloader
        release = threading.Event()
        messages: list[Message] = []
        blocker: asyncio.Task[bool] | None = None

        async def send(message: Message) -> None:
            nonlocal blocker
            messages.append(message)
            if message["type"] == "http.response.body" and blocker is None:
                # The 200 and the first batch are out: now take the only thread.
                blocker = asyncio.create_task(offloader.run(release.wait, 30))
                for _ in range(10_000):
                    if offloader.stats.running:
                        break
                    await asyncio.sleep(0)

        async def receive() -> Message:
            await asyncio.Event().wait()  # the client never goes
            raise AssertionError("unreachable")

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/owners/1/items.csv",
            "raw_path": b"/owners/1/items.csv",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"test"),
                (b"authorization", FULL_ACCESS["authorization"].encode()),
            ],
            "client": ("127.0.0.1", 1),
            "server": ("test", 80),
        }
        export = asyncio.create_task(app(scope, receive, send))
        for _ in range(100_000):  # until the next batch waits for the thread
            if offloader.stats.waiting == 1 or export.done():
                break
            await asyncio.sleep(0)
        release.set()
        await asyncio.wait_for(export, timeout=30)
        assert blocker is not None
        assert await blocker
    assert messages[0]["status"] == 200
    body = b"".join(message.get("body", b"") for message in messages[1:])
    assert body.count(b"\r\n") == 1 + EXPORT_BATCH_ROWS + 1, body[-200:]
    assert offloader.stats.rejected == 0
