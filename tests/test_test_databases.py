"""A generated suite never touches the service's database, whatever DATABASE_URL says.

The service's database is a canary here: a SQLite file, or a PostgreSQL database this test
creates and fills. The suite runs with DATABASE_URL exported (as a developer's shell has it
after sourcing .env), on SQLite and with the README's PostgreSQL command; the canary must be
exactly as it was. A TEST_DATABASE_URL that names the service's database is refused.
"""

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from projects import POSTGRES_URL, copy_of, generated_suite, run, shared_rendering

CANARY_ROWS = [(1, "production owner")]


@pytest.fixture(scope="module")
def project(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    defaults = shared_rendering(template, tmp_path_factory, "defaults")
    project = copy_of(defaults, tmp_path_factory.mktemp("canary") / "project")
    # The README's commands run .venv/bin/...: this environment, which has what they need.
    (project / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    return project


def readme_postgres_test_command(project: Path) -> str:
    """The generated README's command that runs the tests on PostgreSQL."""
    found = re.search(
        r"^TEST_DATABASE_URL=\S+ \.venv/bin/pytest$", (project / "README.md").read_text(), re.M
    )
    assert found, "the README gives no TEST_DATABASE_URL=... .venv/bin/pytest command"
    return found.group(0)


def test_the_suite_on_sqlite_leaves_the_services_sqlite_database_alone(
    template: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # The run test_render.py checks too: the default answers' suite, with DATABASE_URL naming
    # a SQLite file.
    defaults = shared_rendering(template, tmp_path_factory, "defaults")
    result, service_database_made = generated_suite(
        tmp_path_factory, "defaults", defaults, postgres=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not service_database_made, "the tests created the service's database"


async def _fetch(database_url: str, query: str) -> list[tuple[object, ...]]:
    connection = await asyncpg.connect(database_url)
    try:
        return [tuple(row) for row in await connection.fetch(query)]
    finally:
        await connection.close()


async def _execute(database_url: str, statements: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(statements)
    finally:
        await connection.close()


@pytest.mark.postgres
def test_the_readme_postgresql_command_leaves_the_services_database_alone(
    project: Path, postgres_database: str
) -> None:
    service = postgres_database.replace("postgresql+asyncpg://", "postgresql://", 1)
    asyncio.run(
        _execute(
            service,
            "CREATE TABLE owner (id integer PRIMARY KEY, name text);"
            "INSERT INTO owner VALUES (1, 'production owner')",
        )
    )
    command = readme_postgres_test_command(project)
    # The README names the server this machine's template tests use; point it at theirs.
    server = POSTGRES_URL.replace("postgresql://", "postgresql+asyncpg://", 1)
    command = re.sub(r"^TEST_DATABASE_URL=\S+", f"TEST_DATABASE_URL={server}", command)
    environment = {
        **{name: value for name, value in os.environ.items() if name != "TEST_DATABASE_URL"},
        "DATABASE_URL": postgres_database,
    }
    result = subprocess.run(
        ["bash", "-c", command],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout, result.stdout
    assert asyncio.run(_fetch(service, "SELECT id, name FROM owner")) == CANARY_ROWS
    tables = asyncio.run(
        _fetch(service, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    )
    assert tables == [("owner",)], tables


@pytest.mark.postgres
def test_a_test_database_url_naming_the_services_database_is_refused(
    project: Path, postgres_database: str
) -> None:
    same = {"DATABASE_URL": postgres_database, "TEST_DATABASE_URL": postgres_database}
    result = run(["pytest", "-q", "-p", "no:cacheprovider"], project, environment=same)
    assert result.returncode == 4, result.stdout + result.stderr
    assert "TEST_DATABASE_URL names the database of the service's own DATABASE_URL" in (
        result.stderr
    ), result.stdout + result.stderr


@pytest.mark.postgres
def test_a_database_prefix_names_every_database_the_tests_make(project: Path) -> None:
    own_databases = "tests/kit/test_own_databases.py"
    environment = {"TEST_DATABASE_PREFIX": "team_a_ci"}
    result = run(["pytest", "-v", own_databases], project, postgres=True, environment=environment)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ", named team_a_ci_..." in result.stdout, result.stdout
    assert "test_the_tests_databases_are_named_with_the_prefix PASSED" in result.stdout

    environment = {"TEST_DATABASE_PREFIX": "Team-A"}
    result = run(["pytest", own_databases], project, postgres=True, environment=environment)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert "TEST_DATABASE_PREFIX='Team-A': want at most 36 lower-case" in result.stderr
