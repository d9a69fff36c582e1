"""Every rendering in the matrix is lint, format and type clean, and its suite passes."""

import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from projects import (
    checked_with_mypy,
    defaults_suite,
    generated_suite,
    mypy_cache,
    render,
    run,
    shared_rendering,
)

# Pairwise over the questions that change the code: each database with and without the
# example domain, plain and odd-but-valid names, every supported Python floor.
MATRIX: dict[str, dict[str, Any]] = {
    "defaults": {},
    "postgresql-example": {
        "project_name": "My Service 2",
        "database": "postgresql",
        "python_version": "3.12",
    },
    "sqlite-bare": {
        "project_name": "inventory",
        "include_example": False,
        "cache_ttl_seconds": 5,
        "guard_max_in_flight": 4,
        "guard_max_waiting": 0,
    },
    "postgresql-bare": {
        "project_name": "Ünïcode & Co. API",
        "database": "postgresql",
        "include_example": False,
        "python_version": "3.13",
    },
}


# The default answers are the quick tier (pytest -m quick): the maintainer's loop.
ANSWERS = [
    pytest.param(name, marks=pytest.mark.quick) if name == "defaults" else name for name in MATRIX
]


@pytest.fixture(scope="module", params=ANSWERS)
def answers(request: pytest.FixtureRequest) -> str:
    """The name of a set of answers in MATRIX."""
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def project(answers: str, template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rendering of ``answers``, made once in the run, as rendered."""
    return shared_rendering(template, tmp_path_factory, answers, **MATRIX[answers])


def test_rendering_passes_ruff_check(project: Path) -> None:
    result = run(["ruff", "check", "--no-cache", "."], project)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rendering_is_already_ruff_formatted(project: Path) -> None:
    result = run(["ruff", "format", "--check", "--diff", "--no-cache", "."], project)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rendering_passes_strict_mypy(
    answers: str,
    project: Path,
    template: Path,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
) -> None:
    if answers == "defaults":
        # From an empty cache; the other checks start from the cache it fills.
        result = checked_with_mypy(template, tmp_path_factory)
    else:
        cache = mypy_cache(template, tmp_path_factory, tmp_path / "mypy-cache")
        result = run(["mypy", "--cache-dir", str(cache), "."], project)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rendering_holds_no_jinja_residue(project: Path) -> None:
    for path in project.rglob("*"):
        if path.is_dir() or ".git" in path.parts:
            continue
        # GitHub Actions' own expressions, ${{ ... }}, are meant to be there.
        text = re.sub(r"\$\{\{.*?\}\}", "", path.read_text())
        where = path.relative_to(project)
        assert not re.search(r"\{\{|\}\}|\{%|%\}", text), f"Jinja left in {where}"
        assert "\n\n\n\n" not in text, f"a run of blank lines in {where}"
        assert not re.search(r"[ \t]+\n", text), f"trailing white space in {where}"
        assert path.suffix != ".jinja", f"{where} kept its .jinja suffix"


# What the generated migration tests report when they pass: the migrations build exactly the
# models' schema, and every revision downgrades and upgrades again.
MIGRATION_TESTS_PASSED = (
    "PASSED tests/kit/test_migrations.py::"
    "test_upgrading_an_empty_database_to_head_gives_exactly_the_models_schema",
    "PASSED tests/kit/test_migrations.py::test_up_down_consistency",
)


def passed_suite(
    tmp_path_factory: pytest.TempPathFactory,
    template: Path,
    answers: str,
    project: Path,
    *,
    postgres: bool,
) -> str:
    """What the generated suite of ``answers`` printed, failing unless it passed, migration
    tests included, and left the service's database alone.

    The default answers' suite runs with the README's recipe followed in the rendering
    (``recipe_project``): one run for the defaults, the recipe and the CI workflow's check.
    """
    if answers == "defaults" and not postgres:
        result, service_database_changes = defaults_suite(template, tmp_path_factory)
    else:
        result, service_database_changes = generated_suite(
            tmp_path_factory, answers, project, postgres=postgres
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not service_database_changes
    for line in MIGRATION_TESTS_PASSED:
        assert line in result.stdout, result.stdout
    return result.stdout


# The database each rendering's suite runs on: pairwise, so that each database meets each
# value of the answers that change the code or the settings (the example domain or none, a
# `database` answer of either kind, the default guard or a small one), without every
# rendering running its suite twice. Every rendering is still linted and type-checked above.
# postgresql-example's suite is the default answers' but for the default DATABASE_URL, which
# no test reads: the example on PostgreSQL runs in test_update.py (the project updated
# release by release, with the example and a team's own model and routes).
SUITE_DATABASE: dict[str, str | None] = {
    "defaults": "sqlite",
    "postgresql-example": None,
    "sqlite-bare": "postgresql",
    "postgresql-bare": "sqlite",
}
assert SUITE_DATABASE.keys() == MATRIX.keys()


@pytest.mark.parametrize(
    "answers",
    [
        pytest.param(name, marks=pytest.mark.quick) if name == "defaults" else name
        for name, database in SUITE_DATABASE.items()
        if database == "sqlite"
    ],
    scope="module",
)
def test_generated_suite_passes_on_sqlite(
    answers: str, project: Path, template: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    passed_suite(tmp_path_factory, template, answers, project, postgres=False)


@pytest.mark.postgres
@pytest.mark.parametrize(
    "answers",
    [name for name, database in SUITE_DATABASE.items() if database == "postgresql"],
    scope="module",
)
def test_generated_suite_passes_on_postgresql(
    answers: str, project: Path, template: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    printed = passed_suite(tmp_path_factory, template, answers, project, postgres=True)
    assert "database: throwaway databases on postgresql+asyncpg://" in printed


# --- First steps, as the README and Copier's message print them --------------------------

STARTS = """
import asyncio

from {module} import Settings, create_app


async def main() -> None:
    app = create_app(Settings())
    async with app.router.lifespan_context(app):
        print("started")


asyncio.run(main())
"""


def first_steps(project: Path) -> list[str]:
    """The README's "Run" commands after the install, in order, without the server."""
    readme = (project / "README.md").read_text()
    found = re.search(r"^## Run\n\n```sh\n(.*?)\n```", readme, re.S | re.M)
    assert found, "README.md has no ```sh block under ## Run"
    install, *steps = found.group(1).splitlines()
    assert "pip install -e . --group dev" in install, install
    assert steps[-1].startswith(".venv/bin/uvicorn "), steps
    return steps[:-1]


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_the_readmes_first_steps_work_as_written_and_the_service_starts(
    template: Path, tmp_path: Path, database: str
) -> None:
    # A module name of its own, so the PostgreSQL database the steps create is new.
    name = f"first steps {uuid.uuid4().hex[:8]}"
    project = render(template, tmp_path / "project", project_name=name, database=database)
    module = name.replace(" ", "_")
    # This environment, where the install command would have made one.
    (project / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    steps = first_steps(project)
    if database == "postgresql":
        assert steps[0] == f"createdb -h 127.0.0.1 -U postgres {module}", steps
    try:
        for step in steps:
            result = subprocess.run(
                ["bash", "-c", step], cwd=project, capture_output=True, text=True, check=False
            )
            assert result.returncode == 0, f"$ {step}\n{result.stdout}{result.stderr}"
        (project / "start_once.py").write_text(STARTS.format(module=module))
        started = run(["start_once"], project)
        assert started.stdout.strip() == "started", started.stdout + started.stderr
    finally:
        if database == "postgresql":
            subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", module])


def test_copiers_message_after_copy_gives_the_readmes_first_steps(
    template: Path, tmp_path: Path
) -> None:
    destination = tmp_path / "project"
    copied = subprocess.run(
        [
            sys.executable,
            "-m",
            "copier",
            "copy",
            "--defaults",
            "--data",
            "database=postgresql",
            str(template),
            str(destination),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert copied.returncode == 0, copied.stderr
    shown = [
        line.split("  #")[0].strip()
        for line in (copied.stdout + copied.stderr).splitlines()
        if line.startswith("  ")  # Copier prints the commands indented
    ]
    steps = first_steps(destination)
    assert [line for line in shown if line in steps] == steps, shown
