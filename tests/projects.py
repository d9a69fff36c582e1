"""Projects rendered from the template by real Copier: made, edited, run, and shared by the
tests of a run; and PostgreSQL databases of the tests' own.
"""

import asyncio
import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import copier
import pytest

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get(
    "TEMPLATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


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


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


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


def edit(path: Path, old: str, new: str, *, everywhere: bool = False) -> None:
    """Replace ``old`` with ``new`` in ``path``, as a user editing by hand would: ``old`` must
    occur exactly once, or with ``everywhere`` at least once, and is replaced wherever it is.
    """
    text = path.read_text()
    if everywhere:
        assert old in text, f"{old!r} is not in {path.name} any more"
    else:
        assert text.count(old) == 1, f"{old!r} is not in {path.name} exactly once"
    path.write_text(text.replace(old, new))


def break_module(project: Path, old: str, new: str, *, everywhere: bool = False) -> None:
    """Replace ``old`` with ``new`` in the rendered module (see ``edit``)."""
    edit(project / "my_service.py", old, new, everywhere=everywhere)


# --- What every worker of a run shares --------------------------------------------------------


def once_per_run(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    produce: Callable[[Path], dict[str, Any]],
) -> dict[str, Any]:
    """What ``produce`` returns (JSON), made in a new directory by the first of the run's
    pytest-xdist workers to ask, and read by the others from where it left it.
    """
    base = tmp_path_factory.getbasetemp()
    # Each worker's base is a directory of this run's own: its parent is the run's.
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    with (shared / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released as the file closes
        stored = shared / f"{name}.json"
        if not stored.exists():
            # A directory of its own, in case an earlier try failed half-way.
            directory = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=shared))
            stored.write_text(json.dumps(produce(directory)))
        found: dict[str, Any] = json.loads(stored.read_text())
        return found


def shared_rendering(
    template: Path, tmp_path_factory: pytest.TempPathFactory, name: str, **answers: Any
) -> Path:
    """A rendering of ``answers`` made once in the run, named ``name``; copy it to change it
    (``copy_of``), for the other tests read it as it was rendered.
    """
    made = once_per_run(
        tmp_path_factory,
        f"rendering-{name}",
        lambda directory: {"path": str(render(template, directory / "project", **answers))},
    )
    return Path(made["path"])


def copy_of(project: Path, destination: Path) -> Path:
    """A copy of ``project`` at ``destination``."""
    shutil.copytree(project, destination, symlinks=True)
    return destination


def recipe_block(readme: str, name: str) -> str:
    """The code block the README marks ``<!-- recipe: name -->``, as written in a file."""
    found = re.search(rf"<!-- recipe: {name} -->\n *```\w+\n(.*?)\n *```", readme, re.S)
    assert found, f"the README has no recipe block {name!r}"
    return textwrap.dedent(found.group(1)) + "\n"


def insert_above(path: Path, banner: str, code: str) -> None:
    """Add ``code`` at the end of the section that ``banner`` ends, as the recipe says."""
    text = path.read_text()
    at = text.index(f"\n\n\n{banner}")
    path.write_text(text[:at] + "\n\n\n" + code.rstrip("\n") + text[at:])


