"""Every route, fuzzed from the app's own OpenAPI schema: no 5xx, every answer as documented.

schemathesis reads the schema the app serves and sends each operation in it requests that
fit the schema and requests that do not, so routes you add are covered with no more work.
A route must never answer 5xx, must refuse with a 4xx every request its schema rules out
(a body field the schema does not declare among them: ``additionalProperties: false``), and
every answer must be listed in the route's OpenAPI ``responses`` with a body that matches.
It runs in process (ASGI) on the kind of database the suite uses, with a few generated rows
in every table so that requests reach past their 404s, seeded so that a failure comes back
on the next run, and bounded in examples. A failure prints the request that caused it as a
curl command; add that case to a test.
"""

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.types import ASGIApp, Receive, Scope, Send

from my_service import Settings, create_app

from tests.harness.databases import database_at_head, fill_every_table, migration_engine
from tests.harness.tokens import FULL_ACCESS

CHECKS = [
    not_a_server_error,
    negative_data_rejection,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


class _FuzzedApp:
    """The app the current route's requests go to: one per route, on a database of its own."""

    app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None, "the fuzzed_app fixture sets the app"
        await self.app(scope, receive, send)


# The schema does not depend on the database, so one app's serves every route's fuzzing.
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())
schema.app = fuzzed = _FuzzedApp()


@pytest.fixture
def fuzzed_app(tmp_path: Path) -> Iterator[None]:
    """Send the route's requests to an app on a new, migrated database of its own, with
    rows in every table.

    schemathesis runs the app's lifespan in its own event loop, so the app is made here
    rather than taken from the ``app`` fixture, whose loop is the test's.
    """
    with database_at_head(tmp_path, "fuzz") as url:
        asyncio.run(fill_every_table(migration_engine(url)))
        fuzzed.app = create_app(Settings(database_url=url))
        yield
        fuzzed.app = None


# The database is new for each route, not for each example (hence the health check left
# out): examples build on the rows earlier ones created.
@pytest.mark.usefixtures("fuzzed_app")
@schema.parametrize()
@settings(
    max_examples=40,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_route_answers_as_its_schema_says(case: schemathesis.Case[Any]) -> None:
    # The token schemathesis makes up for the bearer scheme is replaced with one that may call
    # every route, so the fuzz reaches what the routes do; a case that leaves the header out
    # on purpose keeps it out, and must be refused (tests/kit/test_access.py covers tokens).
    sent = {name.lower() for name in (case.headers or {})}
    headers = FULL_ACCESS if "authorization" in sent else {}
    case.call_and_validate(checks=CHECKS, headers=headers)
