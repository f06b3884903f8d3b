from __future__ import annotations

import pandas as pd

from ml.models.baselines import ItemKNNRecommender
from ml.recommend import UserBehaviour, rank_users, unavailable_items
from ml.rules import RankingRules

ITEMS = pd.DataFrame(
    {
        "item_id": ["a", "b", "c", "d", "e"],
        "title": ["A", "B", "C", "D", "E"],
        "available": [True, True, True, True, False],
    }
)
TRAIN = pd.DataFrame(
    {
        "user_id": ["x", "x", "y", "y", "z", "z", "w", "w"],
        "item_id": ["a", "b", "a", "b", "a", "c", "a", "e"],
        "weight": 1.0,
        "occurred_at": pd.Timestamp("2024-01-01"),
    }
)


def behaviour(rows: list[tuple[str, str, str]]) -> UserBehaviour:
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type"]).assign(
        occurred_at=pd.Timestamp("2024-02-01"), value=None, context=None
    )
    positive = events[events["event_type"].isin(["click", "purchase", "view"])]
    return UserBehaviour(
        histories=positive.assign(weight=1.0)[["user_id", "item_id", "weight", "occurred_at"]],
        consumed=events[events["event_type"] != "impression"][["user_id", "item_id"]],
        events=events,
    )


def test_lists_use_history_exclude_consumed_and_unavailable() -> None:
    model = ItemKNNRecommender().fit(TRAIN, catalog_item_ids=ITEMS["item_id"])
    trending = pd.Series({"a": 5.0, "b": 2.0, "c": 1.0})
    lists, fallback = rank_users(
        model,
        ["u", "cold"],
        behaviour([("u", "a", "click")]),
        trending,
        ITEMS,
        3,
        trending_blend=0.0,
        similarity=model.similarity,
    )
    u = lists[lists["user_id"] == "u"]
    assert u["item_id"].iloc[0] == "b"  # co-consumed with a most often
    assert "a" not in set(u["item_id"]) and "e" not in set(lists["item_id"])
    assert u["reason"].iloc[0] == "because you watched A"
    cold = lists[lists["user_id"] == "cold"]
    assert fallback == 1 and len(cold) == 3
    assert set(cold["reason"]) == {"trending now"}


def test_unclicked_impressions_demote_an_item() -> None:
    model = ItemKNNRecommender().fit(TRAIN, catalog_item_ids=ITEMS["item_id"])
    trending = pd.Series({"a": 5.0, "b": 2.0, "c": 1.0})
    plain, _ = rank_users(
        model, ["v"], behaviour([("v", "a", "view")]), trending, ITEMS, 3, trending_blend=0.0
    )
    shown = [("v", "a", "view")] + [("v", "b", "impression")] * 6
    demoted, _ = rank_users(
        model,
        ["v"],
        behaviour(shown),
        trending,
        ITEMS,
        3,
        trending_blend=0.0,
        rules=RankingRules(min_impression_factor=0.1),
    )
    assert plain["item_id"].iloc[0] == "b"
    assert demoted["item_id"].iloc[0] != "b"


def test_unavailable_flag_defaults_to_available() -> None:
    assert unavailable_items(ITEMS).tolist() == ["e"]
    assert unavailable_items(ITEMS.drop(columns="available")).empty


def test_mmr_option_diversifies_and_keeps_scores_descending() -> None:
    import numpy as np

    model = ItemKNNRecommender().fit(TRAIN, catalog_item_ids=ITEMS["item_id"])
    trending = pd.Series({"a": 5.0, "b": 4.9, "c": 1.0, "d": 0.5})
    vectors = pd.DataFrame(
        np.array([[1, 0], [1, 0.01], [0.99, 0.05], [0, 1], [0, 1]], dtype=float),
        index=ITEMS["item_id"],
    )
    kwargs = {"trending_blend": 1.0, "item_vectors": vectors}
    plain, _ = rank_users(model, ["cold"], behaviour([]), trending, ITEMS, 2, **kwargs)
    diverse, _ = rank_users(
        model,
        ["cold"],
        behaviour([]),
        trending,
        ITEMS,
        2,
        rules=RankingRules(mmr_lambda=0.3),
        **kwargs,
    )
    assert plain["item_id"].tolist() == ["a", "b"]  # near-duplicates
    assert diverse["item_id"].tolist() == ["a", "d"]
    assert diverse["score"].is_monotonic_decreasing


def test_new_items_say_what_they_resemble() -> None:
    import numpy as np

    model = ItemKNNRecommender().fit(TRAIN, catalog_item_ids=ITEMS["item_id"])
    vectors = pd.DataFrame(np.eye(5)[[0, 1, 2, 3, 3]] + 0.0, index=ITEMS["item_id"])
    vectors.loc["d"] = vectors.loc["a"] * 0.9 + vectors.loc["d"] * 0.1
    lists, _ = rank_users(
        model,
        ["u"],
        behaviour([("u", "a", "click")]),
        pd.Series({"d": 1.0}),
        ITEMS,
        3,
        trending_blend=0.5,
        item_vectors=vectors,
        new_item_ids=frozenset({"d"}),
    )
    reasons = dict(zip(lists["item_id"], lists["reason"], strict=True))
    assert reasons["d"] == "new: similar to A"
