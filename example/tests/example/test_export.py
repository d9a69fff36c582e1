"""The example's CSV export: streamed in batches, formatted in a worker thread, holding no
connection while the client reads.
"""

import asyncio
import csv
import io
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event
from starlette.types import Message, Receive, Scope, Send

import my_service
from my_service import Item, expect_queries

from tests.example.api import create_owner, owner_with_items
from tests.harness.tokens import FULL_ACCESS


async def test_export_runs_two_queries_and_formats_the_csv_in_a_thread(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = (await client.post("/owners", json={"name": "Ada"})).json()
    for name in ("Lamp", "Desk, oak"):
        body = {"name": name, "price_cents": 100, "owner_id": owner["id"]}
        await client.post("/items", json=body)
    with expect_queries(2):
        response = await client.get(f"/owners/{owner['id']}/items.csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    header, *rows = csv.reader(io.StringIO(response.text))
    assert header == ["id", "name", "price_cents", "created_at"]
    assert [row[1] for row in rows] == ["Lamp", "Desk, oak"]
    assert app.state.offloader.stats.completed == 1
    assert "offload;dur=" in response.headers["server-timing"]


@pytest.mark.parametrize("rows", [9, 10])
async def test_an_export_of_many_batches_arrives_whole_and_in_order_one_query_a_batch(
    app: FastAPI,
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    rows: int,
) -> None:
    monkeypatch.setattr(my_service, "EXPORT_BATCH_ROWS", 3)
    owner_id = await owner_with_items(client, rows)
    # Not the test client: the route's budget covers its first batch only.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=FULL_ACCESS
    ) as raw_client:
        # The owner, then batches of 3, 3, 3 and the last one: 1 row, or none to say so.
        with expect_queries(1 + 4):
            response = await raw_client.get(f"/owners/{owner_id}/items.csv")
    assert response.status_code == 200
    header, *lines = csv.reader(io.StringIO(response.text))
    assert header == ["id", "name", "price_cents", "created_at"]
    assert [line[1] for line in lines] == [f"item {number}" for number in range(rows)]
    assert [int(line[0]) for line in lines] == sorted(int(line[0]) for line in lines)
    assert app.state.offloader.stats.completed == (4 if rows == 10 else 3)  # none for no rows
    # Within budget at run time: it covers what the route sends before the body starts.
    assert not [record for record in caplog.records if "over its budget" in record.getMessage()]


async def test_an_export_holds_no_connection_while_it_formats_or_sends(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(my_service, "EXPORT_BATCH_ROWS", 3)
    owner_id = await owner_with_items(client, 10)
    # The owner's summary is refreshed in the background, on a connection of its own: done
    # now, not while the export runs, on a machine slow enough to take the refresh's delay.
    await app.state.summaries.flush()
    checked_out = watch_checked_out_connections(app)
    while_formatting: list[int] = []
    while_sending: list[int] = []
    format_rows = my_service._csv_lines

    def format_and_watch(rows: Any) -> str:
        while_formatting.append(checked_out())
        return format_rows(rows)

    monkeypatch.setattr(my_service, "_csv_lines", format_and_watch)

    async def app_watching_sends(scope: Scope, receive: Receive, send: Send) -> None:
        async def watched_send(message: Message) -> None:
            if message["type"] == "http.response.body":
                while_sending.append(checked_out())
            await send(message)

        await app(scope, receive, watched_send)

    transport = httpx.ASGITransport(app=app_watching_sends)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=FULL_ACCESS
    ) as raw_client:
        response = await raw_client.get(f"/owners/{owner_id}/items.csv")
    assert response.status_code == 200
    assert while_formatting == [0, 0, 0, 0]
    assert while_sending[:4] == [0, 0, 0, 0]  # then the end of the body


async def test_a_client_that_goes_away_stops_the_export_and_frees_everything(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(my_service, "EXPORT_BATCH_ROWS", 3)
    owner_id = await owner_with_items(client, 30)
    checked_out = watch_checked_out_connections(app)
    requests = [{"type": "http.request", "body": b"", "more_body": False}]
    chunks: list[bytes] = []
    client_gone = asyncio.Event()
    held_while_stalled: list[int] = []

    async def receive() -> Message:
        if requests:
            return requests.pop()
        await client_gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            chunks.append(message["body"])
            if len(chunks) == 2:
                # The client stops reading, then goes away.
                held_while_stalled.append(checked_out())
                client_gone.set()
                await asyncio.Event().wait()

    path = f"/owners/{owner_id}/items.csv"
    with expect_queries(1 + 2):  # the owner and two batches, none after the client left
        await app(http_get(path), receive, send)
    assert len(chunks) == 2
    assert held_while_stalled == [0]
    assert checked_out() == 0
    assert app.state.offloader.stats.running == 0


async def test_an_export_neutralizes_cells_a_spreadsheet_would_run_as_formulas(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    owner = await create_owner(client)
    names = ["=1+2", "+SUM(A1)", "-2+3", "@cmd", "\tTab", "\rCR", "Plain - dash", "'quoted"]
    # Stored directly: the export must neutralize whatever the table holds.
    async with app.state.sessions() as session:
        session.add_all(Item(name=name, price_cents=1, owner_id=owner["id"]) for name in names)
        await session.commit()
    response = await client.get(f"/owners/{owner['id']}/items.csv")
    _, *lines = csv.reader(io.StringIO(response.text))
    assert [line[1] for line in lines] == [
        "'=1+2",
        "'+SUM(A1)",
        "'-2+3",
        "'@cmd",
        "'\tTab",
        "'\rCR",
        "Plain - dash",
        "'quoted",
    ]


async def test_export_of_a_missing_owner_is_a_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/owners/404/items.csv")
    assert response.status_code == 404
    assert response.json() == {"detail": "no owner has id 404"}


def watch_checked_out_connections(app: FastAPI) -> Callable[[], int]:
    """A function that tells how many connections the app's engine has checked out."""
    counts = {"checkout": 0, "checkin": 0}
    engine = app.state.engine.sync_engine
    for name in counts:

        def count(*_: object, name: str = name) -> None:
            counts[name] += 1

        event.listen(engine, name, count)
    return lambda: counts["checkout"] - counts["checkin"]


def http_get(path: str) -> Scope:
    """The ASGI scope of a plain GET of ``path``."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test"), (b"authorization", FULL_ACCESS["authorization"].encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
