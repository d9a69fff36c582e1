"""The generated README's recipe, "Add a model and its routes", followed literally: the suite
is green; then the same route with an N+1 under a raised budget, and a route no test calls,
and the suite is red, naming each.
"""

import re
from pathlib import Path

import pytest
from projects import (
    CHECKS,
    copy_of,
    defaults_suite,
    insert_above,
    mypy_cache,
    recipe_project,
    run,
)

# What the recipe's list route becomes in a hurry: each note read on its own, the budget
# and the test raised to what one row costs.
BATCHED = """\
    rows = await reads.all(_NOTES_PAGE, {"after": after, "limit": limit})
    notes = [_NOTE_ANSWER(row) for row in rows]
"""
ONE_BY_ONE = """\
    page = await reads.all(_NOTES_PAGE, {"after": after, "limit": limit})
    notes = []
    for listed in page:
        row = await reads.first(_NOTE_BY_ID, {"note_id": listed[0]})
        notes.append(_NOTE_ANSWER(row or listed))
"""
NOT_CALLING_ROUTES = (
    "test_fuzz.py",
    "test_instances.py",
    "test_loadtest.py",
    "test_probes.py",
    "test_server.py",
    "test_server_errors.py",
    "test_slow_peers.py",
    "test_tokens.py",
)
UNTESTED_ROUTE = '''\
@router.get("/notes-count")
@query_budget(0)
@access(AUTHENTICATED)
async def count_notes() -> dict[str, int]:
    """A route no test calls."""
    return {"count": 0}
'''


@pytest.fixture(scope="module")
def followed(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A default rendering with the recipe's model, revision, routes and test in it."""
    return recipe_project(template, tmp_path_factory)


def test_the_recipe_writes_a_revision_of_the_new_table(followed: Path) -> None:
    written = list((followed / "migrations" / "versions").glob("*add_notes.py"))
    assert len(written) == 1, sorted(path.name for path in written)
    assert 'op.create_table(\n        "note",' in written[0].read_text()


def test_the_recipe_gives_a_clean_project_and_a_green_suite(
    followed: Path, template: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    # mypy starts from the cache of this run's check of the default answers (projects.py).
    cache = mypy_cache(template, tmp_path_factory, tmp_path / "mypy-cache")
    for command in CHECKS:
        if command[0] == "mypy":
            command = ["mypy", "--cache-dir", str(cache), "."]
        result = run(command, followed)
        assert result.returncode == 0, result.stdout + result.stderr
    # The run test_render.py makes for the default answers: this project's suite.
    result, _ = defaults_suite(template, tmp_path_factory)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASSED tests/test_notes.py::" in result.stdout, result.stdout
    assert "every route is called by a test" not in result.stdout


def test_an_n_plus_one_and_an_untested_route_turn_the_suite_red(
    followed: Path, tmp_path: Path
) -> None:
    project = copy_of(followed, tmp_path / "project")
    # The kit's tests that call none of the app's routes through the client (they serve apps
    # of their own, or fuzz every route) are left out, to keep this run short: the suite is
    # still whole, every file that is there runs, so the check of untested routes runs too.
    for name in NOT_CALLING_ROUTES:
        (project / "tests" / "kit" / name).unlink()
    module = project / "my_service.py"
    source = module.read_text()
    assert BATCHED in source
    listed = '@router.get("/notes", response_model=NotePage)\n'
    source = source.replace(BATCHED, ONE_BY_ONE).replace(
        listed + "@query_budget(1)", listed + "@query_budget(2)"
    )
    module.write_text(source)
    insert_above(module, "# --- App ---", UNTESTED_ROUTE)
    tests = project / "tests" / "test_notes.py"
    tests.write_text(
        tests.read_text().replace(
            '    with expect_queries(1):\n        response = await client.get("/notes")\n',
            '    with expect_queries(2):\n        response = await client.get("/notes")\n',
        )
    )
    # Wide enough a terminal that the summary's lines keep their reasons.
    result = run(
        ["pytest", "-q", "-p", "no:cacheprovider"], project, environment={"COLUMNS": "200"}
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ERROR tests/test_notes.py::test_list_notes_runs_one_query" in result.stdout
    assert "GET /notes sends more statements the more rows there are" in result.stdout
    assert "repeated: 7 x SELECT note.id, note.title, note.body FROM note WHERE" in result.stdout
    assert "in list_notes" in result.stdout
    # The route no test called is a failed test, named on its FAILED line with the fix, and
    # counted in the last line.
    failed = "FAILED tests/conftest.py::every route is called by a test[GET /notes-count] - "
    assert failed in result.stdout, result.stdout
    assert result.stdout.count("FAILED tests/conftest.py::every route") == 1, result.stdout
    assert "no test called GET /notes-count: add a test" in result.stdout, result.stdout
    assert re.search(r"^\d+ failed, \d+ passed.* in ", result.stdout, re.M), result.stdout


def test_the_readmes_commands_for_a_teams_own_file_run_it_and_the_fuzz_of_its_routes(
    followed: Path, tmp_path: Path
) -> None:
    # A copy: the shared project is copied by other tests while this one's runs write in it.
    project = copy_of(followed, tmp_path / "project")
    readme = (project / "README.md").read_text()
    found = re.search(
        r"^```sh\n(\.venv/bin/pytest tests/test_notes\.py\n.*?)```", readme, re.S | re.M
    )
    assert found, "the README gives no commands for a team's own test file"
    own_file, with_the_fuzz = found.group(1).splitlines()
    for command, fuzzed in ((own_file, 0), (with_the_fuzz, 3)):
        words = command.removeprefix(".venv/bin/").split()
        result = run([*words, "-rfEsp", "-p", "no:cacheprovider"], project)
        assert result.returncode == 0, result.stdout + result.stderr
        # The recipe's three tests, and the fuzz of its three routes (POST /notes, GET /notes,
        # GET /notes/{note_id}) and no other.
        assert result.stdout.count("PASSED tests/test_notes.py::") == 3, result.stdout
        fuzz = "PASSED tests/kit/test_fuzz.py::test_every_route_answers_as_its_schema_says"
        assert result.stdout.count(fuzz) == fuzzed, result.stdout
