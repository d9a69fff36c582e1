"""What the tests share, by what it serves:

- ``databases``: databases of the tests' own (SQLite files, throwaway PostgreSQL databases),
  migrated, emptied, or filled with generated rows;
- ``indexes``: what the models' indexes cover;
- ``budgets``: the client that holds every route to its query budget, and the replay that
  fails a route whose statement count grows with the rows;
- ``servers``: the service under a real uvicorn;
- ``network``: a network to PostgreSQL that fails on demand;
- ``waiting``: waiting on the service without sleeping, and reading its metrics;
- ``tokens``: tokens for the test's callers, signed with a secret of the run's own.

Import from the module (``from tests.harness.budgets import budget_client``) or from here
(``from tests.harness import ...``); ``conftest.py`` holds the fixtures.
"""

from tests.harness.budgets import (
    COPIES_PER_ROUND,
    EXERCISED_ROUTES,
    ROUNDS,
    BudgetEnforcer,
    Request,
    RowGrowth,
    assert_counts_stay_flat,
    budget_client,
)
from tests.harness.databases import (
    ALEMBIC_INI,
    alembic_config,
    assigned_by_database,
    database_at_head,
    database_server,
    empty_database,
    empty_every_table,
    fill_every_table,
    migration_engine,
    sqlite_file_at_head,
    throwaway_database,
    upgrade_to_head,
)
from tests.harness.indexes import (
    indexed_columns,
    is_partial,
    unindexed_columns,
    unindexed_foreign_keys,
)
from tests.harness.network import TcpProxy
from tests.harness.servers import (
    free_port,
    serving,
)
from tests.harness.tokens import (
    TEST_SUBJECT,
    bearer,
    declared_scopes,
    full_access,
    token,
)
from tests.harness.waiting import (
    eventually,
    flushed,
    scrape,
)

__all__ = [
    "ALEMBIC_INI",
    "COPIES_PER_ROUND",
    "EXERCISED_ROUTES",
    "ROUNDS",
    "TEST_SUBJECT",
    "BudgetEnforcer",
    "Request",
    "RowGrowth",
    "TcpProxy",
    "alembic_config",
    "assert_counts_stay_flat",
    "assigned_by_database",
    "bearer",
    "budget_client",
    "database_at_head",
    "database_server",
    "declared_scopes",
    "empty_database",
    "empty_every_table",
    "eventually",
    "fill_every_table",
    "flushed",
    "free_port",
    "full_access",
    "indexed_columns",
    "is_partial",
    "migration_engine",
    "scrape",
    "serving",
    "sqlite_file_at_head",
    "throwaway_database",
    "token",
    "unindexed_columns",
    "unindexed_foreign_keys",
    "upgrade_to_head",
]
