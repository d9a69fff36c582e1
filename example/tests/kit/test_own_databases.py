"""The tests' own databases: on PostgreSQL, each named with TEST_DATABASE_PREFIX."""

import pytest
from sqlalchemy import make_url

from tests.harness.databases import TEST_DATABASE_PREFIX, database_server, throwaway_database


def test_the_tests_databases_are_named_with_the_prefix(database_url: str) -> None:
    if database_server() is None:
        pytest.skip("the tests' databases are in-memory SQLite; they have no name")
    session_database = make_url(database_url).database or ""
    with throwaway_database("named") as url:
        test_database = make_url(url).database or ""
    for name in (session_database, test_database):
        assert name.startswith(f"{TEST_DATABASE_PREFIX}_"), name
