"""Every column the example's routes filter or sort on leads an index."""

from tests.harness.indexes import unindexed_columns

# (table, column) pairs that the example's routes filter or sort on.
FILTERED_AND_SORTED = [
    ("item", "owner_id"),
    ("item", "id"),
    ("owner", "id"),
    ("ownersummary", "owner_id"),
    ("tag", "id"),
]


def test_every_filtered_or_sorted_column_leads_an_index() -> None:
    # Partial indexes count here: the plan tests check each route's query matches the
    # condition of the index that serves it.
    unindexed = unindexed_columns(FILTERED_AND_SORTED)
    assert not unindexed, f"filtered or sorted on without an index: {unindexed}"
