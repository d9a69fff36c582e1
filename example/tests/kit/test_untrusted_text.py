"""Text from clients: an id is digits and nothing else, and no path can forge a log line."""

import logging

import httpx
import pytest
from fastapi import FastAPI
from pydantic import TypeAdapter, ValidationError

from my_service import Id, Int4, Settings, create_app, query_budget

from tests.harness.tokens import FULL_ACCESS


@pytest.mark.parametrize("text", ["\r\n1", " 1", "1 ", "1\n", "+1", "1_000", "0x1", "", "-"])
def test_an_id_in_text_is_digits_only(text: str) -> None:
    with pytest.raises(ValidationError, match="digits only"):
        TypeAdapter(Id).validate_python(text)


def test_ids_and_integers_in_digits_are_taken() -> None:
    assert TypeAdapter(Id).validate_python("42") == 42
    assert TypeAdapter(Int4).validate_python("-7") == -7


async def test_a_path_id_with_a_line_break_is_a_422(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    @app.get("/things/{thing_id}")
    @query_budget(0)
    async def get_thing(thing_id: Id) -> dict[str, int]:
        return {"id": thing_id}

    assert (await client.get("/things/1")).json() == {"id": 1}
    response = await client.get("/things/%0D%0A1")
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["path", "thing_id"]


async def test_the_slow_request_line_escapes_the_path(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(Settings(database_url=database_url, slow_request_ms=0))  # all slow
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=FULL_ACCESS
        ) as client,
    ):
        with caplog.at_level(logging.WARNING, logger="my_service"):
            await client.get("/nothing%0D%0A2030-01-01 00:00:00 WARNING forged: line")
    lines = [record.getMessage() for record in caplog.records]
    slow = [line for line in lines if line.startswith("slow request: GET /nothing")]
    assert len(slow) == 1, lines
    assert "\n" not in slow[0], slow
    assert "\r" not in slow[0], slow
    assert slow[0].startswith("slow request: GET /nothing\\r\\n2030-01-01 00:00:00 WARNING")
