"""A failure no one handled: the error contract's JSON 500, with the request id and the
Server-Timing header, and the traceback logged under the same id; never the exception's text.
"""

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from my_service import query_budget

from tests.harness import serving
from tests.harness.tokens import FULL_ACCESS

# What the failing routes raise: it must reach the log, never the client.
SECRET = "the password is hunter2"

FAILING_APP = f"""
from my_service import PUBLIC, access, create_app, query_budget

app = create_app()


@app.get("/fails")
@query_budget(0)
@access(PUBLIC)
async def fails() -> None:
    raise RuntimeError({SECRET!r})
"""


@pytest.fixture
def failing(app: FastAPI) -> FastAPI:
    """The app with a route of yours that raises before it answers, and one that raises
    once its answer has started.
    """

    @app.get("/fails")
    @query_budget(0)
    async def fails() -> None:
        raise RuntimeError(SECRET)

    async def cut_short() -> AsyncIterator[str]:
        yield "first line\n"
        raise RuntimeError(SECRET)

    @app.get("/fails-midway")
    @query_budget(0)
    async def fails_midway() -> StreamingResponse:
        return StreamingResponse(cut_short(), media_type="text/plain")

    return app


def assert_the_error_contracts_500(response: httpx.Response) -> None:
    assert response.status_code == 500, response.text
    assert response.headers["content-type"] == "application/json"
    request_id = response.headers["x-request-id"]
    assert response.json() == {
        "detail": "the service failed to answer; its log tells why under this request_id",
        "request_id": request_id,
    }
    assert response.headers["server-timing"].startswith("db;dur=")
    assert SECRET not in response.text


async def test_an_unhandled_exception_is_a_json_500_with_the_request_id(
    failing: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    # No raise_app_exceptions=False: the exception must not leave the app at all.
    transport = httpx.ASGITransport(app=failing)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=FULL_ACCESS
    ) as client:
        with caplog.at_level(logging.INFO):
            response = await client.get("/fails", headers={"x-request-id": "req-42"})
    assert_the_error_contracts_500(response)
    assert response.headers["x-request-id"] == "req-42"
    [failure] = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert failure.getMessage() == "GET /fails failed, request req-42"
    assert failure.request_id == "req-42"  # type: ignore[attr-defined]
    assert failure.exc_info is not None
    assert SECRET in caplog.text  # the traceback, in the log only
    [logged] = [record for record in caplog.records if hasattr(record, "request")]
    assert logged.request["status"] == 500


async def test_an_exception_after_the_response_started_is_logged_with_the_request_id(
    failing: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    # It goes on to the server, which closes the connection: the client gets what was sent.
    transport = httpx.ASGITransport(app=failing, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=FULL_ACCESS
    ) as client:
        with caplog.at_level(logging.INFO):
            response = await client.get("/fails-midway", headers={"x-request-id": "req-43"})
    assert response.status_code == 200
    assert response.text == "first line\n"
    [failure] = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert failure.getMessage() == "GET /fails-midway failed, request req-43"
    assert failure.exc_info is not None


def test_uvicorn_sends_the_json_500_and_not_its_own(tmp_path: Path) -> None:
    with serving(tmp_path, FAILING_APP, {}) as port:
        response = httpx.get(f"http://127.0.0.1:{port}/fails", timeout=10)
        assert_the_error_contracts_500(response)
        # The connection is still good for the next request.
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
