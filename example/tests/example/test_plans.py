"""The database reads the example's tables through indexes, by its own query plans.

Each test seeds enough rows that a planner prefers an index where one serves, refreshes the
planner's statistics, captures the statements a route really sends, and asks the database how
it would run exactly those: ``EXPLAIN (FORMAT JSON)`` on PostgreSQL, ``EXPLAIN QUERY PLAN``
on SQLite. A large table read in full, or searched by an index that does not serve the
route's filter (the filter applied row by row instead), fails with the plan.
"""

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from my_service import (
    Item,
    ItemTagLink,
    Owner,
    QueryRecorder,
    Tag,
    record_queries,
    refresh_owner_summaries,
)

OWNERS, TAGS, ITEMS = 2_000, 40, 10_000
# One item in ARCHIVED_EVERY is archived: enough that an index of live rows only is smaller.
ARCHIVED_EVERY = 3

# Tables large enough in production that reading one in full is a bug; tags stay few.
LARGE_TABLES = ("item", "itemtaglink", "owner", "ownersummary")


@dataclass
class Plan:
    """How the database reads each table for the statements of one request."""

    described: list[str] = field(default_factory=list)
    scanned: set[str] = field(default_factory=set)
    searched: dict[str, list[str]] = field(default_factory=dict)
    indexes: set[str] = field(default_factory=set)

    def assert_searched(self, table: str, column: str) -> None:
        """``table`` is read through an index whose search condition uses ``column``."""
        conditions = self.searched.get(table, [])
        # SQLite names an INTEGER PRIMARY KEY "rowid" in its plans.
        primary_key = [key.name for key in SQLModel.metadata.tables[table].primary_key]
        names = {column, "rowid"} if primary_key == [column] else {column}
        assert any(
            re.search(rf"(?<![\w.]){name}\b", condition)
            for condition in conditions
            for name in names
        ), f"{table} is not searched by an index on {column}:\n{self}"

    def assert_uses_index(self, index: str) -> None:
        """The database reads through ``index``, by name."""
        assert index in self.indexes, f"{index} is not used:\n{self}"

    def assert_no_full_scan(self) -> None:
        """No large table is read in full."""
        scanned = sorted(self.scanned & set(LARGE_TABLES))
        assert not scanned, f"full scan of {scanned}:\n{self}"

    def __str__(self) -> str:
        return "\n".join(self.described)


@pytest.fixture
async def seeded(app: FastAPI) -> FastAPI:
    """The service on a database with enough rows that indexes pay, statistics fresh."""
    engine: AsyncEngine = app.state.engine
    created = datetime(2025, 1, 1, tzinfo=UTC)
    async with engine.begin() as connection:
        owners = [{"id": n, "name": f"owner {n}"} for n in range(1, OWNERS + 1)]
        await connection.execute(insert(Owner), owners)
        tags = [{"id": n, "name": f"tag {n}"} for n in range(1, TAGS + 1)]
        await connection.execute(insert(Tag), tags)
        items = [
            {
                "id": n,
                "name": f"item {n}",
                "description": "",
                "price_cents": n,
                "owner_id": n % OWNERS + 1,
                "archived": n % ARCHIVED_EVERY == 0,
                "created_at": created,
            }
            for n in range(1, ITEMS + 1)
        ]
        await connection.execute(insert(Item), items)
        links = [
            {"item_id": n, "tag_id": (n + 7 * k) % TAGS + 1}
            for n in range(1, ITEMS + 1)
            for k in range(n % 4)
        ]
        await connection.execute(insert(ItemTagLink), links)
    await refresh_owner_summaries(engine, frozenset(range(1, OWNERS + 1)))
    async with engine.begin() as connection:
        await connection.execute(text("ANALYZE"))
    return app


async def plan_of(app: FastAPI, recorder: QueryRecorder) -> Plan:
    """The database's plan for every statement in ``recorder``, run exactly as captured."""
    engine: AsyncEngine = app.state.engine
    plan = Plan()
    async with engine.connect() as connection:
        for query in recorder.queries:
            plan.described.append(f"for: {' '.join(query.statement.split())}")
            parameters = tuple(query.parameters or ())
            if engine.dialect.name == "postgresql":
                result = await connection.exec_driver_sql(
                    f"EXPLAIN (FORMAT JSON) {query.statement}", parameters
                )
                document = result.scalar_one()
                nodes = json.loads(document) if isinstance(document, str) else document
                _read_postgresql(nodes[0]["Plan"], plan)
            else:
                result = await connection.exec_driver_sql(
                    f"EXPLAIN QUERY PLAN {query.statement}", parameters
                )
                _read_sqlite([str(row[-1]) for row in result], plan)
    return plan


