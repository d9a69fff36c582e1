"""BIGINT keys never reused, archived items behind a partial index, and owner summaries.

Keys become BIGINT identity columns on PostgreSQL (an int4 key runs out at 2**31 rows), and
the tables with one are rebuilt with AUTOINCREMENT on SQLite, so that a deleted row's id is
never handed out again. Ids already handed out stay retired, both ways: each new sequence
continues from where the old one was, never from the largest id left in the table. (At 0001,
SQLite itself hands out again the ids of the newest rows once they are deleted; nothing
records them, so after this revision it retires the ids from the largest one in use.)

Items gain ``archived`` (every existing item is live); the list's index covers live items
only, and a plain index on ``owner_id`` serves the foreign key. ``ownersummary`` is filled
from the items there are, so every owner's summary is right once the upgrade ends.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 17:30:00
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The tables with a surrogate key, and the columns that refer to those keys.
KEYED_TABLES = ("owner", "tag", "item")
REFERENCES = (("item", "owner_id"), ("itemtaglink", "item_id"), ("itemtaglink", "tag_id"))


def upgrade() -> None:
    """Widen the keys, add ``item.archived`` with its partial index, create and fill
    ``ownersummary``.
    """
    op.drop_index("ix_item_owner_id_id", table_name="item")
    if op.get_context().dialect.name == "postgresql":
        for table in KEYED_TABLES:
            _serial_to_identity(table)
        for table, column in REFERENCES:
            op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer())
    else:
        # SQLite takes AUTOINCREMENT only when it creates a table: copy each into a new one.
        for table in KEYED_TABLES:
            with (
                _sqlite_sequence_kept(table),
                op.batch_alter_table(
                    table, recreate="always", table_kwargs={"sqlite_autoincrement": True}
                ),
            ):
                pass
    op.add_column(
        "item", sa.Column("archived", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    op.create_index("ix_item_owner_id", "item", ["owner_id"])
    op.create_index(
        "ix_item_live_owner_id_id",
        "item",
        ["owner_id", "id"],
        postgresql_where=sa.text("NOT archived"),
        sqlite_where=sa.text("archived = 0"),
    )
    op.create_table(
        "ownersummary",
        sa.Column("owner_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("total_price_cents", sa.BigInteger(), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["owner.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("owner_id"),
    )
    _fill_owner_summaries()


def downgrade() -> None:
    """Go back to 0001's schema; archived flags and summaries are lost.

    On SQLite the tables keep AUTOINCREMENT, and so their retired ids: a copy without it
    would hand out again the ids of the newest rows deleted.
    """
    op.drop_table("ownersummary")
    op.drop_index("ix_item_live_owner_id_id", table_name="item")
    op.drop_index("ix_item_owner_id", table_name="item")
    if op.get_context().dialect.name == "postgresql":
        op.drop_column("item", "archived")
        for table, column in REFERENCES:
            op.alter_column(table, column, type_=sa.Integer(), existing_type=sa.BigInteger())
        for table in KEYED_TABLES:
            _identity_to_serial(table)
    else:
        with (
            _sqlite_sequence_kept("item"),
            op.batch_alter_table(
                "item", recreate="always", table_kwargs={"sqlite_autoincrement": True}
            ) as batch,
        ):
            batch.drop_column("archived")
    op.create_index("ix_item_owner_id_id", "item", ["owner_id", "id"])


def _fill_owner_summaries() -> None:
    # What the service's refresh computes: each owner's live items counted and summed.
    owner = sa.table("owner", sa.column("id"))
    item = sa.table("item", sa.column("owner_id"), sa.column("price_cents"), sa.column("archived"))
    summary = sa.table(
        "ownersummary",
        sa.column("owner_id"),
        sa.column("item_count"),
        sa.column("total_price_cents"),
        sa.column("refreshed_at"),
    )
    refreshed_at = sa.literal(datetime.now(UTC), sa.DateTime(timezone=True))
    rows = (
        sa.select(
            owner.c.id,
            sa.func.count(item.c.owner_id),
            sa.func.coalesce(sa.func.sum(item.c.price_cents), 0),
            refreshed_at,
        )
        .select_from(
            owner.outerjoin(item, (item.c.owner_id == owner.c.id) & (item.c.archived == sa.false()))
        )
        .group_by(owner.c.id)
    )
    op.execute(summary.insert().from_select(list(summary.c.keys()), rows))


def _serial_to_identity(table: str) -> None:
    # The identity column's new sequence takes the name, then the place, of the old one.
    sequence = f"{table}_id_seq"
    op.execute(f'ALTER TABLE "{table}" ALTER COLUMN id DROP DEFAULT')
    op.execute(f'ALTER SEQUENCE "{sequence}" RENAME TO "{sequence}_old"')
    op.alter_column(table, "id", type_=sa.BigInteger(), existing_type=sa.Integer())
    op.execute(f'ALTER TABLE "{table}" ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY')
    _continue_from(f"{sequence}_old", sequence, table)
    op.execute(f'DROP SEQUENCE "{sequence}_old"')


def _identity_to_serial(table: str) -> None:
    sequence = f"{table}_id_seq"
    op.execute(f'CREATE SEQUENCE "{sequence}_new" AS integer')
    _continue_from(sequence, f"{sequence}_new", table)
    op.execute(f'ALTER TABLE "{table}" ALTER COLUMN id DROP IDENTITY')
    op.alter_column(table, "id", type_=sa.Integer(), existing_type=sa.BigInteger())
    op.execute(f'ALTER SEQUENCE "{sequence}_new" RENAME TO "{sequence}"')
    op.execute(f'ALTER SEQUENCE "{sequence}" OWNED BY "{table}".id')
    op.execute(f"ALTER TABLE \"{table}\" ALTER COLUMN id SET DEFAULT nextval('{sequence}')")


def _continue_from(old: str, new: str, table: str) -> None:
    # The next id is the one after the last the old sequence handed out (or after the largest
    # in the table, should a row have been written with an id of its own): never one again.
    op.execute(
        f"SELECT setval('\"{new}\"', greatest("
        f'(SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM "{old}"), '
        f'(SELECT coalesce(max(id), 0) FROM "{table}")) + 1, false)'
    )


@contextmanager
def _sqlite_sequence_kept(table: str) -> Iterator[None]:
    # A table copy restarts AUTOINCREMENT's counter from the largest id copied (or drops it,
    # when no row is left): put back the one the old table had, if it had one.
    connection = op.get_bind()
    last = _sqlite_counter(connection, table)
    yield
    if last is not None:
        last = max(last, _sqlite_counter(connection, table) or 0)
        connection.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = :t"), {"t": table})
        connection.execute(
            sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :seq)"),
            {"t": table, "seq": last},
        )


def _sqlite_counter(connection: sa.Connection, table: str) -> int | None:
    # sqlite_sequence exists once a table with AUTOINCREMENT does.
    exists = "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'"
    if connection.execute(sa.text(exists)).first() is None:
        return None
    counter = "SELECT seq FROM sqlite_sequence WHERE name = :t"
    seq: int | None = connection.execute(sa.text(counter), {"t": table}).scalar()
    return seq
