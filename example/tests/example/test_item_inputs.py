"""Hostile and careless input to the example's routes: a 422 that names the value, never a 500.

Every integer the API takes is tried at the edges of the column types (int4 tops out at
2**31 - 1, BIGINT keys at 2**63 - 1), and as true; every text at NUL, an unpaired surrogate
and whitespace only; every field of a PATCH as null.
"""

import json
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import httpx
import pytest

from my_service import MAX_ECHOED_INPUT, expect_queries

from tests.example.api import create_item, create_owner

INT4_MAX, BIGINT_MAX = 2**31 - 1, 2**63 - 1


async def an_item(client: httpx.AsyncClient, name: str = "Lamp") -> dict[str, Any]:
    """An item of the first owner, who is made on the first call."""
    owners = (await client.get("/owners")).json()["items"]
    owner = owners[0] if owners else await create_owner(client)
    return await create_item(client, owner["id"], [], name)


def item_body(**fields: object) -> dict[str, object]:
    return {"name": "Lamp", "price_cents": 1, "owner_id": 1, **fields}


class Input(NamedTuple):
    """Where a request carries an integer: the request for a value, and the loc its 422 names."""

    request: Callable[[object], tuple[str, str, object]]
    loc: tuple[str | int, ...]


INTEGER_INPUTS = {
    "GET item_id": Input(lambda v: ("GET", f"/items/{v}", None), ("path", "item_id")),
    "PATCH item_id": Input(lambda v: ("PATCH", f"/items/{v}", {"name": "X"}), ("path", "item_id")),
    "DELETE item_id": Input(lambda v: ("DELETE", f"/items/{v}", None), ("path", "item_id")),
    "export owner_id": Input(
        lambda v: ("GET", f"/owners/{v}/items.csv", None), ("path", "owner_id")
    ),
    "list owner_id": Input(lambda v: ("GET", f"/items?owner_id={v}", None), ("query", "owner_id")),
    "list after": Input(lambda v: ("GET", f"/items?after={v}", None), ("query", "after")),
    "owners after": Input(lambda v: ("GET", f"/owners?after={v}", None), ("query", "after")),
    "tags after": Input(lambda v: ("GET", f"/tags?after={v}", None), ("query", "after")),
    "GET owner_id": Input(lambda v: ("GET", f"/owners/{v}", None), ("path", "owner_id")),
    "summary owner_id": Input(
        lambda v: ("GET", f"/owners/{v}/summary", None), ("path", "owner_id")
    ),
    "GET tag_id": Input(lambda v: ("GET", f"/tags/{v}", None), ("path", "tag_id")),
    "create owner_id": Input(
        lambda v: ("POST", "/items", item_body(owner_id=v)), ("body", "owner_id")
    ),
    "create tag_ids": Input(
        lambda v: ("POST", "/items", item_body(tag_ids=[v])), ("body", "tag_ids", 0)
    ),
    "update tag_ids": Input(
        lambda v: ("PATCH", "/items/1", {"tag_ids": [v]}), ("body", "tag_ids", 0)
    ),
}
INT4_INPUTS = {
    "create price_cents": Input(
        lambda v: ("POST", "/items", item_body(price_cents=v)), ("body", "price_cents")
    ),
    "update price_cents": Input(
        lambda v: ("PATCH", "/items/1", {"price_cents": v}), ("body", "price_cents")
    ),
}
BODY_INTEGER_INPUTS = {
    name: where for name, where in (INTEGER_INPUTS | INT4_INPUTS).items() if where.loc[0] == "body"
}


async def send(client: httpx.AsyncClient, request: tuple[str, str, object]) -> httpx.Response:
    method, url, body = request
    return await client.request(method, url, json=body)


def assert_refused(response: httpx.Response, loc: Sequence[str | int]) -> None:
    assert response.status_code == 422, response.text
    assert [error["loc"] for error in response.json()["detail"]] == [list(loc)]


@pytest.mark.parametrize("value", [0, BIGINT_MAX + 1], ids=["zero", "2**63"])
@pytest.mark.parametrize("case", INTEGER_INPUTS, ids=str)
async def test_an_id_no_key_can_have_is_a_422_naming_it(
    client: httpx.AsyncClient, case: str, value: int
) -> None:
    if value == 0 and case.endswith("after"):
        value = -1  # 0 is the cursor of the first page
    build, loc = INTEGER_INPUTS[case]
    await an_item(client)
    with expect_queries(0):
        response = await send(client, build(value))
    assert_refused(response, loc)


