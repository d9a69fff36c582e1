"""Profiling one request in development: off by default, the report instead of the response."""

import sys
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import HTTPException

from my_service import Settings, SettingsError, create_app, query_budget

from tests.harness.tokens import FULL_ACCESS


@query_budget(0)
async def spend_some_cpu() -> dict[str, int]:
    """A route slow enough that the profiler catches it many times."""
    return {"total": sum(number * number for number in range(300_000))}


@query_budget(0)
async def missing() -> None:
    """A route that answers 404."""
    raise HTTPException(404, "nothing here")


@pytest.fixture
async def profiling_client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app with PROFILING_ENABLED=true."""
    app = create_app(Settings(database_url=database_url, profiling_enabled=True))
    app.get("/busy")(spend_some_cpu)
    app.get("/missing")(missing)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=FULL_ACCESS
        ) as client,
    ):
        yield client


def test_profiling_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env().profiling_enabled is False
    monkeypatch.setenv("PROFILING_ENABLED", "true")
    assert Settings.from_env().profiling_enabled is True


async def test_the_profile_parameter_is_ignored_while_profiling_is_off(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/health", params={"profile": "1"})
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "x-profiled-status" not in response.headers


async def test_a_profiled_request_answers_the_html_report(
    profiling_client: httpx.AsyncClient,
) -> None:
    response = await profiling_client.get("/busy", params={"profile": "1"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["x-profiled-status"] == "200"
    assert response.headers["cache-control"] == "no-store"
    assert "pyinstrument" in response.text
    assert "spend_some_cpu" in response.text
    # Still inside Server-Timing: the report comes with the request's query count.
    assert 'desc="0 queries"' in response.headers["server-timing"]


async def test_a_text_profile_shows_where_the_route_spends_its_time(
    profiling_client: httpx.AsyncClient,
) -> None:
    response = await profiling_client.get("/busy", params={"profile": "text"})
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert "spend_some_cpu" in response.text


async def test_a_profiled_request_reports_the_status_it_would_have_answered(
    profiling_client: httpx.AsyncClient,
) -> None:
    response = await profiling_client.get("/missing", params={"profile": "text"})
    assert response.status_code == 200
    assert response.headers["x-profiled-status"] == "404"


@pytest.mark.parametrize("value", ["0", "", "yes"])
async def test_other_values_of_profile_answer_the_response(
    profiling_client: httpx.AsyncClient, value: str
) -> None:
    response = await profiling_client.get("/health", params={"profile": value})
    assert response.json() == {"status": "ok"}
    assert "x-profiled-status" not in response.headers


def test_profiling_without_pyinstrument_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyinstrument", None)
    with pytest.raises(SettingsError, match="PROFILING_ENABLED=true needs pyinstrument"):
        create_app(Settings(profiling_enabled=True))
