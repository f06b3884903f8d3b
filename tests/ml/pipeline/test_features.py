"""Candidate features: source ranks, item age and novelty, user activity, trend and context."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.constants import ITEM_ID, USER_ID
from ml.pipeline.features import (
    columns_frame,
    context_popularity,
    feature_columns,
    item_features,
    popularity_shares,
    source_ranks,
    trend_features,
    user_contexts,
    user_features,
    user_shares,
)
from ml.pipeline.snapshot import Behaviour, Snapshot
from tests.ml.pipeline.tiny import events

AS_OF = pd.Timestamp("2024-01-31")


def test_source_ranks_count_from_the_best_and_skip_missing_scores() -> None:
    frame = pd.DataFrame(
        {
            USER_ID: ["u", "u", "u", "u", "v"],
            ITEM_ID: ["a", "b", "c", "d", "a"],
            "covisitation": [0.5, 0.9, 0.0, 0.9, 0.2],
        }
    )
    ranked = source_ranks(frame, ("covisitation", "ease"), pd.factorize(frame[USER_ID])[0])
    # Ties keep frame order; no score, no rank; each user counts from 1.
    np.testing.assert_array_equal(ranked["covisitation_rank"], [3.0, 1.0, np.nan, 2.0, 1.0])
    assert "ease_rank" not in ranked
    # Users need not be contiguous: v's row in the middle still counts on its own.
    mixed = frame.iloc[[0, 4, 1, 2, 3]]
    mixed_ranks = source_ranks(mixed, ("covisitation",), pd.factorize(mixed[USER_ID])[0])
    np.testing.assert_array_equal(mixed_ranks["covisitation_rank"], [3.0, 1.0, 1.0, np.nan, 2.0])


def test_item_age_counts_from_the_first_positive_event_else_created_at() -> None:
    snapshot = Snapshot(
        events(
            [
                ("u", "old", "view", "2024-01-01"),
                ("v", "old", "purchase", "2024-01-21"),
                ("u", "shown", "impression", "2024-01-11"),  # no weight: not a first sighting
            ]
        ),
        pd.DataFrame(
            {
                ITEM_ID: ["old", "shown", "fresh", "bare"],
                "created_at": pd.to_datetime(
                    ["2023-12-01 00:00", "2024-01-29 12:00", "2024-01-30 00:00", None], utc=True
                ),
            }
        ),
        as_of=AS_OF,
    )
    features = item_features(snapshot, pd.Series(["old", "shown", "fresh", "bare", "old"]))
    np.testing.assert_allclose(
        features["item_age_days"], [30.0, 1.5, 1.0, np.nan, 30.0], equal_nan=True
    )
    assert features["item_is_new"].tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_item_age_without_created_at() -> None:
    snapshot = Snapshot(
        events([("u", "a", "view", "2024-01-21")]), pd.DataFrame({ITEM_ID: ["a", "b"]}), as_of=AS_OF
    )
    features = item_features(snapshot, pd.Series(["b", "a"]))
    np.testing.assert_allclose(features["item_age_days"], [np.nan, 10.0], equal_nan=True)
    assert features["item_is_new"].tolist() == [1.0, 0.0]


def test_user_features_count_events_items_weight_and_days_since_the_last() -> None:
    behaviour = Behaviour(
        events(
            [
                ("u", "a", "view", "2024-01-20"),
                ("u", "a", "purchase", "2024-01-29"),
                ("u", "b", "impression", "2024-01-30"),
                ("late", "a", "view", "2024-02-02"),  # newer than the snapshot
            ]
        ),
        users=np.array(["quiet"], dtype=object),
    )
    features = user_features(behaviour, AS_OF)
    assert features.index.tolist() == ["late", "quiet", "u"]
    mine = features.loc["u"]
    assert mine["user_events"] == 3 and mine["user_items"] == 2
    assert mine["user_mean_weight"] == pytest.approx((1.0 + 5.0 + 0.0) / 3)
    assert mine["user_days_since_last"] == 1.0
    assert features.loc["late", "user_days_since_last"] == 0.0
    assert features.loc["quiet"].isna().all()


def test_trend_features_compare_recent_popularity_with_the_longer_run_rate() -> None:
    frame = pd.DataFrame(
        {"popularity_7d": [7.0], "popularity_30d": [30.0], "popularity_365d": [0.0]}
    )
    trends = trend_features(frame)
    assert trends["trend_7d_vs_30d"][0] == pytest.approx(8.0 / 8.0)
    assert trends["trend_30d_vs_365d"][0] == pytest.approx(31.0)
    assert "trend_7d_vs_30d" not in trend_features(pd.DataFrame({"popularity_7d": [1.0]}))


def test_context_popularity_reads_the_users_latest_hour() -> None:
    behaviour = Behaviour(
        events(
            [
                ("u", "a", "view", "2024-01-30 21:15"),
                ("u", "b", "view", "2024-01-30 09:15"),
                ("v", "a", "view", "2024-01-30 13:00"),
            ]
        )
    )
    contexts = user_contexts(behaviour, "hour")
    assert contexts.to_dict() == {"u": "21", "v": "13"}
    pairs = pd.DataFrame({USER_ID: ["u", "u", "v"], ITEM_ID: ["a", "c", "a"]})
    by_context = {"21": pd.Series({"a": 0.5, "b": 1.0})}
    np.testing.assert_allclose(context_popularity(pairs, contexts, by_context), [0.5, 0.0, 0.0])


def test_feature_columns_are_the_numeric_columns_but_the_ids() -> None:
    frame = pd.DataFrame(
        {USER_ID: ["u"], ITEM_ID: ["a"], "text": [0.5], "reason": ["x"], "item_is_new": [1.0]}
    )
    assert feature_columns(frame) == ["text", "item_is_new"]


def test_feature_columns_leave_out_a_count_that_has_a_share_beside_it() -> None:
    frame = pd.DataFrame(
        {
            USER_ID: ["u"],
            ITEM_ID: ["a"],
            "popularity_7d": [3.0],
            "popularity_7d_share": [0.3],
            "covisitation": [2.0],
            "covisitation_user_share": [1.0],
        }
    )
    assert feature_columns(frame) == [
        "popularity_7d_share",
        "covisitation",
        "covisitation_user_share",
    ]


def test_popularity_shares_divide_by_the_window_total_and_mean_the_same_at_any_traffic() -> None:
    frame = pd.DataFrame({ITEM_ID: ["a", "b"], "popularity_7d": [3.0, 1.0], "trending": [1.0, 0]})
    totals = pd.Series({"popularity_7d": 10.0, "trending": 0.0, "popularity_30d": 5.0})
    shared = popularity_shares(frame, totals)
    np.testing.assert_allclose(shared["popularity_7d_share"], [0.3, 0.1])
    np.testing.assert_allclose(shared["trending_share"], [0.0, 0.0])  # an empty window
    assert "popularity_30d_share" not in shared  # not among the columns
    # Twice the traffic, the same shares: what the ranker learned at one cut holds at the next.
    doubled = popularity_shares(frame.assign(popularity_7d=[6.0, 2.0]), totals * 2)
    np.testing.assert_allclose(doubled["popularity_7d_share"], shared["popularity_7d_share"])


def test_user_shares_compare_each_score_with_the_users_best() -> None:
    frame = pd.DataFrame(
        {
            USER_ID: ["u", "u", "u", "v", "v"],
            ITEM_ID: ["a", "b", "c", "a", "b"],
            "covisitation_all": [4.0, 1.0, 0.0, 0.0, 0.0],
        }
    )
    shared = user_shares(
        frame, ("covisitation_all", "covisitation_last"), pd.factorize(frame[USER_ID])[0]
    )
    # v has no co-visitation at all: 0, not a division by zero.
    np.testing.assert_allclose(shared["covisitation_all_user_share"], [1.0, 0.25, 0.0, 0.0, 0.0])
    assert "covisitation_last_user_share" not in shared


def test_columns_frame_keeps_every_column_in_place_with_its_dtype() -> None:
    columns = {
        "user_id": np.array(["u1", "u2", "u3"], dtype=object),
        "score": np.array([0.5, 0.25, 1.0]),
        "count": np.array([3, 1, 2]),
        "share": np.array([0.1, 0.2, 0.3]),
        "item_id": np.array(["a", "b", "c"], dtype=object),
        "small": np.array([1.5, 2.5, 3.5], dtype=np.float32),
    }
    frame = columns_frame(columns)
    expected = pd.DataFrame(columns)
    pd.testing.assert_frame_equal(frame, expected)
    # The float64 columns share one block (the point of it); ids, counts and float32 apart.
    assert [block.dtype for block in frame._mgr.blocks].count(np.float64) == 1
    assert columns_frame({}).empty
    empty = columns_frame({"user_id": np.array([], dtype=object), "score": np.zeros(0)})
    assert list(empty.columns) == ["user_id", "score"] and len(empty) == 0
