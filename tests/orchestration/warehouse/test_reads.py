"""What ranking reads from the warehouse does not depend on the order the marts hold their rows."""

from __future__ import annotations

from datetime import date, datetime

import duckdb
import pandas as pd

from ml.pipeline.sources import CoVisitationSource
from orchestration.warehouse.reads import read_snapshot

EVENTS = [
    ("e1", "u1", "i1", "view", 1.0, datetime(2024, 1, 1, 10)),
    ("e2", "u1", "i2", "purchase", 5.0, datetime(2024, 1, 2, 10)),
    ("e3", "u2", "i2", "view", 1.0, datetime(2024, 1, 3, 10)),
    ("e4", "u2", "i3", "view", 1.0, datetime(2024, 1, 3, 11)),
]
ITEMS = [("i1", "One"), ("i2", "Two"), ("i3", "Three")]
# One pair on three days whose weights add up differently in different orders:
# 0.1 + 0.2 + 0.3 is 0.6000000000000001, 0.3 + 0.2 + 0.1 is 0.6.
PAIRS = [
    ("i1", "i2", date(2024, 1, 1), 0.1),
    ("i1", "i2", date(2024, 1, 2), 0.2),
    ("i1", "i2", date(2024, 1, 3), 0.3),
    ("i2", "i3", date(2024, 1, 3), 1.0),
]


def warehouse_with_rows_in(order: slice) -> duckdb.DuckDBPyConnection:
    """An in-memory warehouse whose marts hold the rows above in ``order`` (DuckDB scans a
    table in the order its rows went in, as another engine might write them)."""
    connection = duckdb.connect()
    connection.execute("create schema marts")
    connection.execute(
        "create table marts.interactions (event_id varchar, user_id varchar, item_id varchar, "
        "event_type varchar, weight double, occurred_at timestamp, value double, context varchar)"
    )
    connection.execute(
        "create table marts.items (item_id varchar, title varchar, available boolean, "
        "created_at timestamp)"
    )
    connection.execute(
        "create table marts.item_covisitation (item_id varchar, related_item_id varchar, "
        "pair_date date, pair_weight double)"
    )
    connection.executemany(
        "insert into marts.interactions values (?, ?, ?, ?, ?, ?, null, null)", EVENTS[order]
    )
    connection.executemany("insert into marts.items values (?, ?, true, null)", ITEMS[order])
    connection.executemany("insert into marts.item_covisitation values (?, ?, ?, ?)", PAIRS[order])
    return connection


def test_snapshots_of_the_same_rows_in_another_order_are_identical() -> None:
    snapshots = []
    for order in (slice(None), slice(None, None, -1)):
        with warehouse_with_rows_in(order) as connection:
            snapshots.append(read_snapshot(connection))
    forward, backward = snapshots
    pd.testing.assert_frame_equal(forward.interactions, backward.interactions)
    pd.testing.assert_frame_equal(forward.items, backward.items)
    pd.testing.assert_frame_equal(forward.covisitation, backward.covisitation)
    # So co-visitation sums the pair's days in one order, to the same last bit (no tolerance).
    related = [CoVisitationSource().fit(snapshot).related for snapshot in snapshots]
    pd.testing.assert_frame_equal(related[0], related[1], check_exact=True)
