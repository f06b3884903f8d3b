from __future__ import annotations

import pandas as pd

from orchestration.serving.validation import find_list_problems

CATALOG = pd.Series(["a", "b", "c", "d"])


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
