"""The generated race tests catch a lost update: take away the locking and the suite must fail."""

from pathlib import Path

import pytest
from conftest import break_module, run

ROW_LOCK = "_items_with_relations().where(Item.id == item_id).with_for_update(of=Item)"
NO_ROW_LOCK = "_items_with_relations().where(Item.id == item_id)"
BEGIN_IMMEDIATE = 'event.listen(engine.sync_engine, "begin", _begin_immediate)'
# SQLite's driver then begins a transaction at the first write, after the reads.
DEFERRED_BEGIN = 'event.listen(engine.sync_engine, "begin", lambda connection: None)'
RACES = ["pytest", "-q", "-p", "no:cacheprovider", "tests/example/test_races.py"]


def assert_races_caught(result_stdout: str) -> None:
    races = "FAILED tests/example/test_races.py::"
    assert f"{races}test_concurrent_updates_leave_exactly_one" in result_stdout
    assert f"{races}test_an_update_racing_a_delete_is_applied" in result_stdout


@pytest.mark.postgres
def test_without_the_row_lock_the_races_fail_on_postgresql(project: Path) -> None:
    break_module(project, ROW_LOCK, NO_ROW_LOCK)
    result = run(RACES, project, postgres=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert_races_caught(result.stdout)
    assert "500 Internal Server Error" in result.stdout  # the PATCH that raced a DELETE


def test_without_begin_immediate_the_races_fail_on_sqlite(project: Path) -> None:
    break_module(project, BEGIN_IMMEDIATE, DEFERRED_BEGIN)
    result = run(RACES, project)
    assert result.returncode == 1, result.stdout + result.stderr
    assert_races_caught(result.stdout)
