"""The generated race tests catch a lost update: lock too late and the suite must fail."""

from pathlib import Path

import pytest
from projects import break_module, run

# PATCH's UPDATE locks the row before the tags are replaced. Moved after them, the tag sets of
# concurrent PATCHes merge on PostgreSQL, and a PATCH that lost the race to a DELETE links tags
# to a row that is gone (a 500) on both databases. (On SQLite, concurrent PATCHes still take
# turns: a transaction takes the write lock with its first write, which PATCH's first
# statement is either way.)
_LOCK_THE_ROW = """\
    parameters = {"item_id": item_id, **changes, **_changer(caller)}
    row = await writes.first(_UPDATE_ITEM, parameters)
    if row is None:
        raise _not_found("item", item_id)
"""
_REPLACE_TAGS = "        tags = await _replace_tags(writes, item_id, body.tag_ids)\n"
_READ_TAGS = (
    "    if body.tag_ids is None:\n        tags = await _tags_of_item(writes, item_id)\n"
)
ROW_LOCK_FIRST = _LOCK_THE_ROW + _READ_TAGS + "    else:\n" + _REPLACE_TAGS
ROW_LOCK_LAST = "    if body.tag_ids is not None:\n" + _REPLACE_TAGS + _LOCK_THE_ROW + _READ_TAGS
RACES = ["pytest", "-q", "-p", "no:cacheprovider", "tests/example/test_races.py"]


def assert_races_caught(result_stdout: str) -> None:
    races = "FAILED tests/example/test_races.py::"
    assert f"{races}test_concurrent_updates_leave_exactly_one" in result_stdout
    assert f"{races}test_an_update_racing_a_delete_is_applied" in result_stdout


@pytest.mark.postgres
def test_with_the_row_locked_last_the_races_fail_on_postgresql(project: Path) -> None:
    break_module(project, ROW_LOCK_FIRST, ROW_LOCK_LAST)
    result = run(RACES, project, postgres=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert_races_caught(result.stdout)
    # the PATCH that raced a DELETE gets the 422 of the row it lost, not the 404 it should
    assert "assert (422, 204) in {(200, 204), (404, 204)}" in result.stdout, result.stdout


def test_with_the_row_locked_last_a_patch_racing_a_delete_fails_on_sqlite(project: Path) -> None:
    break_module(project, ROW_LOCK_FIRST, ROW_LOCK_LAST)
    result = run(RACES, project)
    assert result.returncode == 1, result.stdout + result.stderr
    races = "FAILED tests/example/test_races.py::"
    assert f"{races}test_an_update_racing_a_delete_is_applied" in result.stdout
    assert "assert (422, 204) in {(200, 204), (404, 204)}" in result.stdout, result.stdout
