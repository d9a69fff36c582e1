"""PostgreSQL for the benchmarks: a connection for the length of a block, one statement."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg


@asynccontextmanager
async def connected(dsn: str) -> AsyncIterator[Any]:
    """An asyncpg connection to ``dsn``, closed when the block ends."""
    connection = await asyncpg.connect(dsn)
    try:
        yield connection
    finally:
        await connection.close()


async def execute(dsn: str, sql: str) -> None:
    """Run one statement on a connection of its own (CREATE DATABASE takes no transaction)."""
    async with connected(dsn) as connection:
        await connection.execute(sql)


def sqlalchemy_url(dsn: str) -> str:
    """``dsn`` as the service's ``DATABASE_URL`` wants it: SQLAlchemy's asyncpg dialect."""
    return dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
