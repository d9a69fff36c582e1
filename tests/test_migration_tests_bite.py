"""The generated migration tests catch a schema that the migrations and the models disagree on."""

import re
from pathlib import Path

import pytest
from projects import edit, run

INDEX_IN_0001 = '    operations.create_index("ix_itemtaglink_tag_id", "itemtaglink", ["tag_id"])\n'
PRICE_COLUMN = "    price_cents: NonNegativeInt4\n"
PRICE_AND_SKU_COLUMNS = PRICE_COLUMN + '    sku: str = Field(default="", max_length=20)\n'
SCHEMA_TEST = (
    "tests/kit/test_migrations.py::"
    "test_upgrading_an_empty_database_to_head_gives_exactly_the_models_schema"
)
LIVE_ITEMS = "    postgresql_where=~col(Item.archived),\n    sqlite_where=~col(Item.archived),\n"
# What autogenerate does not compare: with its condition changed in the model alone, the
# partial index differs only in the database's catalogue.
PRICED_ITEMS = (
    "    postgresql_where=col(Item.price_cents) > 0,\n    sqlite_where=col(Item.price_cents) > 0,\n"
)
CATALOGUE_TEST = (
    "tests/kit/test_migrations.py::test_upgrading_to_head_builds_what_the_models_would_create"
)
WHAT_TO_RUN = 'alembic revision --autogenerate -m "what changed"'
# The generated suite's migration tests: the rest of the suite is checked in test_render.py.
MIGRATION_TESTS = ["pytest", "-q", "-p", "no:cacheprovider", "tests/kit/test_migrations.py"]
DATABASES = [
    pytest.param(False, id="sqlite"),
    pytest.param(True, id="postgresql", marks=pytest.mark.postgres),
]


@pytest.mark.parametrize("postgres", DATABASES)
def test_a_revision_without_an_index_of_the_models_fails_the_suite(
    project: Path, postgres: bool
) -> None:
    edit(project / "migrations" / "versions" / "0001_initial.py", INDEX_IN_0001, "")
    result = run(MIGRATION_TESTS, project, postgres=postgres)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"FAILED {SCHEMA_TEST}" in result.stdout, result.stdout
    # op.create_index(...) on PostgreSQL, batch_op.create_index(batch_op.f(...)) on SQLite
    assert re.search(r"create_index\((\w+\.f\()?'ix_itemtaglink_tag_id'", result.stdout), (
        result.stdout
    )


@pytest.mark.parametrize("postgres", DATABASES)
def test_a_model_changed_without_a_revision_fails_saying_what_to_run(
    project: Path, postgres: bool
) -> None:
    edit(project / "my_service.py", PRICE_COLUMN, PRICE_AND_SKU_COLUMNS)
    result = run(MIGRATION_TESTS, project, postgres=postgres)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"FAILED {SCHEMA_TEST}" in result.stdout, result.stdout
    assert "sa.Column('sku', sa.String(length=20), nullable=False))" in result.stdout
    assert WHAT_TO_RUN in result.stdout, result.stdout


@pytest.mark.parametrize("postgres", DATABASES)
def test_a_partial_index_changed_without_a_revision_fails_the_catalogue_test(
    project: Path, postgres: bool
) -> None:
    edit(project / "my_service.py", LIVE_ITEMS, PRICED_ITEMS)
    result = run([*MIGRATION_TESTS, "-rA"], project, postgres=postgres)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"FAILED {CATALOGUE_TEST}" in result.stdout, result.stdout
    assert f"PASSED {SCHEMA_TEST}" in result.stdout, "autogenerate saw it after all"
    assert "price_cents > 0" in result.stdout, result.stdout
