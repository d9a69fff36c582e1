"""The example's revisions on databases with rows: 0001 adopts what the service built before
it had migrations, 0002 fills the owners' summaries and hands out no id twice. The tests
migrate to 0002, whatever revisions of yours follow it.

Each test has a database of its own, of the kind the suite runs on (SQLite, or a throwaway
database on the TEST_DATABASE_URL server).
"""

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.util import CommandError
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.harness.databases import alembic_config, empty_database, migration_engine

OWNERS = "INSERT INTO owner (name) VALUES ('Ada'), ('Grace'), ('Linus')"
# Ten items: Ada's 1-6 (prices 1-6), Grace's 7-10 (prices 7-10); Linus has none.
ITEMS = (
    "INSERT INTO item (name, description, price_cents, owner_id, created_at) VALUES "
    + ", ".join(
        f"('item {n}', '', {n}, {1 if n <= 6 else 2}, '2026-12-01 12:00:00')" for n in range(1, 11)
    )
)
NEW_ITEM = (
    "INSERT INTO item (name, description, price_cents, owner_id, created_at) "
    "VALUES ('new', '', 1, 1, '2026-12-02 12:00:00')"
)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[AsyncEngine]:
    """An engine on an empty database of the test's own."""
    with empty_database(tmp_path, "revisions") as url:
        yield migration_engine(url)


def sql(engine: AsyncEngine, *statements: str) -> list[Any]:
    """Run ``statements`` in one transaction; the rows of the last."""

    async def run() -> list[Any]:
        async with engine.begin() as connection:
            for statement in statements:
                result = await connection.execute(text(statement))
            return list(result.all()) if result.returns_rows else []

    return asyncio.run(run())


async def has_table(engine: AsyncEngine, name: str) -> bool:
    """Whether the database of ``engine`` has a table ``name``."""
    async with engine.connect() as connection:
        return await connection.run_sync(lambda sync: inspect(sync).has_table(name))


def recorded_revisions(engine: AsyncEngine) -> list[Any]:
    """The revisions Alembic recorded the database at; none if it recorded none."""
    if not asyncio.run(has_table(engine, "alembic_version")):
        return []
    return sql(engine, "SELECT version_num FROM alembic_version")


def made_before_migrations(engine: AsyncEngine) -> None:
    """The tables as sqlmodel-starter 0.2.0's start-up created them (0001's, as the template's
    tests prove), with rows and no Alembic version, Items 9 and 10 deleted.
    """
    command.upgrade(alembic_config(engine), "0001")
    sql(engine, "DROP TABLE alembic_version", OWNERS, ITEMS, "DELETE FROM item WHERE id > 8")


def test_upgrading_a_database_made_before_migrations_adopts_it_with_its_rows(
    database: AsyncEngine,
) -> None:
    made_before_migrations(database)
    command.upgrade(alembic_config(database), "0002")
    assert recorded_revisions(database) == [("0002",)]
    assert sql(database, "SELECT name FROM owner ORDER BY id") == [("Ada",), ("Grace",), ("Linus",)]
    assert sql(database, "SELECT id FROM item ORDER BY id") == [(n,) for n in range(1, 9)]


def test_a_database_whose_tables_differ_from_0001s_is_refused_and_left_as_it_was(
    database: AsyncEngine,
) -> None:
    made_before_migrations(database)
    sql(database, "ALTER TABLE owner ADD COLUMN email VARCHAR(200)")
    with pytest.raises(CommandError) as refusal:
        command.upgrade(alembic_config(database), "0002")
    message = str(refusal.value)
    assert "owner column: " in message, message
    assert "name='email'" in message, message
    assert "alembic stamp 0001\n    alembic upgrade head" in message, message
    assert recorded_revisions(database) == []
    assert not asyncio.run(has_table(database, "ownersummary"))
    assert len(sql(database, "SELECT id FROM item")) == 8


def test_0002_fills_every_owners_summary_from_the_items_there_are(
    database: AsyncEngine,
) -> None:
    made_before_migrations(database)
    command.upgrade(alembic_config(database), "0002")
    summaries = sql(
        database,
        "SELECT owner_id, item_count, total_price_cents, refreshed_at IS NOT NULL"
        " FROM ownersummary ORDER BY owner_id",
    )
    assert summaries == [(1, 6, 21, True), (2, 2, 15, True), (3, 0, 0, True)]


def test_ids_handed_out_stay_retired_across_0002_and_its_downgrade(
    database: AsyncEngine,
) -> None:
    config = alembic_config(database)
    command.upgrade(config, "0002")
    sql(database, OWNERS, ITEMS, "DELETE FROM item WHERE id > 8")
    command.downgrade(config, "0001")
    assert sql(database, NEW_ITEM + " RETURNING id") == [(11,)]
    sql(database, "DELETE FROM item WHERE id = 11")
    command.upgrade(config, "0002")
    assert sql(database, NEW_ITEM + " RETURNING id") == [(12,)]


def test_ids_handed_out_before_0002_stay_retired_on_postgresql(database: AsyncEngine) -> None:
    if database.dialect.name != "postgresql":
        pytest.skip(
            "at 0001, SQLite itself hands out the ids of the newest deleted rows again and "
            "keeps no trace of them; this runs when the suite runs on PostgreSQL"
        )
    made_before_migrations(database)
    command.upgrade(alembic_config(database), "0002")
    assert sql(database, NEW_ITEM + " RETURNING id") == [(11,)]
