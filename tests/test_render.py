"""Every rendering in the matrix is lint, format and type clean, and its suite passes."""

import re
from pathlib import Path
from typing import Any

import pytest
from conftest import render, run

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


@pytest.fixture(scope="module", params=MATRIX, ids=str)
def project(
    request: pytest.FixtureRequest, template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return render(template, tmp_path_factory.mktemp(request.param), **MATRIX[request.param])


def test_rendering_passes_ruff_check(project: Path) -> None:
    result = run(["ruff", "check", "--no-cache", "."], project)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rendering_is_already_ruff_formatted(project: Path) -> None:
    result = run(["ruff", "format", "--check", "--diff", "--no-cache", "."], project)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rendering_passes_strict_mypy(project: Path) -> None:
    result = run(["mypy", "--cache-dir", "/dev/null", "."], project)
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
    "tests/kit/test_migrations.py::"
    "test_upgrading_an_empty_database_to_head_gives_exactly_the_models_schema PASSED",
    "tests/kit/test_migrations.py::test_up_down_consistency PASSED",
)


def test_generated_suite_passes_on_sqlite(project: Path) -> None:
    result = run(["pytest", "-v", "-p", "no:cacheprovider"], project)
    assert result.returncode == 0, result.stdout + result.stderr
    for line in MIGRATION_TESTS_PASSED:
        assert line in result.stdout, result.stdout


@pytest.mark.postgres
def test_generated_suite_passes_on_postgresql(project: Path) -> None:
    result = run(["pytest", "-v", "-p", "no:cacheprovider"], project, postgres=True)
    assert result.returncode == 0, result.stdout + result.stderr
    for line in MIGRATION_TESTS_PASSED:
        assert line in result.stdout, result.stdout
    assert "database: throwaway databases on postgresql+asyncpg://" in result.stdout