@pytest.mark.parametrize("value", [INT4_MAX + 1, BIGINT_MAX], ids=["2**31", "2**63-1"])
@pytest.mark.parametrize("case", INTEGER_INPUTS, ids=str)
async def test_an_id_a_key_can_have_is_answered_without_error(
    client: httpx.AsyncClient, case: str, value: int
) -> None:
    build, _ = INTEGER_INPUTS[case]
    await an_item(client)
    response = await send(client, build(value))
    # Not found, or an empty page, or a 422 saying which row does not exist: never a 500.
    assert response.status_code in {200, 404, 422}, response.text
    if response.status_code == 422:
        assert response.json()["detail"][0]["type"] == "not_found"


@pytest.mark.parametrize("value", [INT4_MAX + 1, -1], ids=["2**31", "-1"])
@pytest.mark.parametrize("case", INT4_INPUTS, ids=str)
async def test_a_price_an_int4_column_cannot_hold_is_a_422(
    client: httpx.AsyncClient, case: str, value: int
) -> None:
    build, loc = INT4_INPUTS[case]
    await an_item(client)
    assert_refused(await send(client, build(value)), loc)


async def test_the_largest_int4_price_is_stored_and_read_back(client: httpx.AsyncClient) -> None:
    created = await an_item(client)
    response = await client.patch(f"/items/{created['id']}", json={"price_cents": INT4_MAX})
    assert response.status_code == 200, response.text
    assert (await client.get(f"/items/{created['id']}")).json()["price_cents"] == INT4_MAX


@pytest.mark.parametrize("value", [True, False, 1.0, 1.5], ids=repr)
@pytest.mark.parametrize("case", BODY_INTEGER_INPUTS, ids=str)
async def test_a_body_integer_must_be_a_json_integer(
    client: httpx.AsyncClient, case: str, value: object
) -> None:
    build, loc = BODY_INTEGER_INPUTS[case]
    await an_item(client)
    assert_refused(await send(client, build(value)), loc)


@pytest.mark.parametrize("field", ["name", "description", "price_cents", "tag_ids"])
async def test_null_in_a_patch_is_a_422_naming_the_field_and_changes_nothing(
    client: httpx.AsyncClient, field: str
) -> None:
    created = await an_item(client)
    response = await client.patch(f"/items/{created['id']}", json={"name": "Desk", field: None})
    assert_refused(response, ["body", field])
    assert "null" in response.json()["detail"][0]["msg"]
    assert (await client.get(f"/items/{created['id']}")).json() == created


BAD_TEXT = {
    "NUL": "Lamp\x00",
    "unpaired surrogate": "Lamp\ud800",
    "whitespace only": " \t\n",
    "empty": "",
}


@pytest.mark.parametrize("text", BAD_TEXT, ids=str)
@pytest.mark.parametrize("path", ["/owners", "/tags", "/items"])
async def test_a_name_that_cannot_be_stored_or_is_blank_is_a_422(
    client: httpx.AsyncClient, path: str, text: str
) -> None:
    # json.dumps escapes the surrogate, as a client in another language would send it.
    fields = item_body() if path == "/items" else {}
    body = json.dumps({**fields, "name": BAD_TEXT[text]})
    headers = {"content-type": "application/json"}
    response = await client.post(path, content=body, headers=headers)
    assert_refused(response, ["body", "name"])
    assert (await client.get(path)).json()["items"] == []


@pytest.mark.parametrize("text", ["NUL", "unpaired surrogate"])
async def test_a_description_that_cannot_be_stored_is_a_422(
    client: httpx.AsyncClient, text: str
) -> None:
    created = await an_item(client)
    body = json.dumps({"description": BAD_TEXT[text]})
    headers = {"content-type": "application/json"}
    response = await client.patch(f"/items/{created['id']}", content=body, headers=headers)
    assert_refused(response, ["body", "description"])


async def test_a_long_name_is_refused_without_being_echoed(client: httpx.AsyncClient) -> None:
    response = await client.post("/owners", json={"name": "x" * 100_000})
    assert_refused(response, ["body", "name"])
    assert "input" not in response.json()["detail"][0]
    assert len(response.content) < 1000


async def test_a_short_bad_value_is_echoed(client: httpx.AsyncClient) -> None:
    name = "x" * (MAX_ECHOED_INPUT // 2)
    response = await client.post("/tags", json={"name": name})
    assert_refused(response, ["body", "name"])
    assert response.json()["detail"][0]["input"] == name


async def test_a_deleted_items_id_is_never_given_to_another(client: httpx.AsyncClient) -> None:
    await an_item(client, "first")
    last = await an_item(client, "second")
    assert (await client.delete(f"/items/{last['id']}")).status_code == 204
    replacement = await an_item(client, "third")
    assert replacement["id"] > last["id"]
    assert (await client.get(f"/items/{last['id']}")).status_code == 404
