from __future__ import annotations

import duckdb
import pandas as pd

from orchestration.serving.validation import (
    ListProblems,
    warehouse_list_problems,
)
from orchestration.serving.validation import (
    find_list_problems as find_in_database,
)

CATALOG = pd.Series(["a", "b", "c", "d"])


def find_list_problems(
    lists: pd.DataFrame, consumed: pd.DataFrame, available: pd.Series, k: int
) -> ListProblems:
    """The rules on frames: registered in an in-memory database, as the staging holds them."""
    with duckdb.connect() as connection:
        connection.register("lists", lists)
        connection.register("consumed", consumed)
        connection.register("available", pd.DataFrame({"item_id": available}))
        return find_in_database(connection, "lists", "consumed", "available", k)


def lists(rows: list[tuple[str, int, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "rank", "item_id", "score"])


def consumed(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id"])


def test_good_lists_pass() -> None:
    good = lists(
        [("u1", 1, "b", 0.9), ("u1", 2, "c", 0.5), ("u2", 1, "a", 1.0), ("u2", 2, "b", 1.0)]
    )
    problems = find_list_problems(good, consumed([("u1", "a")]), CATALOG, k=2)
    assert problems.ok, problems.metadata()


def test_each_rule_is_caught() -> None:
    bad = lists(
        [
            ("dup", 1, "a", 0.9),
            ("dup", 2, "a", 0.8),
            ("rising", 1, "a", 0.1),
            ("rising", 2, "b", 0.5),
            ("gap", 1, "a", 0.9),
            ("gap", 3, "b", 0.5),
            ("eats", 1, "a", 0.9),
            ("eats", 2, "b", 0.5),
            ("short", 1, "a", 0.9),
        ]
    )
    problems = find_list_problems(bad, consumed([("eats", "a")]), CATALOG, k=2)
    assert not problems.ok
    assert problems.duplicate_items == 1
    assert problems.unsorted_scores == 1
    assert problems.broken_ranks == 1
    assert problems.consumed_items == 1
    assert problems.short_lists == 1
    assert any("short" in example for example in problems.examples)


def test_short_list_allowed_when_the_catalog_runs_out() -> None:
    # u1 consumed 3 of 4 items: one item left, so a 1-item list is complete for k=2.
    ok = lists([("u1", 1, "d", 0.3)])
    seen = consumed([("u1", "a"), ("u1", "b"), ("u1", "c")])
    assert find_list_problems(ok, seen, CATALOG, k=2).ok


def test_the_examples_name_the_first_users_breaking_each_rule() -> None:
    bad = lists(
        [("z", 1, "a", 0.9), ("z", 2, "a", 0.8), ("y", 1, "b", 0.9), ("y", 2, "b", 0.8)]
        + [("x", 2, "c", 0.9)]  # ranks start at 2, and one item where two were possible
    )
    problems = find_list_problems(bad, consumed([("x", "c")]), CATALOG, k=2)
    assert problems.examples == [
        "user y lists an item twice",
        "user z lists an item twice",
        "user x has ranks that are not 1..n",
        "user x was recommended consumed item c",
        "user x has 1 items where 2 were possible",
    ]


def test_the_warehouse_rules_count_consuming_events_and_available_items_only(tmp_path) -> None:
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as connection:
        connection.execute("create schema marts")
        connection.execute(
            "create table marts.interactions as select * from (values "
            "('u1', 'a', 'impression'), ('u1', 'b', 'view'), ('u2', 'c', 'purchase')) "
            "t(user_id, item_id, event_type)"
        )
        connection.execute(
            "create table marts.items as select * from (values "
            "('a', true), ('b', null), ('c', true), ('d', false)) t(item_id, available)"
        )
        # u1 saw a (an impression: may be listed) and viewed b; d is withdrawn: {a, c} remain.
        # u2 bought c, which u2's list holds.
        connection.register(
            "staged", lists([("u1", 1, "a", 0.9), ("u1", 2, "c", 0.5), ("u2", 1, "c", 0.9)])
        )
        problems = warehouse_list_problems(connection, "staged", k=3)
    assert problems.consumed_items == 1 and problems.short_lists == 1
    assert problems.examples == [
        "user u2 was recommended consumed item c",
        "user u2 has 1 items where 2 were possible",
    ]
