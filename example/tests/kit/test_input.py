"""The input types and the error contract that every route, yours included, is built on."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import to_json
from sqlalchemy import BigInteger, Column, ForeignKey, Integer, MetaData, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.schema import CreateTable
from sqlmodel import SQLModel

from my_service import (
    MAX_ECHOED_INPUT,
    UNGUARDED_PATHS,
    Cursor,
    Id,
    Int4,
    Name,
    NonNegativeInt4,
    PartialUpdate,
    PlainText,
    dump_json,
    error_responses,
    key_column,
    query_budget,
    unprocessable,
)

# Engines that never connect: their dialects show the DDL each database would get.
POSTGRESQL = create_async_engine("postgresql+asyncpg://").dialect
SQLITE = create_async_engine("sqlite+aiosqlite://").dialect


@pytest.mark.parametrize(
    ("kind", "accepted", "refused"),
    [
        (Id, [1, 2**63 - 1, "42"], [0, -1, 2**63, True, False, 1.0, 1.5, "1.5", None]),
        (Cursor, [0, 2**63 - 1], [-1, 2**63, True]),
        (Int4, [-(2**31), 2**31 - 1], [-(2**31) - 1, 2**31, True]),
        (NonNegativeInt4, [0, 2**31 - 1], [-1, 2**31, False]),
    ],
    ids=["Id", "Cursor", "Int4", "NonNegativeInt4"],
)
def test_integer_types_take_what_their_column_holds(
    kind: Any, accepted: list[int | str], refused: list[object]
) -> None:
    adapter = TypeAdapter[int](kind)
    # Text is parsed: path and query parameters arrive as text.
    assert [adapter.validate_python(value) for value in accepted] == [int(v) for v in accepted]
    for value in refused:
        with pytest.raises(ValidationError):
            adapter.validate_python(value)


@pytest.mark.parametrize("text", ["a\x00b", "a\ud800b", "\udfff"], ids=repr)
def test_plain_text_refuses_what_the_database_cannot_store(text: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter[str](PlainText).validate_python(text)


@pytest.mark.parametrize("text", ["", " ", "\t\n", "\u3000"], ids=repr)
def test_a_name_needs_a_character_that_is_not_whitespace(text: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter[str](Name).validate_python(text)
    assert TypeAdapter[str](Name).validate_python(" Ada ") == " Ada "


class Rename(PartialUpdate):
    """A PATCH body as users write them."""

    name: Name | None = None
    rank: NonNegativeInt4 | None = None


def test_a_partial_update_refuses_null_but_not_a_missing_field() -> None:
    assert Rename.model_validate({}).model_fields_set == set()
    assert Rename.model_validate({"rank": 3}).model_dump(exclude_unset=True) == {"rank": 3}
    with pytest.raises(ValidationError) as refused:
        Rename.model_validate({"name": "Ada", "rank": None})
    assert [error["loc"] for error in refused.value.errors()] == [("rank",)]
    # The schema documents what is accepted: a value, or the field left out.
    properties = Rename.model_json_schema()["properties"]
    assert properties["rank"]["type"] == "integer"
    assert all("anyOf" not in field and "default" not in field for field in properties.values())


@pytest.fixture
def probe(app: FastAPI) -> FastAPI:
    """The app with two routes that fail the way routes of yours may."""

    @query_budget(0)
    async def rename(body: Rename) -> dict[str, str]:
        raise unprocessable(("body", "name"), "no one is called that", body.name, "not_found")

    @query_budget(0)
    async def show(thing_id: Id) -> dict[str, int]:
        return {"id": thing_id}

    app.post("/probe", responses=error_responses(404))(rename)
    app.get("/probe/{thing_id}")(show)
    return app


async def test_a_domain_error_has_the_validation_error_shape(
    probe: FastAPI, client: httpx.AsyncClient
) -> None:
    response = await client.post("/probe", json={"name": "Ada"})
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "loc": ["body", "name"],
                "msg": "no one is called that",
                "type": "not_found",
                "input": "Ada",
            }
        ]
    }


async def test_a_422_leaves_out_inputs_too_long_to_echo(
    probe: FastAPI, client: httpx.AsyncClient
) -> None:
    long = " " * 10 * MAX_ECHOED_INPUT
    response = await client.post("/probe", json={"name": long})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "name"]
    assert "input" not in error
    assert len(response.content) < 2 * MAX_ECHOED_INPUT
    short = await client.post("/probe", json={"name": " "})
    assert short.json()["detail"][0]["input"] == " "


async def test_a_422_for_an_unpaired_surrogate_is_not_a_500(
    probe: FastAPI, client: httpx.AsyncClient
) -> None:
    headers = {"content-type": "application/json"}
    response = await client.post("/probe", content=b'{"name": "\\ud800"}', headers=headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "name"]


async def test_an_id_out_of_range_is_a_422_naming_it(
    probe: FastAPI, client: httpx.AsyncClient
) -> None:
    assert (await client.get(f"/probe/{2**63 - 1}")).json() == {"id": 2**63 - 1}
    response = await client.get(f"/probe/{2**63}")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "thing_id"]


def test_openapi_lists_every_status_a_route_may_answer(probe: FastAPI) -> None:
    schema = probe.openapi()
    error = {"$ref": "#/components/schemas/ErrorMessage"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            where = f"{method.upper()} {path}"
            if "requestBody" in operation:
                for status_code in ("400", "408", "413"):
                    body = responses[status_code]["content"]["application/json"]["schema"]
                    assert body == error, where
            if path not in UNGUARDED_PATHS:
                assert responses["503"]["content"]["application/json"]["schema"] == error, where
    probe_responses = schema["paths"]["/probe"]["post"]["responses"]
    assert probe_responses["404"]["content"]["application/json"]["schema"] == error
    assert schema["components"]["schemas"]["ErrorMessage"]["required"] == ["detail"]


def test_every_integer_the_api_takes_has_bounds_in_its_schema(app: FastAPI) -> None:
    # A fuzzer tries the bounds a schema states; an integer with none gets a random size,
    # and whether the database can hold it is left to chance.
    schema = app.openapi()
    unbounded = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            inputs = [
                (f"{where} {parameter['in']} {parameter['name']}", parameter["schema"])
                for parameter in operation.get("parameters", [])
            ]
            for content in operation.get("requestBody", {}).get("content", {}).values():
                inputs.append((f"{where} body", content["schema"]))
            for name, input_schema in inputs:
                unbounded += [
                    name + part
                    for part, integer in integers(input_schema, schema["components"])
                    if "minimum" not in integer
                    or not {"maximum", "exclusiveMaximum"} & integer.keys()
                ]
    assert not unbounded, (
        f"integers without bounds: {unbounded}; use Id, Cursor, Int4 or NonNegativeInt4, "
        "or give the field ge= and le= from its column type"
    )


def integers(
    schema: Any, components: dict[str, Any], part: str = ""
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every integer schema within ``schema``, with where it is."""
    if not isinstance(schema, dict):
        return
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        yield from integers(components["schemas"][name], components, part)
        return
    if schema.get("type") == "integer":
        yield part, schema
    for name, field in schema.get("properties", {}).items():
        yield from integers(field, components, f"{part}.{name}")
    yield from integers(schema.get("items"), components, f"{part}[]")
    for choice in schema.get("anyOf", []) + schema.get("allOf", []) + schema.get("oneOf", []):
        yield from integers(choice, components, part)


