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
