"""Every collection of the example answers one page shape, and every resource has its GET by id."""

import httpx
import pytest
from fastapi import FastAPI

from my_service import MAX_PAGE_SIZE

COLLECTIONS = ["/items", "/owners", "/tags"]


@pytest.mark.parametrize("path", COLLECTIONS)
@pytest.mark.parametrize("limit", [0, MAX_PAGE_SIZE + 1])
async def test_every_list_refuses_a_page_size_out_of_bounds(
    client: httpx.AsyncClient, path: str, limit: int
) -> None:
    response = await client.get(path, params={"limit": limit})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "limit"]


@pytest.mark.parametrize("path", COLLECTIONS)
def test_the_openapi_schema_shows_one_page_shape_and_a_get_by_id(app: FastAPI, path: str) -> None:
    schema = app.openapi()
    components = schema["components"]["schemas"]
    operation = schema["paths"][path]["get"]
    reference = operation["responses"]["200"]["content"]["application/json"]["schema"]
    page = components[reference["$ref"].rsplit("/", 1)[-1]]
    assert list(page["properties"]) == ["items", "next_after"]
    parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}
    assert parameters["limit"]["schema"]["maximum"] == MAX_PAGE_SIZE
    assert "after" in parameters
    by_id = path + "/{" + path[1:-1] + "_id}"
    assert "get" in schema["paths"].get(by_id, {}), f"{path} has no GET {by_id}"
    read_model = path[1:-1].capitalize() + "Read"
    assert next(iter(components[read_model]["properties"])) == "id"
