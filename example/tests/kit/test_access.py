"""Who may call each route: every route declares it, and the attacks here are derived from
the declarations, for your routes as for the example's: the routes are the app's own, found
in it, not listed here.

For every route that needs a token: none, an expired one, one not valid yet, one for another
audience, and one with a bad signature are each a 401; a token that lacks one of the route's
scopes is a 403 naming them; none of these costs a statement. A token holding the route's
scopes gets past the check, and a public route needs none.
"""

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Mount

from my_service import (
    AUTHENTICATED,
    Access,
    AccessSettings,
    Settings,
    access_of,
    api_routes,
    create_app,
    expect_queries,
    mint_token,
)

from tests.harness.tokens import TEST_SUBJECT, bearer, declared_scopes


def rule(route: APIRoute) -> Access:
    return access_of(route.endpoint) or AUTHENTICATED


APP = create_app(Settings())
ROUTES = [
    (method, route) for route in api_routes(APP.routes) for method in sorted(route.methods or ())
]
PROTECTED = [(method, route) for method, route in ROUTES if rule(route).authenticated]
SCOPED = [(method, route) for method, route in PROTECTED if rule(route).scopes]
EVERY_SCOPE = declared_scopes(APP)


def name(case: tuple[str, APIRoute]) -> str:
    method, route = case
    return f"{method} {route.path}"


def target(route: APIRoute) -> str:
    # Any value for each path parameter: the check comes before they are read.
    return re.sub(r"\{[^}]+\}", "1", route.path)


@pytest.mark.parametrize("case", ROUTES, ids=name)
def test_every_route_declares_who_may_call_it(case: tuple[str, APIRoute]) -> None:
    method, route = case
    assert access_of(route.endpoint) is not None, (
        f"{method} {route.path} declares no access, so it takes any valid token: decorate "
        f"{route.endpoint.__name__} with @access(PUBLIC), @access(AUTHENTICATED) or "
        '@access("<scope>", ...) as its callers need'
    )


def test_no_route_escapes_the_check_in_a_mounted_app() -> None:
    mounted = [
        route.path
        for route in APP.routes
        if isinstance(route, Mount) and getattr(route.app, "routes", None)
    ]
    assert not mounted, (
        f"the routes of the app mounted at {', '.join(mounted)} escape the access check (and "
        "the budgets): include its router (app.include_router) instead of mounting an app"
    )


@pytest.fixture
async def anonymous(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the service that sends no token unless a request does."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


BAD_TOKENS: dict[str, dict[str, Any]] = {
    "an expired token": {"exp": 1_000_000_000},
    "a token not valid yet": {"nbf": 4_000_000_000, "exp": 4_000_003_600},
    "a token for another audience": {"aud": "another-service"},
}


@pytest.mark.parametrize("case", PROTECTED, ids=name)
async def test_the_route_refuses_callers_without_a_valid_token(
    anonymous: httpx.AsyncClient, case: tuple[str, APIRoute]
) -> None:
    method, route = case
    with expect_queries(0):
        response = await anonymous.request(method, target(route))
    assert response.status_code == 401, f"{name(case)} answered a request without a token"
    assert response.headers["www-authenticate"] == "Bearer"
    attempts = {what: bearer(EVERY_SCOPE, **claims) for what, claims in BAD_TOKENS.items()}
    forged = mint_token(
        AccessSettings(auth_secret="another secret, not the service's"), TEST_SUBJECT
    )
    attempts["a token signed with another key"] = {"authorization": f"Bearer {forged}"}
    for what, headers in attempts.items():
        with expect_queries(0):
            response = await anonymous.request(method, target(route), headers=headers)
        assert response.status_code == 401, f"{name(case)} took {what}"
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith('Bearer error="invalid_token"'), challenge
        assert response.json()["detail"], response.text


@pytest.mark.parametrize("case", SCOPED, ids=name)
async def test_the_route_refuses_a_token_without_each_of_its_scopes(
    anonymous: httpx.AsyncClient, case: tuple[str, APIRoute]
) -> None:
    method, route = case
    scopes = rule(route).scopes
    for scope in sorted(scopes):
        with expect_queries(0):
            response = await anonymous.request(
                method, target(route), headers=bearer(EVERY_SCOPE - {scope})
            )
        assert response.status_code == 403, f"{name(case)} served a token without {scope}"
        needed = " ".join(sorted(scopes))
        assert response.headers["www-authenticate"] == (
            f'Bearer error="insufficient_scope", scope="{needed}"'
        )
        assert needed in response.json()["detail"]


@pytest.mark.parametrize("case", ROUTES, ids=name)
async def test_the_route_lets_the_callers_it_allows_past_the_check(
    anonymous: httpx.AsyncClient, case: tuple[str, APIRoute]
) -> None:
    method, route = case
    declared = rule(route)
    headers = bearer(declared.scopes) if declared.authenticated else {}
    response = await anonymous.request(method, target(route), headers=headers)
    # What the route then answers (a 404 for the made-up id, a 422 for the missing body) is
    # its own tests' to check.
    assert response.status_code not in (401, 403), (
        f"{name(case)} refused a caller its declaration allows: {response.text}"
    )


WITH_BODY = [(method, route) for method, route in PROTECTED if route.body_field is not None]
NOT_JSON = b'{"name": '


@pytest.mark.parametrize("case", WITH_BODY, ids=name)
async def test_a_body_that_is_not_json_is_refused_as_the_caller_is_first(
    anonymous: httpx.AsyncClient, case: tuple[str, APIRoute]
) -> None:
    # FastAPI parses a JSON body before any dependency runs, the access check included.
    method, route = case
    scopes = rule(route).scopes
    callers = {"no token": ({}, 401), "a token the route allows": (bearer(scopes), 422)}
    if scopes:
        callers["a token without the route's scopes"] = (bearer(), 403)
    for who, (headers, expected) in callers.items():
        with expect_queries(0):
            response = await anonymous.request(
                method,
                target(route),
                content=NOT_JSON,
                headers={**headers, "content-type": "application/json"},
            )
        assert response.status_code == expected, (
            f"{name(case)} answered a body that is not JSON from {who} with "
            f"{response.status_code}, not {expected}: {response.text}"
        )


def test_openapi_names_the_scheme_and_each_routes_scopes() -> None:
    schema = APP.openapi()
    scheme = schema["components"]["securitySchemes"]["bearerAuth"]
    assert scheme == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    for method, route in ROUTES:
        operation = schema["paths"][route.path][method.lower()]
        declared = rule(route)
        if declared.authenticated:
            assert operation["security"] == [{"bearerAuth": sorted(declared.scopes)}]
            assert "401" in operation["responses"]
            assert ("403" in operation["responses"]) == bool(declared.scopes)
        else:
            assert "security" not in operation, name((method, route))
