"""The migrations build exactly the models' schema, and every one of them can be undone.

Each test starts from an empty database of its own, on the database the suite runs on
(SQLite, or the TEST_DATABASE_URL server): see ``alembic_runner`` in conftest.py.
"""

import pytest
from pytest_alembic import MigrationContext
from pytest_alembic.plugin.error import AlembicTestFailure
from pytest_alembic.tests import test_model_definitions_match_ddl as models_match_ddl
from pytest_alembic.tests import (
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)

# Collected from pytest-alembic: one line of history, an empty database upgrades to head,
# and every revision downgrades and upgrades again.
__all__ = ["test_single_head_revision", "test_up_down_consistency", "test_upgrade"]

WHAT_TO_RUN = """
The models and the migrations disagree: a model changed without a revision. Write one with
    alembic revision --autogenerate -m "what changed"
review the file it writes in migrations/versions/, then apply it with
    alembic upgrade head"""


@pytest.mark.alembic
def test_upgrading_an_empty_database_to_head_gives_exactly_the_models_schema(
    alembic_runner: MigrationContext,
) -> None:
    # Autogenerate compares tables, columns and their types, indexes, unique and foreign
    # key constraints: any difference is a revision someone forgot to write.
    try:
        models_match_ddl(alembic_runner)
    except AlembicTestFailure as failure:
        raise AssertionError(f"{failure}\n{WHAT_TO_RUN}") from None
