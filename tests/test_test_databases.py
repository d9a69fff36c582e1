"""A generated suite never touches the service's database, whatever DATABASE_URL says.

The service's database is a canary here: a SQLite file, or a PostgreSQL database made and
filled for the purpose (``projects.generated_suite``). The suite runs with DATABASE_URL
exported (as a developer's shell has it after sourcing .env), on SQLite and with the README's
PostgreSQL command; the canary must be exactly as it was. A TEST_DATABASE_URL that names the
service's database is refused.
"""

import re
import sys
from pathlib import Path

import pytest
from projects import copy_of, defaults_suite, generated_suite, run, shared_rendering
from test_render import MATRIX


@pytest.fixture(scope="module")
def project(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    defaults = shared_rendering(template, tmp_path_factory, "defaults")
    project = copy_of(defaults, tmp_path_factory.mktemp("canary") / "project")
    # The README's commands run .venv/bin/...: this environment, which has what they need.
    (project / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    return project


def test_the_suite_on_sqlite_leaves_the_services_sqlite_database_alone(
    template: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # The run test_render.py checks too: the default answers' suite, with DATABASE_URL naming
    # a SQLite file.
    result, changes = defaults_suite(template, tmp_path_factory)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not changes


@pytest.mark.postgres
def test_the_readme_postgresql_command_leaves_the_services_database_alone(
    template: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # The README's command is TEST_DATABASE_URL=<server> .venv/bin/pytest: what the run that
    # test_render.py checks on PostgreSQL does, with DATABASE_URL naming a PostgreSQL canary.
    name = "sqlite-bare"
    rendering = shared_rendering(template, tmp_path_factory, name, **MATRIX[name])
    readme = (rendering / "README.md").read_text()
    assert re.search(
        r"^TEST_DATABASE_URL=postgresql\+asyncpg://\S+ \.venv/bin/pytest$", readme, re.M
    )
    result, changes = generated_suite(tmp_path_factory, name, rendering, postgres=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout, result.stdout
    assert not changes


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
