"""The example's tags: create, page and read one, with the exact queries of each."""

import httpx

from my_service import TagPage, TagRead, expect_queries

from tests.example.api import create_tag


async def test_create_tag_runs_one_insert(client: httpx.AsyncClient) -> None:
    with expect_queries(1):
        response = await client.post("/tags", json={"name": "red"})
    assert response.status_code == 201
    assert response.json() == {"id": 1, "name": "red"}


async def test_a_duplicate_tag_name_is_a_409_and_inserts_nothing(
    client: httpx.AsyncClient,
) -> None:
    await create_tag(client, "red")
    response = await client.post("/tags", json={"name": "red"})
    assert response.status_code == 409
    assert response.json() == {"detail": "a tag named 'red' already exists"}
    assert len((await client.get("/tags")).json()["items"]) == 1


async def test_tags_page_by_id_in_one_query(client: httpx.AsyncClient) -> None:
    for name in ("red", "green", "blue"):
        await create_tag(client, name)
    with expect_queries(1):
        first = (await client.get("/tags", params={"limit": 2})).json()
    TagPage.model_validate(first)  # the shape the OpenAPI schema promises
    assert first["next_after"] == first["items"][-1]["id"] == 2
    with expect_queries(1):
        second = (await client.get("/tags", params={"after": first["next_after"]})).json()
    assert second["next_after"] is None
    assert [row["name"] for row in first["items"] + second["items"]] == ["red", "green", "blue"]


async def test_get_tag_runs_one_query(client: httpx.AsyncClient) -> None:
    created = await create_tag(client, "red")
    with expect_queries(1):
        response = await client.get(f"/tags/{created['id']}")
    assert TagRead.model_validate(response.json()) == TagRead.model_validate(created)


async def test_get_missing_tag_is_a_404_in_one_query(client: httpx.AsyncClient) -> None:
    with expect_queries(1):
        response = await client.get("/tags/404")
    assert response.status_code == 404
    assert response.json() == {"detail": "no tag has id 404"}


async def test_a_created_tag_answers_the_body_its_get_answers(client: httpx.AsyncClient) -> None:
    created = await client.post("/tags", json={"name": "red"})
    fetched = await client.get(f"/tags/{created.json()['id']}")
    # The same bytes: the same fields, in the same order.
    assert created.content == fetched.content
    assert list(created.json()) == ["id", "name"]