def recipe_project(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default answers' rendering with the generated README's recipe, "Add a model and its
    routes", followed literally: its model, revision, routes and test. Made once in the run;
    copy it to change it.

    This is the project whose suite stands for the default answers' (``generated_suite``):
    the rendering as a team grows it, so that one run shows both the defaults green and the
    kit's checks holding for the code a team adds.
    """

    def produce(directory: Path) -> dict[str, Any]:
        defaults = shared_rendering(template, tmp_path_factory, "defaults")
        project = copy_of(defaults, directory / "project")
        readme = (project / "README.md").read_text()
        module = project / "my_service.py"
        insert_above(module, "# --- Routes ---", recipe_block(readme, "model"))
        for line in recipe_block(readme, "revision").splitlines():
            command = line.removeprefix(".venv/bin/").split(maxsplit=2)
            if command[2:]:
                command[2:] = [word.strip('"') for word in re.findall(r'"[^"]*"|\S+', command[2])]
            step = run(command, project)
            assert step.returncode == 0, f"{line}\n{step.stdout}{step.stderr}"
        insert_above(module, "# --- App ---", recipe_block(readme, "routes"))
        (project / "tests" / "test_notes.py").write_text(recipe_block(readme, "test"))
        return {"path": str(project)}

    return Path(once_per_run(tmp_path_factory, "recipe", produce)["path"])


def _mypy_on_defaults(template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """mypy on the default answers' rendering, run once in the run from an empty cache of its
    own: what it printed, and where that cache is.
    """

    def produce(directory: Path) -> dict[str, Any]:
        cache = directory / "cache"
        project = shared_rendering(template, tmp_path_factory, "defaults")
        result = run(["mypy", "--cache-dir", str(cache), "."], project)
        return {
            "returncode": result.returncode,
            "stdout": result.stdout,
            "stderr": result.stderr,
            "cache": str(cache),
        }

    return once_per_run(tmp_path_factory, "mypy-defaults", produce)


def checked_with_mypy(
    template: Path, tmp_path_factory: pytest.TempPathFactory
) -> subprocess.CompletedProcess[str]:
    """What ``mypy .`` printed on the default answers' rendering, checked once in the run
    from an empty cache (which ``mypy_cache`` then copies).
    """
    found = _mypy_on_defaults(template, tmp_path_factory)
    return subprocess.CompletedProcess(
        ["mypy", "."], found["returncode"], found["stdout"], found["stderr"]
    )


def mypy_cache(template: Path, tmp_path_factory: pytest.TempPathFactory, destination: Path) -> Path:
    """A copy at ``destination``, for one check alone, of the cache mypy filled checking the
    default answers' rendering: the types of the packages every rendering imports, from this
    same environment. A check that starts from it still checks each of its files whose content
    differs from what the cache recorded, and every file if its options differ (another
    ``python_version``): mypy's incremental mode, which reports what a check from an empty
    cache would. Each check has a copy of its own, so no two write to one cache.
    """
    source = Path(_mypy_on_defaults(template, tmp_path_factory)["cache"])
    # copy2 keeps the files' modification times, which mypy compares with what it recorded.
    shutil.copytree(source, destination)
    return destination


# What every project must pass, as its CI runs them: lint, format, strict types.
CHECKS = (
    ["ruff", "check", "--no-cache", "."],
    ["ruff", "format", "--check", "--diff", "--no-cache", "."],
    ["mypy", "--cache-dir", "/dev/null", "."],
)
# -rfEsp: a line for each test that failed, erred, was skipped or passed, the same in one
# process as across pytest-xdist's workers (-rA would add every passed test's output).
SUITE = ["pytest", "-rfEsp", "-p", "no:cacheprovider"]


# The service's own database while a generated suite runs, as a developer's shell has it
# after sourcing .env: a suite must leave it exactly as it was.
CANARY_ROWS = [[1, "production owner"]]


def _query(database_url: str, query: str) -> list[list[object]]:
    async def fetch() -> list[list[object]]:
        connection = await asyncpg.connect(database_url)
        try:
            return [list(row) for row in await connection.fetch(query)]
        finally:
            await connection.close()

    return asyncio.run(fetch())


def _canary_changes(service: str) -> str:
    """What differs in the PostgreSQL canary ``service`` from how ``generated_suite`` made it:
    nothing, or its tables and rows as they are.
    """
    dsn = service.replace("postgresql+asyncpg://", "postgresql://", 1)
    tables = _query(dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    rows = _query(dsn, "SELECT id, name FROM owner") if ["owner"] in tables else []
    if tables == [["owner"]] and rows == CANARY_ROWS:
        return ""
    return f"the service's database now holds tables {tables} and owners {rows}"


def generated_suite(
    tmp_path_factory: pytest.TempPathFactory, name: str, project: Path, *, postgres: bool
) -> tuple[subprocess.CompletedProcess[str], str]:
    """The generated suite of ``project`` (the rendering ``name``), run once in the run on a
    copy of it, on SQLite or PostgreSQL (the README's ``TEST_DATABASE_URL=...`` command), with
    DATABASE_URL naming a service's database of the same kind: a SQLite file that must not
    come to exist, or a PostgreSQL database holding an owner row that must stay as it is.
    What the suite printed, and what it changed in that database (empty if nothing).
    """
    database = "postgresql" if postgres else "sqlite"

    def produce(directory: Path) -> dict[str, Any]:
        copy = copy_of(project, directory / "project")
        if postgres:
            with new_postgres_database() as service:
                dsn = service.replace("postgresql+asyncpg://", "postgresql://", 1)
                _query(dsn, "CREATE TABLE owner (id integer PRIMARY KEY, name text)")
                _query(dsn, "INSERT INTO owner VALUES (1, 'production owner')")
                result = run(SUITE, copy, postgres=True, environment={"DATABASE_URL": service})
                changes = _canary_changes(service)
        else:
            service_file = directory / "service.db"
            environment = {"DATABASE_URL": f"sqlite+aiosqlite:///{service_file}"}
            result = run(SUITE, copy, environment=environment)
            changes = "the suite made the service's SQLite file" if service_file.exists() else ""
        return {
            "returncode": result.returncode,
            "stdout": result.stdout,
            "stderr": result.stderr,
            "service_database_changes": changes,
        }

    found = once_per_run(tmp_path_factory, f"suite-{name}-{database}", produce)
    result = subprocess.CompletedProcess(
        SUITE, found["returncode"], found["stdout"], found["stderr"]
    )
    return result, found["service_database_changes"]


def defaults_suite(
    template: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], str]:
    """``generated_suite`` of the default answers on SQLite, the quick tier's: run once in the
    run, in the default rendering with the README's recipe followed (``recipe_project``).
    """
    project = recipe_project(template, tmp_path_factory)
    return generated_suite(tmp_path_factory, "recipe", project, postgres=False)
