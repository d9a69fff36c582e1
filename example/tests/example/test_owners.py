"""The example's owners: create, page and read one, with the exact queries of each."""

import httpx

from my_service import OwnerPage, OwnerRead, expect_queries

from tests.example.api import create_owner


async def test_create_owner_runs_one_insert(client: httpx.AsyncClient) -> None:
    with expect_queries(1):
        response = await client.post("/owners", json={"name": "Ada"})
    assert response.status_code == 201
    assert response.json() == {"id": 1, "name": "Ada"}


async def test_a_duplicate_owner_name_is_a_409_and_inserts_nothing(
    client: httpx.AsyncClient,
) -> None:
    await create_owner(client, "Ada")
    response = await client.post("/owners", json={"name": "Ada"})
    assert response.status_code == 409
    assert response.json() == {"detail": "an owner named 'Ada' already exists"}
    assert len((await client.get("/owners")).json()["items"]) == 1


async def test_owners_page_by_id_in_one_query(client: httpx.AsyncClient) -> None:
    for name in ("Ada", "Grace", "Edsger"):
        await create_owner(client, name)
    with expect_queries(1):
        first = (await client.get("/owners", params={"limit": 2})).json()
    OwnerPage.model_validate(first)  # the shape the OpenAPI schema promises
    assert first["next_after"] == first["items"][-1]["id"] == 2
    with expect_queries(1):
        second = (await client.get("/owners", params={"after": first["next_after"]})).json()
    assert second["next_after"] is None
    assert [row["name"] for row in first["items"] + second["items"]] == ["Ada", "Grace", "Edsger"]


async def test_get_owner_runs_one_query(client: httpx.AsyncClient) -> None:
    created = await create_owner(client, "Ada")
    with expect_queries(1):
        response = await client.get(f"/owners/{created['id']}")
    assert OwnerRead.model_validate(response.json()) == OwnerRead.model_validate(created)


async def test_get_missing_owner_is_a_404_in_one_query(client: httpx.AsyncClient) -> None:
    with expect_queries(1):
        response = await client.get("/owners/404")
    assert response.status_code == 404
    assert response.json() == {"detail": "no owner has id 404"}


async def test_a_created_owner_answers_the_body_its_get_answers(client: httpx.AsyncClient) -> None:
    created = await client.post("/owners", json={"name": "Ada"})
    fetched = await client.get(f"/owners/{created.json()['id']}")
    # The same bytes: the same fields, in the same order.
    assert created.content == fetched.content
    assert list(created.json()) == ["id", "name"]
