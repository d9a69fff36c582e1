"""What the indexes of the models cover: foreign keys and the columns routes filter or sort on."""

from collections.abc import Iterable

import sqlalchemy as sa
from sqlmodel import SQLModel


def is_partial(index: sa.Index) -> bool:
    """True for an index of only the rows its WHERE clause selects."""
    return any(options.get("where") is not None for options in index.dialect_options.values())


def indexed_columns(table: sa.Table, *, partial: bool) -> set[str]:
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


def unindexed_foreign_keys(metadata: sa.MetaData) -> list[str]:
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


def unindexed_columns(columns: Iterable[tuple[str, str]]) -> list[str]:
    """The (table, column) pairs that lead no index, a primary key or a unique constraint
    (partial indexes included), as "table.column".
    """
    return [
        f"{table}.{column}"
        for table, column in columns
        if column not in indexed_columns(SQLModel.metadata.tables[table], partial=True)
    ]
