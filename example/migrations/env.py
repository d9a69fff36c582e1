"""How Alembic reaches the database: the service's own settings and engine.

``alembic upgrade head`` migrates the database ``DATABASE_URL`` names, through the engine
the service itself would open. Code that runs migrations itself (the tests) passes its own
engine as ``config.attributes["connection"]``.
"""

import asyncio
from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from alembic.operations.ops import MigrationScript
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, TypeDecorator
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from my_service import Settings, create_engine

config = context.config
# Log as alembic.ini says on the command line; a program that runs migrations keeps its own.
if config.cmd_opts is not None and config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = SQLModel.metadata
# The PostgreSQL advisory lock that runs of the migrations take in turn (any constant key).
MIGRATION_LOCK = 7_245_190_381


def render_item(kind: str, item: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Write a column of a decorated type as the SQLAlchemy type it stores.

    A revision must not import the service's module, whose types may change or go: what
    matters to the schema is the stored type (``sa.String(length=100)`` for sqlmodel's
    ``AutoString``, ``sa.DateTime(timezone=True)`` for ``UTCDateTime``).
    """
    if kind == "type" and isinstance(item, TypeDecorator):
        stored = item.impl_instance
        if type(stored).__module__ == "sqlalchemy.sql.sqltypes":
            return f"sa.{stored!r}"
    return False


def number_the_revision(
    migration: MigrationContext, revision: object, directives: list[MigrationScript]
) -> None:
    """Number a new revision after the last one: 0005 after 0004, in its id and file name.

    ``alembic revision`` would name it with a random id (``19d9ba4d221d``); numbers keep
    the files in the order they apply. ``file_template`` in alembic.ini names the file
    after the id. The template's own revisions since 0.5.0 carry their name in their id
    (``0003_owner_subject``): they count for the numbering, and never take an id of yours.
    """
    scripts = ScriptDirectory.from_config(config)
    numbers = [
        int(script.revision[:4])
        for script in scripts.walk_revisions()
        if script.revision[:4].isdigit()
    ]
    for directive in directives:
        directive.rev_id = f"{max(numbers, default=0) + 1:04d}"


def run_migrations(connection: Connection) -> None:
    """Run the migrations on ``connection`` and commit them."""
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # SQLite alters a table by copying it to a new one and dropping the old ("batch"
        # mode); with foreign keys enforced, that drop would cascade deletes into the rows
        # that reference it. The pragma only takes effect outside a transaction, so it goes
        # through the driver's cursor, before the connection begins one.
        _pragma(connection, "foreign_keys = OFF")
    try:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=sqlite,
            compare_type=True,
            render_item=render_item,
            process_revision_directives=number_the_revision,
        )
        with context.begin_transaction():
            if not sqlite:
                # Instances that start together may all run the migrations: the first takes
                # this lock and migrates, the others wait for its commit, then find the
                # database at head and do nothing. The lock ends with the transaction.
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            context.run_migrations()
        if sqlite:
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
            if broken:
                raise RuntimeError(f"the migration left rows with broken foreign keys: {broken}")
        connection.commit()
    finally:
        if sqlite:
            connection.rollback()
            _pragma(connection, "foreign_keys = ON")


def _pragma(connection: Connection, setting: str) -> None:
    cursor = connection.connection.cursor()
    try:
        cursor.execute(f"PRAGMA {setting}")
    finally:
        cursor.close()


async def migrate(engine: AsyncEngine) -> None:
    """Run the migrations through ``engine``."""
    async with engine.connect() as connection:
        await connection.run_sync(run_migrations)


async def migrate_the_services_database() -> None:
    """Run the migrations on the database of ``DATABASE_URL``, with the service's engine."""
    # Without the statement deadline: a migration may rightly run for minutes, or wait
    # that long for another instance's to finish.
    engine = create_engine(Settings.from_env(), deadlines=False)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    """Migrate the database: the one given by the caller, or the service's own."""
    given = config.attributes.get("connection")
    if isinstance(given, AsyncEngine):
        asyncio.run(migrate(given))
    else:
        asyncio.run(migrate_the_services_database())


def run_migrations_offline() -> None:
    """Write the migrations' SQL instead of running it (``alembic upgrade head --sql``)."""
    url = Settings.from_env().database_url.get_secret_value()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
        process_revision_directives=number_the_revision,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
