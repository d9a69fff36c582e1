"""What the kit's input types and its /metrics say reads as written for people: a 422 names
what is wanted, without pydantic's "Value error, " and its empty ctx; each metric's HELP line
says what it counts.
"""

import re

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from my_service import Name, NonNegativeInt4, PartialUpdate, PlainText, query_budget


class Relabel(PartialUpdate):
    """A PATCH body of the kit's input types."""

    name: Name | None = None
    note: PlainText | None = None
    rank: NonNegativeInt4 | None = None


@pytest.fixture
def relabel(app: FastAPI) -> FastAPI:
    """The app with a route of yours that takes the kit's input types."""

    @app.patch("/labels/{label_id}")
    @query_budget(0)
    async def update_label(label_id: int, body: Relabel) -> dict[str, int]:
        return {"id": label_id}

    return app


@pytest.mark.parametrize(
    ("body", "refusal"),
    [
        ({"rank": True}, ("rank", "whole_number", "want a whole number")),
        ({"rank": 1.5}, ("rank", "whole_number", "want a whole number")),
        (
            {"name": " "},
            ("name", "not_blank", "want at least one character that is not whitespace"),
        ),
        ({"note": "a\x00b"}, ("note", "storable_text", "text may not contain the NUL character")),
        (
            {"name": None},
            ("name", "not_null", "leave the field out to keep its value; null is not a value"),
        ),
    ],
    ids=["boolean", "fraction", "blank", "NUL", "null"],
)
async def test_a_refusal_of_the_kits_types_reads_plainly(
    relabel: FastAPI, client: httpx.AsyncClient, body: dict[str, object], refusal: tuple[str, ...]
) -> None:
    response = await client.patch("/labels/1", json=body)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    field, kind, message = refusal
    assert (error["loc"], error["type"], error["msg"]) == (["body", field], kind, message)
    assert "ctx" not in error


async def test_every_metric_of_the_kit_says_what_it_counts(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics")
    families = list(text_string_to_metric_families(response.text))
    assert len(families) > 10, response.text
    # A HELP line that is a field's name ("GuardStats.limit") says nothing a name does not.
    unexplained = [
        f"{family.name}: {family.documentation!r}"
        for family in families
        if not family.documentation or re.fullmatch(r"\w+\.\w+", family.documentation)
    ]
    assert not unexplained, (
        "declare these fields with counter_field(description) or gauge_field(description):\n"
        + "\n".join(unexplained)
    )
