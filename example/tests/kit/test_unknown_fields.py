"""A field a body does not declare is a 422 naming it, on every route that takes a body, yours
included: the routes are the app's own, found in it, not listed here.

Pydantic drops unknown fields by default, and the request then answers as if it had done
what it asked: a PATCH of a field the route never changes is a 200, a misspelt field a 201
without it. Every body schema derives from ``InputSchema``, which refuses them.
"""

import re
import typing
from collections.abc import Iterator
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel

from my_service import Settings, api_routes, create_app

from tests.harness.tokens import FULL_ACCESS

ROUTES = [route for route in api_routes(create_app(Settings()).routes) if route.body_field]
# A name no schema declares.
UNKNOWN = "field_no_schema_declares"


def lax_models(annotation: Any, seen: set[type[BaseModel]]) -> Iterator[type[BaseModel]]:
    """The models in ``annotation``, at any depth (``list[ItemCreate]`` too), that drop the
    fields they do not declare.
    """
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in seen:
            return
        seen.add(annotation)
        if annotation.model_config.get("extra") != "forbid":
            yield annotation
        for field in annotation.model_fields.values():
            yield from lax_models(field.annotation, seen)
    else:
        for argument in typing.get_args(annotation):
            yield from lax_models(argument, seen)


def name(route: APIRoute) -> str:
    return f"{'/'.join(sorted(route.methods or ()))} {route.path}"


def test_every_body_schema_refuses_fields_it_does_not_declare() -> None:
    problems = []
    for route in ROUTES:
        parameters = route.dependant.body_params
        if len(parameters) > 1 or any(
            getattr(parameter.field_info, "embed", False) for parameter in parameters
        ):
            names = ", ".join(parameter.name for parameter in parameters)
            problems.append(
                f"{name(route)} takes its body as parameters ({names}), and the model FastAPI "
                "makes of them drops unknown fields: take one body model derived from InputSchema"
            )
        seen: set[type[BaseModel]] = set()
        for parameter in parameters:
            for model in lax_models(parameter.field_info.annotation, seen):
                problems.append(
                    f"{name(route)}: {model.__name__} drops the fields it does not declare; "
                    f"derive it from InputSchema (class {model.__name__}(..., InputSchema)) so "
                    "that a field a client misspelt, or one the route never changes, is a 422 "
                    "naming it"
                )
    assert not problems, "\n".join(problems)


def test_the_openapi_schema_says_every_body_refuses_unknown_fields() -> None:
    schema = create_app(Settings()).openapi()
    components = schema["components"]["schemas"]
    open_bodies = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is None:
                continue
            reference = body["schema"].get("$ref", "")
            body_schema = components.get(reference.rpartition("/")[2], body["schema"])
            if (
                body_schema.get("type") == "object"
                and body_schema.get("additionalProperties") is not False
            ):
                open_bodies.append(f"{method.upper()} {path}")
    assert not open_bodies, f"bodies without additionalProperties: false: {open_bodies}"


async def test_a_body_with_a_field_it_does_not_declare_is_a_422_naming_it(app: FastAPI) -> None:
    # Pydantic reports every error of a body at once: the unknown field is named whatever
    # else the body lacks. Not through the client fixture, which would count the routes as
    # tested by you.
    transport = httpx.ASGITransport(app=app)
    accepted = []
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=FULL_ACCESS
    ) as client:
        for route in ROUTES:
            path = re.sub(r"\{[^}]+\}", "1", route.path)
            for method in sorted(route.methods or ()):
                response = await client.request(method, path, json={UNKNOWN: 1})
                named = response.status_code == 422 and any(
                    error["loc"] == ["body", UNKNOWN] and error["type"] == "extra_forbidden"
                    for error in response.json()["detail"]
                )
                if not named:
                    accepted.append(f"{method} {path}: {response.status_code} {response.text}")
    assert not accepted, "\n".join(accepted)
