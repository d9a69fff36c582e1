"""Every foreign key, and every column a route filters or sorts on, leads an index."""

from sqlalchemy import Table
from sqlmodel import SQLModel

# (table, column) pairs that routes filter or sort on; add yours with the route.
FILTERED_AND_SORTED = [("item", "owner_id"), ("item", "id"), ("owner", "id"), ("tag", "name")]


def indexed_columns(table: Table) -> set[str]:
    """Columns that lead an index, a primary key or a unique constraint of ``table``."""
    leading = {next(iter(index.columns)).name for index in table.indexes}
    leading |= {column.name for column in table.columns if column.unique}
    if table.primary_key.columns:
        leading.add(next(iter(table.primary_key.columns)).name)
    return leading


def test_every_foreign_key_leads_an_index() -> None:
    unindexed = [
        f"{table.name}.{key.parent.name}"
        for table in SQLModel.metadata.sorted_tables
        for key in table.foreign_keys
        if key.parent.name not in indexed_columns(table)
    ]
    assert not unindexed, (
        f"foreign keys without an index: {unindexed}; joins and cascades on them scan the "
        "whole table. Add index=True to the field, or an Index led by the column."
    )


def test_every_filtered_or_sorted_column_leads_an_index() -> None:
    unindexed = [
        f"{table}.{column}"
        for table, column in FILTERED_AND_SORTED
        if column not in indexed_columns(SQLModel.metadata.tables[table])
    ]
    assert not unindexed, f"filtered or sorted on without an index: {unindexed}"
