"""Metrics in the Prometheus text format, and one log line per request with its id."""

import json
import logging
from dataclasses import dataclass, field

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from my_service import (
    GAUGE,
    CacheDep,
    ConcurrencyLimit,
    JsonLogFormatter,
    Settings,
    create_app,
    expect_queries,
    query_budget,
)

from tests.harness.tokens import FULL_ACCESS
from tests.harness.waiting import scrape

REQUEST_LOG = "my_service.requests"


async def duration_counts(client: httpx.AsyncClient) -> dict[tuple[str, str, str], float]:
    """How many requests the histogram saw, by (method, route, status)."""
    response = await client.get("/metrics")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    return {
        (sample.labels["method"], sample.labels["route"], sample.labels["status"]): sample.value
        for sample in families["http_request_duration_seconds"].samples
        if sample.name == "http_request_duration_seconds_count"
    }


async def test_metrics_are_the_prometheus_text_format_and_send_no_query(
    client: httpx.AsyncClient,
) -> None:
    with expect_queries(0):
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    families = {
        family.name: family.type for family in text_string_to_metric_families(response.text)
    }
    assert families["guard_admitted"] == "counter"
    assert families["guard_in_flight"] == "gauge"
    assert families["offload_threads"] == "gauge"
    assert families["offload_completed"] == "counter"
    assert families["http_request_duration_seconds"] == "histogram"


async def test_metrics_answer_while_the_guard_has_no_place_left(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    guard: ConcurrencyLimit = app.state.guard
    taken = [guard.try_acquire() for _ in range(guard.max_in_flight)]
    try:
        response = await client.get("/metrics")
    finally:
        for _ in taken:
            guard.release()
    assert response.status_code == 200
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    assert samples["guard_in_flight"] == guard.max_in_flight
    assert all(taken)


async def test_the_histogram_counts_requests_by_route_template_method_and_status(
    client: httpx.AsyncClient,
) -> None:
    for path in ("/health", "/health", "/no/such/path/1", "/no/such/path/2"):
        await client.get(path)
    await client.post("/health")
    await client.get("/openapi.json")
    counts = await duration_counts(client)
    assert counts[("GET", "/health", "200")] == 2
    assert counts[("POST", "/health", "405")] == 1
    assert counts[("GET", "/openapi.json", "200")] == 1
    # Unmatched paths share one label value, whatever the path: the series stay bounded.
    assert counts[("GET", "unmatched", "404")] == 2
    assert not any("/no/such" in route for _, route, _ in counts)
    for item_id in (1, 2, 3):
        await client.get(f"/items/{item_id}")
    counts = await duration_counts(client)
    assert counts[("GET", "/items/{item_id}", "404")] == 3


async def test_unusual_methods_share_one_label_value(client: httpx.AsyncClient) -> None:
    for method in ("BREW", "PROPFIND"):
        await client.request(method, "/health")
    counts = await duration_counts(client)
    assert counts[("OTHER", "/health", "405")] == 2


async def test_each_app_counts_for_itself() -> None:
    settings = Settings(database_url="sqlite+aiosqlite://")
    first, second = create_app(settings), create_app(settings)
    for app, requests in ((first, 3), (second, 1)):
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://test", headers=FULL_ACCESS
            ) as client:
                for _ in range(requests):
                    await client.get("/health")
                assert (await duration_counts(client))[("GET", "/health", "200")] == requests


