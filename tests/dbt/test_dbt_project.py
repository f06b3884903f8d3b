"""The dbt project end to end: build a tiny warehouse, load a second batch, build again, re-run."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import duckdb
import pytest

from tests.dbt.warehouse_runs import (
    BuildOutcome,
    create_warehouse,
    load_batch,
    orchestration_vars,
    run_dbt,
)

FIRST_LOAD_AT = datetime(2024, 1, 10)
SECOND_LOAD_AT = datetime(2024, 1, 11)

# (event_id, user_id, item_id, event_type, occurred_at, value)
FIRST_EVENTS = [
    ("e1", "u1", "i1", "view", "2024-01-01 10:00", None),
    ("e2", "u1", "i2", "click", "2024-01-02 10:00", None),
    ("e3", "u2", "i1", "purchase", "2024-01-03 10:00", None),
    ("e4", "u2", "i3", "rate", "2024-01-04 10:00", 4.0),
    ("e5", "u3", "i2", "impression", "2024-01-05 10:00", None),
    ("e6", "u3", "i1", "dislike", "2024-01-06 10:00", None),
    ("e7", "u1", "i3", "like", "2024-01-07 10:00", None),
    ("e8", "u2", "007", "add_to_cart", "2024-01-08 10:00", None),
    ("e9", "u3", "7", "view", "2024-01-08 12:00", None),
    ("e10", "u1", "i1", "purchase", "2024-01-09 10:00", None),
    ("e10", "u1", "i1", "purchase", "2024-01-09 10:00", None),  # delivered twice in one file
]
SECOND_EVENTS = [
    ("e11", "u4", "i2", "click", "2023-12-31 10:00", None),  # late: older than everything loaded
    ("e3", "u2", "i1", "purchase", "2024-01-03 10:00", None),  # re-delivered
    ("e12", "u4", "i9", "view", "2024-01-09 11:00", None),  # item not in the catalog (yet)
]
# (item_id, title, available)
FIRST_ITEMS = [
    ("i1", "Item one", True),
    ("i2", "Item two", True),
    ("i3", "Item three", True),
    ("007", "Bond", True),
    ("7", "Seven", True),
    ("i4", "Nobody touched this", True),
]
SECOND_ITEMS = [("i1", "Item one, second edition", False)]


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuildOutcome]:
    """Build after a first load, after a second load, and once more with nothing new."""
    work_dir = tmp_path_factory.mktemp("dbt_project")
    warehouse = work_dir / "warehouse.duckdb"
    create_warehouse(warehouse)

    load_batch(warehouse, FIRST_EVENTS, FIRST_ITEMS, "b1", FIRST_LOAD_AT)
    first = run_dbt(work_dir, warehouse, arguments=orchestration_vars())
    load_batch(warehouse, SECOND_EVENTS, SECOND_ITEMS, "b2", SECOND_LOAD_AT)
    second = run_dbt(work_dir, warehouse, arguments=orchestration_vars())
    # What a full build's interactions would hold now: the intermediate view over every raw event.
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        relation = connection.sql(
            "select * from intermediate.int_interactions_weighted order by all"
        )
        second.views["int_interactions_weighted"] = [
            dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()
        ]
    rerun = run_dbt(work_dir, warehouse, arguments=orchestration_vars())
    return {"first": first, "second": second, "rerun": rerun}


def by_key(rows: list[dict[str, Any]], key: str) -> dict[Any, dict[str, Any]]:
    return {row[key]: row for row in rows}


def test_first_build_passes_every_model_data_test_and_unit_test(
    builds: dict[str, BuildOutcome],
) -> None:
    statuses = builds["first"].statuses
    assert set(statuses.values()) <= {"success", "pass"}, statuses
    unit_tests = [node for node in statuses if node.startswith("unit_test.")]
    assert len(unit_tests) >= 4


def test_second_build_only_warns_about_events_on_items_missing_from_the_catalog(
    builds: dict[str, BuildOutcome],
) -> None:
    not_passing = {
        node: status
        for node, status in builds["second"].statuses.items()
        if status not in {"success", "pass"}
    }
    assert not_passing, "the event on item i9 should make the catalog relationship warn"
    assert set(not_passing.values()) == {"warn"}
    assert all("relationships" in node and "ref_items_" in node for node in not_passing)


def test_first_load_keeps_one_interaction_per_event_with_its_weight(
    builds: dict[str, BuildOutcome],
) -> None:
    interactions = builds["first"].marts["interactions"]
    assert sorted(row["event_id"] for row in interactions) == sorted(
        {event[0] for event in FIRST_EVENTS}
    )
    weights = {row["event_id"]: row["weight"] for row in interactions}
    assert weights["e1"] == 1.0  # view
    assert weights["e4"] == pytest.approx(4 * 4.0 / 5)  # rate 4 of 5
    assert weights["e5"] == 0.0  # impression
    assert weights["e6"] == -4.0  # dislike


def test_second_load_adds_late_events_and_replaces_redelivered_ones(
    builds: dict[str, BuildOutcome],
) -> None:
    interactions = builds["second"].marts["interactions"]
    event_ids = [row["event_id"] for row in interactions]
    assert len(event_ids) == len(set(event_ids)) == 12
    rows = by_key(interactions, "event_id")
    assert rows["e11"]["occurred_at"] == datetime(2023, 12, 31, 10)
    assert rows["e11"]["loaded_at"] == SECOND_LOAD_AT
    assert rows["e3"]["loaded_at"] == SECOND_LOAD_AT
    assert rows["e1"]["loaded_at"] == FIRST_LOAD_AT


def test_the_incremental_interactions_equal_a_full_build_over_every_raw_event(
    builds: dict[str, BuildOutcome],
) -> None:
    """The second build deduplicated and weighed only the second batch's rows; the result must be
    what deduplicating and weighing every raw event gives (the intermediate view)."""
    assert (
        builds["second"].marts["interactions"]
        == builds["second"].views["int_interactions_weighted"]
    )


def test_rerun_without_a_new_batch_changes_nothing(builds: dict[str, BuildOutcome]) -> None:
    assert builds["rerun"].marts == builds["second"].marts


def test_items_take_the_latest_version_and_count_interactions(
    builds: dict[str, BuildOutcome],
) -> None:
    items = by_key(builds["second"].marts["items"], "item_id")
    assert set(items) == {"i1", "i2", "i3", "i4", "007", "7"}
    assert items["i1"]["title"] == "Item one, second edition"
    assert items["i1"]["available"] is False
    assert items["i1"]["interaction_count"] == 4
    assert items["i1"]["user_count"] == 3
    assert items["i2"]["first_interaction_at"] == datetime(2023, 12, 31, 10)
    assert items["007"]["interaction_count"] == items["7"]["interaction_count"] == 1
    untouched = items["i4"]
    assert (untouched["interaction_count"], untouched["user_count"]) == (0, 0)
    assert untouched["first_interaction_at"] is None and untouched["last_interaction_at"] is None


def test_users_summarise_their_events(builds: dict[str, BuildOutcome]) -> None:
    users = by_key(builds["second"].marts["users"], "user_id")
    assert set(users) == {"u1", "u2", "u3", "u4"}
    assert users["u4"]["first_event_at"] == datetime(2023, 12, 31, 10)
    assert users["u4"]["last_event_at"] == datetime(2024, 1, 9, 11)
    assert (users["u1"]["event_count"], users["u1"]["item_count"]) == (4, 3)


def test_item_trending_measures_from_the_newest_event_time(
    builds: dict[str, BuildOutcome],
) -> None:
    trending = by_key(builds["second"].marts["item_trending"], "item_id")
    as_of = datetime(2024, 1, 9, 11)  # e12, the newest occurred_at; not the wall clock
    assert {row["as_of"] for row in trending.values()} == {as_of}

    # i1: view (1), purchase (5), dislike (counts 0), purchase (5); half-life 7 days.
    i1_events = [
        (1.0, datetime(2024, 1, 1, 10)),
        (5.0, datetime(2024, 1, 3, 10)),
        (5.0, datetime(2024, 1, 9, 10)),
    ]
    expected_score = sum(
        weight * math.exp(-math.log(2) * (as_of - occurred_at).total_seconds() / 86400 / 7)
        for weight, occurred_at in i1_events
    )
    assert trending["i1"]["decayed_score"] == pytest.approx(expected_score)
    # Published to 9 decimal places (fixed_decimals), so that every engine gives the same value.
    assert all(row["decayed_score"] == round(row["decayed_score"], 9) for row in trending.values())
    assert trending["i1"]["short_window_events"] == 1
    assert trending["i1"]["long_window_events"] == 2
    assert trending["i1"]["trending_rank"] == 1
    assert sorted(row["trending_rank"] for row in trending.values()) == list(
        range(1, len(trending) + 1)
    )


def test_user_recent_history_lists_positive_events_newest_first(
    builds: dict[str, BuildOutcome],
) -> None:
    history = [
        row for row in builds["second"].marts["user_recent_history"] if row["user_id"] == "u1"
    ]
    history.sort(key=lambda row: row["recency_rank"])
    assert [row["event_id"] for row in history] == ["e10", "e7", "e2", "e1"]
    assert [row["recency_rank"] for row in history] == [1, 2, 3, 4]
    assert all(row["weight"] > 0 for row in builds["second"].marts["user_recent_history"])


def test_the_incremental_recent_histories_equal_a_full_computation(
    builds: dict[str, BuildOutcome],
) -> None:
    """The second build recomputed only the users its batch touched (u2's re-delivered purchase,
    u4's late click); every user's history must still be what ranking all of their positive
    interactions gives, and the untouched users' rows are the first build's."""
    positive: dict[str, list[dict[str, Any]]] = {}
    for row in builds["second"].marts["interactions"]:
        if row["weight"] > 0:
            positive.setdefault(row["user_id"], []).append(row)
    expected = set()
    for user, rows in positive.items():
        rows.sort(key=lambda row: (row["occurred_at"], row["event_id"]), reverse=True)
        expected |= {(user, rank, row["event_id"]) for rank, row in enumerate(rows[:50], 1)}
    history = builds["second"].marts["user_recent_history"]
    assert {(row["user_id"], row["recency_rank"], row["event_id"]) for row in history} == expected
    through = {row["user_id"]: row["loaded_through"] for row in history}
    assert through["u2"] == through["u4"] == SECOND_LOAD_AT
    assert through["u1"] == FIRST_LOAD_AT  # not rewritten
    assert builds["rerun"].marts["user_recent_history"] == history


def test_the_incremental_users_follow_new_loads_and_retention(tmp_path) -> None:
    """users recomputes the users a batch touched and those whose old events retention deleted
    (as orchestration.privacy.retention deletes them: every table with occurred_at); a user with
    no event left goes. Every row must equal the aggregate over the interactions left."""
    from orchestration.privacy.erase import delete_in_warehouse

    warehouse = tmp_path / "warehouse.duckdb"
    create_warehouse(warehouse)
    load_batch(warehouse, FIRST_EVENTS, FIRST_ITEMS, "b1", FIRST_LOAD_AT)
    run_dbt(tmp_path, warehouse, arguments=orchestration_vars())
    load_batch(warehouse, SECOND_EVENTS, SECOND_ITEMS, "b2", SECOND_LOAD_AT)
    second = run_dbt(tmp_path, warehouse, arguments=orchestration_vars())
    through = {row["user_id"]: row["loaded_through"] for row in second.marts["users"]}
    # Only the second batch's users (u2 re-delivered, u4 new) were recomputed.
    assert through == {
        "u1": FIRST_LOAD_AT,
        "u2": SECOND_LOAD_AT,
        "u3": FIRST_LOAD_AT,
        "u4": SECOND_LOAD_AT,
    }
    # Everything before 2024-01-08 12:30 goes: u2 and u3 keep nothing, u1 and u4 one event each.
    delete_in_warehouse(
        warehouse, {"occurred_at": lambda column: f"{column} < timestamp '2024-01-08 12:30'"}
    )
    after = run_dbt(tmp_path, warehouse, arguments=orchestration_vars())

    expected: dict[str, tuple] = {}
    for row in after.marts["interactions"]:
        first, last, count, items = expected.get(
            row["user_id"], (row["occurred_at"], row["occurred_at"], 0, set())
        )
        expected[row["user_id"]] = (
            min(first, row["occurred_at"]),
            max(last, row["occurred_at"]),
            count + 1,
            items | {row["item_id"]},
        )
    users = by_key(after.marts["users"], "user_id")
    assert set(users) == set(expected) == {"u1", "u4"}
    for user, (first, last, count, items) in expected.items():
        row = users[user]
        assert (row["first_event_at"], row["last_event_at"]) == (first, last)
        assert (row["event_count"], row["item_count"]) == (count, len(items))


def expected_item_activity(interactions: list[dict[str, Any]]) -> dict[str, tuple]:
    """(interaction_count, user_count, first, last) per item, aggregated from ``interactions``."""
    per_item: dict[str, list[dict[str, Any]]] = {}
    for row in interactions:
        per_item.setdefault(row["item_id"], []).append(row)
    return {
        item: (
            len(rows),
            len({row["user_id"] for row in rows}),
            min(row["occurred_at"] for row in rows),
            max(row["occurred_at"] for row in rows),
        )
        for item, rows in per_item.items()
    }


def assert_items_match_interactions(outcome: BuildOutcome, catalog: set[str]) -> None:
    """Every catalog item's counts and times are those of the interactions left."""
    expected = expected_item_activity(outcome.marts["interactions"])
    items = by_key(outcome.marts["items"], "item_id")
    assert set(items) == catalog
    for item, row in items.items():
        found = (
            row["interaction_count"],
            row["user_count"],
            row["first_interaction_at"],
            row["last_interaction_at"],
        )
        assert found == expected.get(item, (0, 0, None, None)), item


def test_the_incremental_items_recompute_only_what_a_batch_changed(
    builds: dict[str, BuildOutcome],
) -> None:
    """The second batch re-delivered e3 (i1), added a late click on i2 and a view of i9 (not in
    the catalog) and a new version of i1: i1 and i2 are recomputed, the rest keep the first
    build's rows, and every row equals the aggregate over all interactions."""
    second = builds["second"]
    assert_items_match_interactions(second, {"i1", "i2", "i3", "i4", "007", "7"})
    through = {row["item_id"]: row["loaded_through"] for row in second.marts["items"]}
    assert through == {
        "i1": SECOND_LOAD_AT,
        "i2": SECOND_LOAD_AT,
        "i3": FIRST_LOAD_AT,
        "i4": FIRST_LOAD_AT,
        "007": FIRST_LOAD_AT,
        "7": FIRST_LOAD_AT,
    }
    assert builds["rerun"].marts["items"] == second.marts["items"]


def test_the_incremental_items_follow_retention_and_forget(tmp_path) -> None:
    """Retention deletes old events (every table with occurred_at); forget deletes a user's rows
    everywhere after deleting the items mart's rows of what they touched. The next run's items
    must equal the aggregate over the interactions left."""
    from orchestration.privacy.erase import delete_in_warehouse
    from orchestration.privacy.forget import _let_items_recount

    warehouse = tmp_path / "warehouse.duckdb"
    create_warehouse(warehouse)
    load_batch(warehouse, FIRST_EVENTS, FIRST_ITEMS, "b1", FIRST_LOAD_AT)
    run_dbt(tmp_path, warehouse, arguments=orchestration_vars())
    delete_in_warehouse(
        warehouse, {"occurred_at": lambda column: f"{column} < timestamp '2024-01-03 12:00'"}
    )
    after_retention = run_dbt(tmp_path, warehouse, arguments=orchestration_vars())
    catalog = {"i1", "i2", "i3", "i4", "007", "7"}
    assert_items_match_interactions(after_retention, catalog)
    assert by_key(after_retention.marts["items"], "item_id")["i2"]["interaction_count"] == 1

    _let_items_recount(warehouse, "'u3'")
    delete_in_warehouse(warehouse, {"user_id": lambda column: f"{column} = 'u3'"})
    after_forget = run_dbt(tmp_path, warehouse, arguments=orchestration_vars())
    assert_items_match_interactions(after_forget, catalog)
    assert by_key(after_forget.marts["items"], "item_id")["7"]["interaction_count"] == 0


def test_marts_built_before_any_event_fill_when_events_arrive(tmp_path) -> None:
    """A catalog loaded first builds the incremental marts with no interaction (and no load
    watermark yet); the first events loaded later must reach every one of them."""
    warehouse = tmp_path / "warehouse.duckdb"
    create_warehouse(warehouse)
    load_batch(warehouse, [], FIRST_ITEMS, "b1", FIRST_LOAD_AT)
    empty = run_dbt(tmp_path, warehouse, arguments=orchestration_vars())
    assert empty.marts["users"] == [] and empty.marts["user_recent_history"] == []
    load_batch(warehouse, FIRST_EVENTS, [], "b2", SECOND_LOAD_AT)
    filled = run_dbt(tmp_path, warehouse, arguments=orchestration_vars())
    assert_items_match_interactions(filled, {"i1", "i2", "i3", "i4", "007", "7"})
    assert {row["user_id"] for row in filled.marts["users"]} == {"u1", "u2", "u3"}
    assert {row["user_id"] for row in filled.marts["user_recent_history"]} == {"u1", "u2", "u3"}
