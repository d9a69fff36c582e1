"""Fixtures for testing the template: renderings made by real Copier, and fresh databases.

What tests import is in ``projects.py``.
"""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from projects import ROOT, copy_of, new_postgres_database, shared_rendering
from render_example import NOT_TEMPLATE

# The modules whose tests run whole generated suites (a minute or two each) start first, so
# that pytest-xdist's workers end together on short tests instead of one of them waiting
# alone for the last suite; the others keep their order after them.
LONGEST_FIRST = ("test_update.py", "test_render.py", "test_recipe.py", "test_ecosystem.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each module keeps pytest's order of its tests


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working tree of the template, uncommitted changes included, outside git."""
    snapshot = tmp_path_factory.mktemp("template") / "sqlmodel-starter"
    shutil.copytree(ROOT, snapshot, ignore=NOT_TEMPLATE)
    return snapshot


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """The SQLAlchemy URL of a new, empty PostgreSQL database, dropped afterwards."""
    with new_postgres_database() as url:
        yield url


@pytest.fixture
def project(template: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    """A rendering with the default answers, for a test to break."""
    return copy_of(shared_rendering(template, tmp_path_factory, "defaults"), tmp_path / "project")
