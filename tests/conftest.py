"""Fixtures for testing the template: renderings made by real Copier, and fresh databases."""

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import copier
import pytest
from render_example import NOT_TEMPLATE

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get(
    "TEMPLATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working tree of the template, uncommitted changes included, outside git."""
    snapshot = tmp_path_factory.mktemp("template") / "sqlmodel-starter"
    shutil.copytree(ROOT, snapshot, ignore=NOT_TEMPLATE)
    return snapshot


def render(
    template: Path, destination: Path, *, vcs_ref: str | None = None, **answers: Any
) -> Path:
    """Generate a project with real Copier, answering the questions not given with defaults.

    ``vcs_ref`` picks a version of a template that is a git repository (default: the newest tag).
    """
    copier.run_copy(
        str(template),
        destination,
        data=answers,
        vcs_ref=vcs_ref,
        defaults=True,
        unsafe=False,
        quiet=True,
    )
    return destination


def run(
    command: list[str],
    cwd: Path,
    *,
    postgres: bool = False,
    environment: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a module of this environment's (ruff, mypy, pytest, alembic) in ``cwd``, capturing
    output, with ``environment`` added to a copy of this process's variables.

    A generated suite runs on in-memory SQLite, or with ``postgres`` on throwaway databases it
    creates on the PostgreSQL server (TEST_DATABASE_URL); never on a DATABASE_URL of ours.
    """
    variables = {
        name: value
        for name, value in os.environ.items()
        if name not in ("DATABASE_URL", "TEST_DATABASE_URL")
    }
    if postgres:
        variables["TEST_DATABASE_URL"] = POSTGRES_URL
    variables.update(environment or {})
    return subprocess.run(
        [sys.executable, "-m", *command],
        cwd=cwd,
        env=variables,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _postgres(sql: str) -> None:
    async def execute() -> None:
        connection = await asyncpg.connect(POSTGRES_URL)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(execute())


@contextmanager
def new_postgres_database() -> Iterator[str]:
    """The SQLAlchemy URL of a new, empty PostgreSQL database, dropped afterwards."""
    name = f"starter_{uuid.uuid4().hex[:12]}"
    try:
        _postgres(f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL at {POSTGRES_URL} is needed for this test: {exc}")
    base = POSTGRES_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        _postgres(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """The SQLAlchemy URL of a new, empty PostgreSQL database, dropped afterwards."""
    with new_postgres_database() as url:
        yield url


@pytest.fixture
def project(template: Path, tmp_path: Path) -> Path:
    """A rendering with the default answers, for a test to break."""
    return render(template, tmp_path / "project")


def break_module(project: Path, old: str, new: str) -> None:
    """Replace ``old`` with ``new`` in the rendered module, failing if ``old`` is gone."""
    module = project / "my_service.py"
    source = module.read_text()
    assert old in source, f"{old!r} is not in the module any more"
    module.write_text(source.replace(old, new))
