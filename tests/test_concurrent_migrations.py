"""Instances that start together may all run `alembic upgrade head`: one migrates, the
others wait for it and then find nothing to do.

The test holds the migrations' advisory lock itself, starts two upgrades of an empty
PostgreSQL database, sees both wait for the lock, releases it, and checks that the schema
was built once and both upgrades succeeded.
"""

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest
from projects import copy_of, shared_rendering

pytestmark = pytest.mark.postgres


@pytest.fixture
def project(template: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    defaults = shared_rendering(template, tmp_path_factory, "defaults")
    return copy_of(defaults, tmp_path / "project")


def migration_lock(project: Path) -> int:
    found = re.search(
        r"^MIGRATION_LOCK = ([\d_]+)$", (project / "migrations" / "env.py").read_text(), re.M
    )
    assert found, "migrations/env.py defines no MIGRATION_LOCK"
    return int(found.group(1))


async def waiting_for_advisory_locks(connection: asyncpg.Connection) -> int:
    value = await connection.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    return int(value)


def test_concurrent_upgrades_wait_for_one_another_and_migrate_once(
    project: Path, postgres_database: str
) -> None:
    dsn = postgres_database.replace("postgresql+asyncpg://", "postgresql://", 1)
    environment = {**os.environ, "DATABASE_URL": postgres_database}

    async def scenario() -> list[subprocess.CompletedProcess[str]]:
        holder = await asyncpg.connect(dsn)
        try:
            await holder.execute("SELECT pg_advisory_lock($1)", migration_lock(project))
            upgrades = [
                subprocess.Popen(
                    [sys.executable, "-m", "alembic", "upgrade", "head"],
                    cwd=project,
                    env=environment,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                for _ in range(2)
            ]
            deadline = time.monotonic() + 60
            while await waiting_for_advisory_locks(holder) < 2:
                finished = [upgrade for upgrade in upgrades if upgrade.poll() is not None]
                assert not finished, "an upgrade ended without waiting for the lock"
                assert time.monotonic() < deadline, "the upgrades never waited for the lock"
                await asyncio.sleep(0.05)
            await holder.execute("SELECT pg_advisory_unlock($1)", migration_lock(project))
            outputs = [upgrade.communicate(timeout=60)[0] for upgrade in upgrades]
            return [
                subprocess.CompletedProcess(upgrade.args, upgrade.returncode, output)
                for upgrade, output in zip(upgrades, outputs, strict=True)
            ]
        finally:
            await holder.close()

    results = asyncio.run(scenario())
    printed = "\n".join(result.stdout for result in results)
    assert [result.returncode for result in results] == [0, 0], printed
    assert printed.count("Running upgrade  -> 0001") == 1, printed
    assert printed.count("Running upgrade 0001 -> 0002") == 1, printed
    assert printed.count("Running upgrade 0002 -> 0003_owner_subject") == 1, printed

    async def version() -> object:
        connection = await asyncpg.connect(dsn)
        try:
            return await connection.fetchval("SELECT version_num FROM alembic_version")
        finally:
            await connection.close()

    assert asyncio.run(version()) == "0003_owner_subject"
