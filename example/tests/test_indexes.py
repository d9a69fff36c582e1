"""Every foreign key, and every column a route filters or sorts on, leads an index."""

from sqlalchemy import Boolean, Column, ForeignKey, Index, Integer, MetaData, Table
from sqlmodel import SQLModel

# (table, column) pairs that routes filter or sort on; add yours with the route.
FILTERED_AND_SORTED = [
    ("item", "owner_id"),
    ("item", "id"),
    ("owner", "id"),
    ("ownersummary", "owner_id"),
    ("tag", "id"),
]


def is_partial(index: Index) -> bool:
    """True for an index of only the rows its WHERE clause selects."""
    return any(options.get("where") is not None for options in index.dialect_options.values())


def indexed_columns(table: Table, *, partial: bool) -> set[str]:
    """Columns that lead an index, a primary key or a unique constraint of ``table``;
    leading a partial index counts only if ``partial``.
    """
    leading = {
        next(iter(index.columns)).name
        for index in table.indexes
        if partial or not is_partial(index)
    }
    leading |= {column.name for column in table.columns if column.unique}
    if table.primary_key.columns:
        leading.add(next(iter(table.primary_key.columns)).name)
    return leading


def unindexed_foreign_keys(metadata: MetaData) -> list[str]:
    """Foreign keys that lead no index over every row.

    A partial index does not count: a join or an ON DELETE cascade reaches the rows it
    leaves out, and the database would scan the whole table for them.
    """
    return [
        f"{table.name}.{key.parent.name}"
        for table in metadata.sorted_tables
        for key in table.foreign_keys
        if key.parent.name not in indexed_columns(table, partial=False)
    ]


def test_every_foreign_key_leads_an_index() -> None:
    unindexed = unindexed_foreign_keys(SQLModel.metadata)
    assert not unindexed, (
        f"foreign keys without an index over every row: {unindexed}; joins and cascades on "
        "them scan the whole table. Add index=True to the field, or an Index led by the "
        "column (a partial index does not count)."
    )


def test_a_partial_index_does_not_cover_a_foreign_key() -> None:
    metadata = MetaData()
    Table("parent", metadata, Column("id", Integer, primary_key=True))
    child = Table(
        "child",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("parent_id", Integer, ForeignKey("parent.id")),
        Column("archived", Boolean),
    )
    live = Index("ix_child_live", child.c.parent_id, postgresql_where=~child.c.archived)
    assert is_partial(live)
    assert unindexed_foreign_keys(metadata) == ["child.parent_id"]
    Index("ix_child_parent_id", child.c.parent_id)
    assert unindexed_foreign_keys(metadata) == []


def test_every_filtered_or_sorted_column_leads_an_index() -> None:
    # Partial indexes count here: the plan tests check each route's query matches the
    # condition of the index that serves it.
    unindexed = [
        f"{table}.{column}"
        for table, column in FILTERED_AND_SORTED
        if column not in indexed_columns(SQLModel.metadata.tables[table], partial=True)
    ]
    assert not unindexed, f"filtered or sorted on without an index: {unindexed}"
