"""The benchmark's data: the rows it seeds, and the requests its clients draw from them.

1,000 owners, 200 tags and 100,000 items with 0-5 tags each, from one fixed seed, so that
every run measures the same tables; the clients draw their ids from seeded generators too.
"""

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from postgres import connected

SEED = 20240601
OWNERS, TAGS, ITEMS, MAX_TAGS_PER_ITEM = 1_000, 200, 100_000, 5
PAGE = 50
BATCH_ROWS = 100
HOT_SET = 100

Rows = list[tuple[Any, ...]]


async def seed(dsn: str) -> int:
    """Fill the tables deterministically by COPY; returns the number of tag links."""
    owners, tags, items, links = _seeded_rows()
    async with connected(dsn) as connection:
        await connection.copy_records_to_table("owner", records=owners, columns=["id", "name"])
        await connection.copy_records_to_table("tag", records=tags, columns=["id", "name"])
        await connection.copy_records_to_table(
            "item",
            records=items,
            columns=["id", "name", "description", "price_cents", "owner_id", "created_at"],
        )
        await connection.copy_records_to_table(
            "itemtaglink", records=links, columns=["item_id", "tag_id"]
        )
        # COPY with explicit ids leaves the sequences behind: the creates would collide.
        for table in ("owner", "tag", "item"):
            await connection.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"
            )
        await connection.execute("VACUUM ANALYZE")
    return len(links)


def _seeded_rows() -> tuple[Rows, Rows, Rows, Rows]:
    rng = random.Random(SEED)
    started = datetime(2025, 1, 1, tzinfo=UTC)
    owners = [(number, f"owner {number:04d}") for number in range(1, OWNERS + 1)]
    tags = [(number, f"tag-{number:03d}") for number in range(1, TAGS + 1)]
    items, links = [], []
    for number in range(1, ITEMS + 1):
        items.append(
            (
                number,
                f"item {number}",
                f"a seeded item, number {number}, for the benchmark",
                rng.randrange(100, 100_000),
                rng.randint(1, OWNERS),
                started + timedelta(seconds=number),
            )
        )
        for tag in rng.sample(range(1, TAGS + 1), rng.randint(0, MAX_TAGS_PER_ITEM)):
            links.append((number, tag))
    return owners, tags, items, links


def list_path(rng: random.Random) -> str:
    """The list route, one page after a random item."""
    return f"/items?limit={PAGE}&after={rng.randrange(ITEMS - PAGE)}"


def new_item(rng: random.Random, name: str) -> dict[str, Any]:
    """A random body for ``POST /items``, with tags."""
    return {
        "name": name,
        "description": "made by the benchmark",
        "price_cents": rng.randrange(100_000),
        "owner_id": rng.randint(1, OWNERS),
        "tag_ids": rng.sample(range(1, TAGS + 1), rng.randint(0, MAX_TAGS_PER_ITEM)),
    }


def hot_ids() -> list[int]:
    """The hot set: the ids that ``get-hot`` asks for, again and again."""
    return random.Random(SEED).sample(range(1, ITEMS + 1), HOT_SET)
