"""The initial schema: owners, tags, items and the links between items and tags.

Exactly what the service created at start-up before it had migrations (sqlmodel-starter
0.2.0). ``alembic upgrade head`` adopts a database made that way: when it holds these tables
exactly as this revision creates them (the same columns, keys, indexes and constraints), the
upgrade records it at 0001, keeps every row and goes on; when they differ, it stops and says
how, and what to run. Tables of your own beside them are left as they are.

Revision ID: 0001
Create Date: 2026-12-01 15:31:35
"""

import logging
from collections.abc import Mapping, Sequence

import sqlalchemy as sa
from alembic import op
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("owner", "tag", "item", "itemtaglink")
logger = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    """Create the example's tables and their indexes, or adopt the ones 0.2.0 created."""
    if not op.get_context().as_sql and _adopted(op.get_bind()):
        return
    _create_tables(Operations(op.get_context()))


def downgrade() -> None:
    """Drop the example's tables, and their rows with them."""
    op.drop_table("itemtaglink")
    op.drop_table("item")
    op.drop_table("tag")
    op.drop_table("owner")


def _create_tables(operations: Operations) -> None:
    operations.create_table(
        "owner",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    operations.create_table(
        "tag",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    operations.create_table(
        "item",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=2000), nullable=False),
        sa.Column("price_cents", sa.Integer(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["owner.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    operations.create_index("ix_item_owner_id_id", "item", ["owner_id", "id"])
    operations.create_table(
        "itemtaglink",
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("tag_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["item.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tag_id"], ["tag.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("item_id", "tag_id"),
    )
    operations.create_index("ix_itemtaglink_tag_id", "itemtaglink", ["tag_id"])


def _adopted(connection: sa.Connection) -> bool:
    # A database with no Alembic version (or this revision would not run) and these tables
    # was made by the service's start-up before it had migrations.
    inspector = sa.inspect(connection)
    present = [table for table in TABLES if inspector.has_table(table)]
    if not present:
        return False
    found, expected = _catalogue(connection), _catalogue_as_created(connection)
    if found != expected:
        differences = [
            f"  here, not as 0001 creates it: {entry}" for entry in sorted(found - expected)
        ]
        differences += [
            f"  as 0001 creates it, not here: {entry}" for entry in sorted(expected - found)
        ]
        raise CommandError(
            f"This database has tables ({', '.join(present)}) but no Alembic version: it was "
            "made before the migrations, by the service's start-up. Revision 0001 adopts such "
            "a database only when its tables are exactly the ones 0001 creates, and these "
            "differ:\n" + "\n".join(differences) + "\nBring them in line with 0001 and run "
            "this again; or, if you are sure the later revisions apply to them as they are, "
            "record the database as at 0001 and upgrade it:\n"
            "    alembic stamp 0001\n    alembic upgrade head"
        )
    logger.info("Adopting the tables made before migrations (%s) as 0001", ", ".join(TABLES))
    return True


def _catalogue(connection: sa.Connection) -> set[str]:
    # The database's own description of the tables, as SQLAlchemy reflects it.
    inspector = sa.inspect(connection)
    found = set()
    for table in TABLES:
        if not inspector.has_table(table):
            found.add(f"{table}: no such table")
            continue
        parts: dict[str, Sequence[Mapping[str, object]]] = {
            "column": inspector.get_columns(table),
            "primary key": [inspector.get_pk_constraint(table)],
            "foreign key": inspector.get_foreign_keys(table),
            "index": inspector.get_indexes(table),
            "unique": inspector.get_unique_constraints(table),
        }
        for kind, entries in parts.items():
            for entry in entries:
                described = ", ".join(f"{key}={value!r}" for key, value in sorted(entry.items()))
                found.add(f"{table} {kind}: {described}")
    return found


def _catalogue_as_created(connection: sa.Connection) -> set[str]:
    # The tables as this revision creates them, on the same kind of database, out of the way:
    # in memory for SQLite, in a schema of their own rolled back at once on PostgreSQL.
    if connection.dialect.name == "sqlite":
        with sa.create_engine("sqlite://").connect() as scratch:
            _create_tables(Operations(MigrationContext.configure(scratch)))
            return _catalogue(scratch)
    savepoint = connection.begin_nested()
    try:
        connection.exec_driver_sql("CREATE SCHEMA adopting_0001")
        connection.exec_driver_sql("SET LOCAL search_path TO adopting_0001")
        _create_tables(Operations(MigrationContext.configure(connection)))
        return _catalogue(connection)
    finally:
        savepoint.rollback()
