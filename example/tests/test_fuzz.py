"""Every route, fuzzed from the app's own OpenAPI schema: no 5xx, every answer as documented.

schemathesis reads the schema the app serves and sends each operation in it requests that
fit the schema and requests that do not, so routes you add are covered with no more work.
A route must never answer 5xx, and every answer must be listed in the route's OpenAPI
``responses`` with a body that matches. It runs in process (ASGI) on the database the suite
uses, seeded so that a failure comes back on the next run, and bounded in examples. A
failure prints the request that caused it as a curl command; add that case to a test.
"""

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import DATABASE_URL
from my_service import Settings, create_app

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

# schemathesis starts the app's lifespan at its first request and ends it after each test.
app = create_app(Settings(database_url=DATABASE_URL, create_tables=True))
schema = schemathesis.openapi.from_dict(app.openapi())
schema.app = app


# The app fixture empties the database once per route, not per example (hence the health
# check left out): examples build on the rows earlier ones created. The requests go to the
# app above.
@pytest.mark.usefixtures("app")
@schema.parametrize()
@settings(
    max_examples=40,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_route_answers_as_its_schema_says(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate(checks=CHECKS)