def _read_postgresql(node: dict[str, Any], plan: Plan) -> None:
    table = node.get("Relation Name")
    kind = node["Node Type"]
    if table is not None and kind == "Seq Scan":
        plan.scanned.add(table)
    elif table is not None and kind in ("Index Scan", "Index Only Scan", "Bitmap Heap Scan"):
        condition = node.get("Index Cond") or node.get("Recheck Cond") or ""
        plan.searched.setdefault(table, []).append(condition)
    if "Index Name" in node:
        plan.indexes.add(node["Index Name"])
    index = f" using {node['Index Name']}" if "Index Name" in node else ""
    where = f" on {table}" if table else ""
    condition = node.get("Index Cond") or node.get("Recheck Cond") or node.get("Filter") or ""
    plan.described.append(f"  {kind}{where}{index} {condition}".rstrip())
    for child in node.get("Plans", []):
        _read_postgresql(child, plan)


_SQLITE_STEP = re.compile(r"^(SCAN|SEARCH)(?: TABLE)? (\w+)(?: AS \w+)?(.*)$")
_SQLITE_INDEX = re.compile(r"USING (?:COVERING )?INDEX (\w+)")


def _read_sqlite(details: list[str], plan: Plan) -> None:
    for detail in details:
        plan.described.append(f"  {detail}")
        step = _SQLITE_STEP.match(detail)
        if step is None:
            continue
        # An aliased table shows under its alias (owner_1); the table is the name before it.
        kind, table, rest = step.group(1), re.sub(r"_\d+$", "", step.group(2)), step.group(3)
        plan.indexes.update(_SQLITE_INDEX.findall(rest))
        if kind == "SCAN":
            plan.scanned.add(table)
        else:
            plan.searched.setdefault(table, []).append(rest)


async def plan_of_get(app: FastAPI, client: httpx.AsyncClient, path: str, **params: int) -> Plan:
    """GET ``path`` and return the plan of what it sent, having checked no large table is
    read in full.
    """
    with record_queries() as recorder:
        response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    plan = await plan_of(app, recorder)
    plan.assert_no_full_scan()
    return plan


async def test_list_items_reads_items_by_primary_key_and_tags_by_item(
    seeded: FastAPI, client: httpx.AsyncClient
) -> None:
    plan = await plan_of_get(seeded, client, "/items", after=ITEMS // 2, limit=50)
    plan.assert_searched("item", "id")
    plan.assert_searched("itemtaglink", "item_id")


async def test_live_items_of_an_owner_are_read_through_the_partial_index(
    seeded: FastAPI, client: httpx.AsyncClient
) -> None:
    plan = await plan_of_get(seeded, client, "/items", owner_id=7, limit=50)
    plan.assert_searched("item", "owner_id")
    plan.assert_uses_index("ix_item_live_owner_id_id")


async def test_all_items_of_an_owner_are_read_through_the_owner_index(
    seeded: FastAPI, client: httpx.AsyncClient
) -> None:
    plan = await plan_of_get(seeded, client, "/items", owner_id=7, include_archived=1)
    plan.assert_searched("item", "owner_id")
    plan.assert_uses_index("ix_item_owner_id")


async def test_owner_summary_is_read_by_key(seeded: FastAPI, client: httpx.AsyncClient) -> None:
    plan = await plan_of_get(seeded, client, f"/owners/{OWNERS // 3}/summary")
    plan.assert_searched("owner", "id")
    plan.assert_searched("ownersummary", "owner_id")


async def test_refreshing_summaries_reads_only_the_marked_owners_items(
    seeded: FastAPI,
) -> None:
    with record_queries() as recorder:
        await refresh_owner_summaries(seeded.state.engine, frozenset({7, 8, 9}))
    plan = await plan_of(seeded, recorder)
    plan.assert_no_full_scan()
    plan.assert_searched("owner", "id")
    plan.assert_searched("item", "owner_id")


async def test_get_item_reads_the_item_and_its_tags_by_key(
    seeded: FastAPI, client: httpx.AsyncClient
) -> None:
    plan = await plan_of_get(seeded, client, f"/items/{ITEMS // 3}")
    plan.assert_searched("item", "id")
    plan.assert_searched("itemtaglink", "item_id")


async def test_list_owners_pages_through_the_primary_key(
    seeded: FastAPI, client: httpx.AsyncClient
) -> None:
    plan = await plan_of_get(seeded, client, "/owners", after=OWNERS // 2, limit=50)
    plan.assert_searched("owner", "id")


async def test_get_owner_reads_by_primary_key(seeded: FastAPI, client: httpx.AsyncClient) -> None:
    plan = await plan_of_get(seeded, client, f"/owners/{OWNERS // 2}")
    plan.assert_searched("owner", "id")
