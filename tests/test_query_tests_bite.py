"""The generated query tests catch an N+1: break eager loading and the suite must fail."""

from pathlib import Path

import pytest
from conftest import render, run

EAGER = "_ITEM_RELATIONS = (joinedload(_relation(Item.owner)), selectinload(_relation(Item.tags)))"


@pytest.fixture
def project(template: Path, tmp_path: Path) -> Path:
    project = render(template, tmp_path / "project")
    assert EAGER in (project / "my_service.py").read_text(), "the eager loading moved"
    return project


def break_module(project: Path, old: str, new: str) -> None:
    module = project / "my_service.py"
    source = module.read_text()
    assert old in source, f"{old!r} is not in the module any more"
    module.write_text(source.replace(old, new))


def test_loading_tags_row_by_row_fails_with_the_repeated_statement(project: Path) -> None:
    # The async N+1: eager loading dropped, each row's tags fetched on their own.
    break_module(project, EAGER, "_ITEM_RELATIONS = (joinedload(_relation(Item.owner)),)")
    break_module(
        project,
        "    next_after = items[-1].id if len(items) == limit else None\n",
        "    for item in items:\n"
        '        await session.refresh(item, ["tags"])\n'
        "    next_after = items[-1].id if len(items) == limit else None\n",
    )
    result = run(["pytest", "-q", "-p", "no:cacheprovider", "-k", "list_items"], project)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED tests/test_items.py::test_list_items_runs_two_queries_whatever_" in result.stdout
    # Each row costs two statements (the refresh checks the row, then loads its tags).
    assert "GET /items sent 101 queries, over its budget of 2" in result.stdout
    assert "repeated: 50 x SELECT tag.id, tag.name FROM tag, itemtaglink" in result.stdout
    assert "my_service.py:" in result.stdout
    assert "in list_items" in result.stdout


def test_touching_a_relation_the_query_did_not_load_fails_naming_it(project: Path) -> None:
    break_module(project, EAGER, "_ITEM_RELATIONS = (joinedload(_relation(Item.owner)),)")
    result = run(["pytest", "-q", "-p", "no:cacheprovider", "-k", "list_items"], project)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "'Item.tags' is not available due to lazy='raise'" in result.stdout