def test_a_key_column_is_bigint_identity_and_never_reused_on_sqlite() -> None:
    metadata = MetaData()
    key = key_column()
    key.name = key.key = "id"  # SQLModel names it after the field
    parent = Table("parent", metadata, key, sqlite_autoincrement=True)
    child = Table("child", metadata, Column("parent_id", BigInteger, ForeignKey(parent.c.id)))
    assert "id BIGINT GENERATED BY DEFAULT AS IDENTITY" in ddl(parent, POSTGRESQL)
    assert "id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT" in ddl(parent, SQLITE)
    assert "parent_id BIGINT" in ddl(child, POSTGRESQL)


def test_every_table_keeps_its_keys_bigint_and_never_reuses_them() -> None:
    for table in SQLModel.metadata.sorted_tables:
        keys = list(table.primary_key.columns)
        # A key that is also a foreign key (one row per owner, say) takes its values from
        # the table it refers to, and has no ids of its own to reuse.
        surrogate = (
            len(keys) == 1
            and isinstance(keys[0].type.as_generic(), Integer)
            and not keys[0].foreign_keys
        )
        if surrogate:
            assert table.kwargs.get("sqlite_autoincrement"), (
                f"{table.name}: give __table_args__ sqlite_autoincrement=True, so that "
                "SQLite never hands a deleted row's id to another"
            )
        for column in [*keys, *(key.parent for key in table.foreign_keys)]:
            if isinstance(column.type.as_generic(), Integer):
                assert "BIGINT" in str(column.type.compile(POSTGRESQL)), (
                    f"{table.name}.{column.name}: use key_column() for a primary key, "
                    "sa_type=BigKey for a foreign key"
                )


def ddl(table: Table, dialect: Dialect) -> str:
    return " ".join(str(CreateTable(table).compile(dialect=dialect)).split())


class Priced(BaseModel):
    value: Decimal
    at: datetime


def test_answers_are_written_byte_for_byte_as_pydantic_writes_them() -> None:
    # The hot routes' fast writer must not change a byte of what clients and caches see.
    content = {
        "at": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        "whole_second": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "elsewhere": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))),
        "naive": datetime(2026, 1, 2, 3, 4, 5),
        "keys": {1: "one"},
        "model": Priced(value=Decimal("1.50"), at=datetime(2026, 1, 2, tzinfo=UTC)),
        "text": 'é \u2028 "quoted" \x00 </script>',
        "numbers": [0, -1, 2**63 - 1, 1.5, None, True],
    }
    assert dump_json(content) == to_json(content)
    # Past 64 bits (an input echoed in a 422) orjson cannot write: pydantic-core does.
    assert dump_json({"input": 2**64}) == to_json({"input": 2**64})
