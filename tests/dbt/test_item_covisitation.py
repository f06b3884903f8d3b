"""item_covisitation built incrementally equals it built from scratch, and rewrites only the
pair dates a new batch can change.

The window is two events (and the default 24 hours), so that one late event pushes an older pair
out of it. The second batch holds a late event, a re-delivery that moves an event to another day,
a re-delivery that turns an event into an impression (weight 0) and events on a new day.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.dbt.warehouse_runs import create_warehouse, load_batch, orchestration_vars, run_dbt

CONTRACT_COLUMNS = ("item_id", "related_item_id", "pair_date", "pair_weight")
UNTOUCHED_DATE = date(2024, 1, 12)
FIRST_LOAD_AT = datetime(2024, 1, 20)
SECOND_LOAD_AT = datetime(2024, 1, 21)

# (event_id, user_id, item_id, event_type, occurred_at, value)
FIRST_EVENTS = [
    ("a1", "u1", "i1", "view", "2024-01-01 10:00", None),
    ("a2", "u1", "i2", "click", "2024-01-01 11:00", None),
    ("a3", "u1", "i3", "view", "2024-01-01 12:00", None),
    ("a4", "u1", "i4", "view", "2024-01-02 09:00", None),
    ("b1", "u2", "i1", "view", "2024-01-03 10:00", None),
    ("b2", "u2", "i2", "view", "2024-01-03 20:00", None),
    ("b3", "u2", "i3", "view", "2024-01-04 08:00", None),
    ("c1", "u3", "i5", "view", "2024-01-05 10:00", None),
    ("c2", "u3", "i6", "view", "2024-01-05 11:00", None),
    ("d1", "u4", "i7", "view", "2024-01-12 10:00", None),
    ("d2", "u4", "i8", "view", "2024-01-12 11:00", None),
]
SECOND_EVENTS = [
    ("a5", "u1", "i5", "view", "2024-01-01 10:30", None),  # late: between a1 and a2
    ("b2", "u2", "i2", "view", "2024-01-06 20:00", None),  # re-delivered three days later
    ("c2", "u3", "i6", "impression", "2024-01-05 11:00", None),  # re-delivered as weight 0
    ("c3", "u3", "i7", "view", "2024-01-08 10:00", None),
    ("c4", "u3", "i5", "view", "2024-01-08 11:00", None),
]
ITEMS = [(f"i{number}", f"Item {number}", True) for number in range(1, 9)]

# (earlier item, later item, date of the later event) after both batches.
EXPECTED_FORWARD_PAIRS = [
    ("i1", "i5", date(2024, 1, 1)),  # a1 -> a5: the late event pairs both ways
    ("i1", "i2", date(2024, 1, 1)),  # a1 -> a2; a1 -> a3 is now three events away
    ("i5", "i2", date(2024, 1, 1)),
    ("i5", "i3", date(2024, 1, 1)),
    ("i2", "i3", date(2024, 1, 1)),
    ("i2", "i4", date(2024, 1, 2)),  # 22 hours apart, across midnight
    ("i3", "i4", date(2024, 1, 2)),
    ("i1", "i3", date(2024, 1, 4)),  # b1 -> b3; b2 left for 2024-01-06, beyond 24 hours
    ("i7", "i8", UNTOUCHED_DATE),
    ("i7", "i5", date(2024, 1, 8)),
]


def covisitation(warehouse: Path) -> list[dict[str, Any]]:
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        relation = connection.sql("select * from marts.item_covisitation order by all")
        return [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]


def contract_rows(rows: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    return {tuple(row[column] for column in CONTRACT_COLUMNS) for row in rows}


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """The mart after a first batch, after an incremental run on a second, and rebuilt from scratch.

    Between the first two runs the untouched date's weights are overwritten with -1, to see whether
    the incremental run rewrites that date; they are put back before the full refresh.
    """
    work_dir = tmp_path_factory.mktemp("item_covisitation")
    warehouse = work_dir / "warehouse.duckdb"
    create_warehouse(warehouse)
    build = orchestration_vars(covisitation_window_events=2)

    load_batch(warehouse, FIRST_EVENTS, ITEMS, "b1", FIRST_LOAD_AT)
    run_dbt(work_dir, warehouse, arguments=build)
    first = covisitation(warehouse)
    with duckdb.connect(str(warehouse)) as connection:
        connection.execute(
            "update marts.item_covisitation set pair_weight = -1 where pair_date = ?",
            [UNTOUCHED_DATE],
        )

    load_batch(warehouse, SECOND_EVENTS, [], "b2", SECOND_LOAD_AT)
    run_dbt(work_dir, warehouse, arguments=build)
    incremental = covisitation(warehouse)
    with duckdb.connect(str(warehouse)) as connection:
        for row in first:
            if row["pair_date"] == UNTOUCHED_DATE:
                connection.execute(
                    "update marts.item_covisitation set pair_weight = ? "
                    "where item_id = ? and related_item_id = ? and pair_date = ?",
                    [row["pair_weight"], row["item_id"], row["related_item_id"], UNTOUCHED_DATE],
                )
    restored = covisitation(warehouse)

    run_dbt(work_dir, warehouse, arguments=[*build, "--full-refresh"])
    full_refresh = covisitation(warehouse)
    return {
        "first": first,
        "incremental": incremental,
        "restored": restored,
        "full_refresh": full_refresh,
    }


def test_first_build_pairs_each_event_with_its_next_two(
    tables: dict[str, list[dict[str, Any]]],
) -> None:
    first = contract_rows(tables["first"])
    assert ("i1", "i3", date(2024, 1, 1), 1.0) in first
    assert ("i1", "i2", date(2024, 1, 3), 1.0) in first
    assert ("i5", "i6", date(2024, 1, 5), 1.0) in first
    assert ("i6", "i5", date(2024, 1, 5), 0.5) in first


def test_incremental_run_equals_a_full_refresh(tables: dict[str, list[dict[str, Any]]]) -> None:
    assert tables["restored"] == tables["full_refresh"]  # every column, watermark included


def test_incremental_run_leaves_dates_without_new_events_alone(
    tables: dict[str, list[dict[str, Any]]],
) -> None:
    untouched = [row for row in tables["incremental"] if row["pair_date"] == UNTOUCHED_DATE]
    assert len(untouched) == 2
    assert {row["pair_weight"] for row in untouched} == {-1}


def test_incremental_run_recomputes_every_date_the_batch_can_change(
    tables: dict[str, list[dict[str, Any]]],
) -> None:
    expected = {(earlier, later, day, 1.0) for earlier, later, day in EXPECTED_FORWARD_PAIRS} | {
        (later, earlier, day, 0.5) for earlier, later, day in EXPECTED_FORWARD_PAIRS
    }
    assert contract_rows(tables["restored"]) == expected
    # 2024-01-03 and 2024-01-05 lost all their pairs: no row, not even the null marker, is left.
    assert all(row["item_id"] is not None for row in tables["incremental"])


def test_rows_carry_the_newest_load_behind_them(tables: dict[str, list[dict[str, Any]]]) -> None:
    loads = {
        (row["item_id"], row["related_item_id"], row["pair_date"]): row["max_loaded_at"]
        for row in tables["restored"]
    }
    assert loads["i1", "i2", date(2024, 1, 1)] == FIRST_LOAD_AT
    assert loads["i1", "i5", date(2024, 1, 1)] == SECOND_LOAD_AT
    assert loads["i7", "i8", UNTOUCHED_DATE] == FIRST_LOAD_AT
