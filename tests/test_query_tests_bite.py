"""The generated query tests catch an N+1: break the batched loading and the suite must fail."""

from pathlib import Path

from projects import break_module, run

BATCHED_TAGS = """\
    if tags:
        links = await connection.all(_TAGS_OF_ITEMS, {"item_ids": list(tags)})
"""
# The N+1 as async code writes it: the same statement, sent once per item.
TAGS_ROW_BY_ROW = """\
    for one_item in list(tags):
        links = await connection.all(_TAGS_OF_ITEMS, {"item_ids": [one_item]})
"""
# The example reads an item with its tags in one statement; a team's ORM code that touches
# a relationship it did not load must fail, naming it (lazy="raise").
TAGS_BY_STATEMENT = """\
    rows = await reads.all(_ITEM_WITH_TAGS_BY_ID, {"item_id": item_id})
"""
TAGS_BY_RELATIONSHIP = """\
    async with reads.connect() as connection, AsyncSession(connection) as session:
        item = await session.get(Item, item_id)
        if item is not None:
            print([tag.name for tag in item.tags])
    rows = await reads.all(_ITEM_WITH_TAGS_BY_ID, {"item_id": item_id})
"""


# The tests of the item routes, where what these breakages break shows.
ITEM_TESTS = ["pytest", "-q", "-p", "no:cacheprovider", "tests/example/test_items.py"]


def test_loading_tags_row_by_row_fails_with_the_repeated_statement(project: Path) -> None:
    break_module(project, BATCHED_TAGS, TAGS_ROW_BY_ROW)
    result = run([*ITEM_TESTS, "-k", "list_items"], project)
    assert result.returncode == 1, result.stdout + result.stderr
    failed = "FAILED tests/example/test_items.py::test_list_items_runs_two_queries_whatever_"
    assert failed in result.stdout
    assert "GET /items sent 51 queries, over its budget of 2" in result.stdout
    assert (
        "repeated: 50 x SELECT itemtaglink.item_id, tag.id, tag.name FROM itemtaglink JOIN tag"
        in result.stdout
    )
    assert "my_service.py:" in result.stdout
    assert "in _item_reads" in result.stdout


def test_touching_a_relation_the_query_did_not_load_fails_naming_it(project: Path) -> None:
    break_module(project, TAGS_BY_STATEMENT, TAGS_BY_RELATIONSHIP)
    result = run([*ITEM_TESTS, "-k", "get_item_runs_one_query"], project)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "'Item.tags' is not available due to lazy='raise'" in result.stdout


def test_an_n_plus_one_tested_with_one_row_fails_once_the_rows_grow(project: Path) -> None:
    # With one item the loop sends two statements, within the list's budget: the client
    # replays the list on more rows after the test, and that fails.
    break_module(project, BATCHED_TAGS, TAGS_ROW_BY_ROW)
    one_row = (
        "tests/example/test_items.py::test_list_items_runs_two_queries_whatever_the_page_size[1]"
    )
    result = run(["pytest", "-q", "-p", "no:cacheprovider", one_row], project)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ERROR " + one_row in result.stdout
    assert "GET /items sends more statements the more rows there are" in result.stdout
    assert "sent 2, then 4, then 6, then 8" in result.stdout
    assert "repeated: 7 x SELECT itemtaglink.item_id, tag.id, tag.name FROM itemtaglink" in (
        result.stdout
    )
