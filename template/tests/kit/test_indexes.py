"""Every foreign key leads an index over every row."""

from sqlalchemy import Boolean, Column, ForeignKey, Index, Integer, MetaData, Table
from sqlmodel import SQLModel

from tests.harness.indexes import is_partial, unindexed_foreign_keys


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