async def test_a_new_stats_field_appears_in_the_metrics_without_more_code() -> None:
    @dataclass(slots=True)
    class ReplicaStats:
        lag: float = field(default=0.25, metadata=GAUGE)
        reconnects: int = 3
        host: str = "replica-1"

    @dataclass
    class Replica:
        stats: ReplicaStats = field(default_factory=ReplicaStats)

    app = create_app(Settings(database_url="sqlite+aiosqlite://"))
    app.state.replica = Replica()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=FULL_ACCESS
        ) as client:
            text = (await client.get("/metrics")).text
    samples = {
        sample.name: sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples["replica_lag"] == Sample("replica_lag", {}, 0.25)
    assert samples["replica_reconnects_total"].value == 3
    assert not any(name.startswith("replica_host") for name in samples)


async def test_one_line_per_request_with_route_status_queries_and_id(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=REQUEST_LOG):
        response = await client.get("/items/41")
    (record,) = [record for record in caplog.records if record.name == REQUEST_LOG]
    request_id = response.headers["x-request-id"]
    assert len(request_id) == 32
    assert record.request == {  # type: ignore[attr-defined]
        "method": "GET",
        "route": "/items/{item_id}",
        "status": 404,
        "duration_ms": record.request["duration_ms"],  # type: ignore[attr-defined]
        "queries": 1,
        "request_id": request_id,
    }
    assert record.getMessage().startswith("GET /items/{item_id} 404 ")
    assert record.getMessage().endswith(f" ms, 1 query, request {request_id}")


async def test_the_json_format_puts_each_field_on_its_own_key(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=REQUEST_LOG):
        await client.get("/health", headers={"x-request-id": "trace-7"})
    (record,) = [record for record in caplog.records if record.name == REQUEST_LOG]
    line = JsonLogFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "INFO"
    assert entry["logger"] == REQUEST_LOG
    assert (entry["method"], entry["route"], entry["status"]) == ("GET", "/health", 200)
    assert (entry["queries"], entry["request_id"]) == (0, "trace-7")


async def test_other_lines_carry_the_id_of_the_request_that_logged_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app(Settings(database_url="sqlite+aiosqlite://", slow_request_ms=0))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=FULL_ACCESS
        ) as client:
            with caplog.at_level(logging.INFO):
                await client.get("/health", headers={"x-request-id": "slow-1"})
    (slow,) = [record for record in caplog.records if "slow request" in record.getMessage()]
    assert json.loads(JsonLogFormatter().format(slow))["request_id"] == "slow-1"


@pytest.mark.parametrize(
    "given",
    [
        "9f1c2a7e-5b8d-4c3e-a6f0-1d2e3f4a5b6c",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "a" * 128,
    ],
)
async def test_a_valid_request_id_is_kept_and_returned(
    client: httpx.AsyncClient, given: str
) -> None:
    response = await client.get("/health", headers={"x-request-id": given})
    assert response.headers["x-request-id"] == given


@pytest.mark.parametrize(
    "given",
    [b"a" * 129, b"", b"with spaces", b'quote"', b"tab\t", "caf\u00e9".encode(), b"\xff\xfe"],
)
async def test_an_unsafe_or_overlong_request_id_is_replaced(
    client: httpx.AsyncClient, given: bytes
) -> None:
    response = await client.get("/health", headers=[(b"x-request-id", given)])
    returned = response.headers["x-request-id"]
    assert returned.encode() != given
    assert len(returned) == 32
    assert int(returned, 16) >= 0


async def test_every_response_carries_a_fresh_request_id(client: httpx.AsyncClient) -> None:
    ids = {(await client.get("/no/such/path")).headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


async def test_a_failing_route_is_counted_and_logged_as_a_500(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    @app.get("/fails")
    @query_budget(0)
    async def fails() -> None:
        raise RuntimeError("boom")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=FULL_ACCESS
    ) as client:
        with caplog.at_level(logging.INFO, logger=REQUEST_LOG):
            assert (await client.get("/fails")).status_code == 500
        (record,) = [record for record in caplog.records if record.name == REQUEST_LOG]
        assert record.request["status"] == 500  # type: ignore[attr-defined]
        counts = await duration_counts(client)
    assert counts[("GET", "/fails", "500")] == 1


async def test_metrics_report_the_cache_counters(app: FastAPI, client: httpx.AsyncClient) -> None:
    @query_budget(0)
    async def cached_answer(cache: CacheDep) -> dict[str, int]:
        async def compute() -> dict[str, int]:
            return {"answer": 42}

        return await cache.get_or_load("answer", 1, compute)

    app.get("/cached-answer")(cached_answer)
    for _ in range(3):
        await client.get("/cached-answer")
    with expect_queries(0):
        samples = await scrape(client)
    cache = {name: value for name, value in samples.items() if name.startswith("cache_")}
    assert cache == {
        "cache_hits_total": 2,
        "cache_misses_total": 1,
        "cache_loads_total": 1,
        "cache_coalesced_total": 0,
        "cache_load_errors_total": 0,
        "cache_bypassed_total": 0,
        "cache_notifications_sent_total": 0,
        "cache_invalidations_sent_total": 0,
        "cache_notification_failures_total": 0,
        "cache_notifications_received_total": 0,
        "cache_listener_reconnects_total": 0,
        "cache_listener_silences_total": 0,
        "cache_entries": 1,
    }
