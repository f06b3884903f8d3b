from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.constants import ITEM_ID, OCCURRED_AT, USER_ID, WEIGHT
from ml.models.baselines import (
    EASERecommender,
    ItemKNNRecommender,
    PopularityRecommender,
    Recommender,
    TrendingRecommender,
)

NEWEST = pd.Timestamp("2024-03-10 12:00")


def interactions_frame(rows: list[tuple[str, str, float, float]]) -> pd.DataFrame:
    """Interactions from (user, item, weight, days before NEWEST) tuples."""
    return pd.DataFrame(
        {
            USER_ID: [row[0] for row in rows],
            ITEM_ID: [row[1] for row in rows],
            WEIGHT: [float(row[2]) for row in rows],
            OCCURRED_AT: [NEWEST - pd.Timedelta(days=row[3]) for row in rows],
        }
    )


def history_frame(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    """Scoring-time histories from (user, item, weight) tuples."""
    return pd.DataFrame(rows, columns=[USER_ID, ITEM_ID, WEIGHT])


# a and b are consumed together by two users; a and c by one; d alone; e is a dislike.
CO_CONSUMED = interactions_frame(
    [
        ("u1", "a", 1, 5),
        ("u1", "b", 1, 4),
        ("u2", "a", 1, 3),
        ("u2", "b", 1, 2),
        ("u3", "a", 1, 1),
        ("u3", "c", 1, 1),
        ("u4", "d", 1, 0),
        ("u4", "e", -4, 0),
    ]
)

ALL_MODELS = [
    PopularityRecommender,
    TrendingRecommender,
    ItemKNNRecommender,
    EASERecommender,
]


def column(model: Recommender, scores: np.ndarray, item: str) -> np.ndarray:
    """The score column of one item."""
    return scores[:, list(model.item_ids).index(item)]


@pytest.mark.parametrize("model_class", ALL_MODELS)
def test_shared_interface(model_class: type[Recommender]) -> None:
    model = model_class().fit(CO_CONSUMED, catalog_item_ids=["z_catalog_only", "a"])
    assert list(model.item_ids) == ["a", "b", "c", "d", "e", "z_catalog_only"]
    histories = history_frame([("new_user", "a", 1), ("u1", "b", 2), ("ghost", "unknown", 1)])
    user_ids, scores = model.score(histories)
    assert list(user_ids) == ["ghost", "new_user", "u1"]
    assert scores.shape == (3, 6)
    assert scores.dtype == np.float64
    assert np.isfinite(scores).all()
    assert (column(model, scores, "z_catalog_only") == 0).all()
    again_users, again = model_class().fit(CO_CONSUMED, ["z_catalog_only", "a"]).score(histories)
    np.testing.assert_array_equal(again, scores)
    np.testing.assert_array_equal(again_users, user_ids)


@pytest.mark.parametrize("model_class", ALL_MODELS)
def test_unfitted_model_says_to_fit(model_class: type[Recommender]) -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        model_class().score(history_frame([("u", "a", 1)]))


@pytest.mark.parametrize("model_class", ALL_MODELS)
def test_fit_names_missing_columns(model_class: type[Recommender]) -> None:
    with pytest.raises(ValueError, match=r"interactions is missing column\(s\) \['weight'\]"):
        model_class().fit(CO_CONSUMED.drop(columns=WEIGHT))


def test_fit_rejects_missing_weights_with_the_row() -> None:
    broken = CO_CONSUMED.copy()
    broken.loc[2, WEIGHT] = np.nan
    with pytest.raises(ValueError, match="first at index 2"):
        ItemKNNRecommender().fit(broken)


def test_mixed_item_id_types_are_refused() -> None:
    with pytest.raises(ValueError, match="cast catalog and interaction item ids"):
        PopularityRecommender().fit(CO_CONSUMED, catalog_item_ids=[1, 2])


def test_score_treats_a_missing_weight_column_as_one() -> None:
    model = ItemKNNRecommender().fit(CO_CONSUMED)
    _, weighted = model.score(history_frame([("x", "a", 1.0)]))
    _, unweighted = model.score(pd.DataFrame({USER_ID: ["x"], ITEM_ID: ["a"]}))
    np.testing.assert_array_equal(weighted, unweighted)


def test_score_of_no_histories_is_empty() -> None:
    user_ids, scores = ItemKNNRecommender().fit(CO_CONSUMED).score(history_frame([]))
    assert len(user_ids) == 0
    assert scores.shape == (0, 5)


def test_popularity_sums_positive_weights() -> None:
    model = PopularityRecommender().fit(CO_CONSUMED)
    assert model.item_scores.to_dict() == {"a": 3.0, "b": 2.0, "c": 1.0, "d": 1.0, "e": 0.0}
    assert model.item_scores.index.name == ITEM_ID
    _, scores = model.score(history_frame([("x", "c", 1), ("y", "d", 1)]))
    np.testing.assert_array_equal(scores, [[3, 2, 1, 1, 0], [3, 2, 1, 1, 0]])


def test_trending_decays_by_event_time_not_wall_clock() -> None:
    # Half-life 1 day: a (weight 1, newest) -> 1; b (weight 3, 2 days back) -> 3/4;
    # c (weight 10, 10 days back) -> 10/1024.  Popularity would rank c first.
    events = interactions_frame([("u1", "a", 1, 0), ("u2", "b", 3, 2), ("u3", "c", 10, 10)])
    model = TrendingRecommender(half_life_days=1.0).fit(events)
    assert model.reference_time == NEWEST
    np.testing.assert_allclose(model.item_scores.to_numpy(), [1.0, 0.75, 10 / 1024])
    # The same events years earlier trend exactly the same: age is measured from the newest event.
    long_ago = events.assign(**{OCCURRED_AT: events[OCCURRED_AT] - pd.Timedelta(days=3650)})
    replayed = TrendingRecommender(half_life_days=1.0).fit(long_ago)
    np.testing.assert_allclose(replayed.item_scores.to_numpy(), model.item_scores.to_numpy())


def test_trending_window_drops_old_events() -> None:
    events = interactions_frame([("u1", "a", 1, 0), ("u2", "b", 3, 2), ("u3", "c", 10, 10)])
    model = TrendingRecommender(half_life_days=1.0, window_days=5.0).fit(events)
    np.testing.assert_allclose(model.item_scores.to_numpy(), [1.0, 0.75, 0.0])


def test_trending_ignores_negative_weights_and_needs_datetimes() -> None:
    model = TrendingRecommender().fit(CO_CONSUMED)
    assert model.item_scores["e"] == 0.0
    as_text = CO_CONSUMED.assign(**{OCCURRED_AT: "2024-01-01"})
    with pytest.raises(ValueError, match="must hold datetimes"):
        TrendingRecommender().fit(as_text)
    with pytest.raises(ValueError, match="half_life_days"):
        TrendingRecommender(half_life_days=0)
    with pytest.raises(ValueError, match="window_days"):
        TrendingRecommender(window_days=-1)


def test_trending_of_no_events_is_zero() -> None:
    model = TrendingRecommender().fit(CO_CONSUMED.iloc[:0], catalog_item_ids=["a"])
    assert model.reference_time is None
    assert model.item_scores.to_dict() == {"a": 0.0}


def test_item_knn_cosine_similarity_known_answer() -> None:
    model = ItemKNNRecommender().fit(CO_CONSUMED)
    similarity = model.similarity.toarray()
    # Columns over users u1..u4: a = (1,1,1,0), b = (1,1,0,0), c = (0,0,1,0), d = (0,0,0,1).
    a_b = 2 / (np.sqrt(3) * np.sqrt(2))
    a_c = 1 / np.sqrt(3)
    expected = np.zeros((5, 5))
    expected[0, 1] = expected[1, 0] = a_b
    expected[0, 2] = expected[2, 0] = a_c
    np.testing.assert_allclose(similarity, expected)


def test_item_knn_ranks_the_co_consumed_item_first() -> None:
    model = ItemKNNRecommender().fit(CO_CONSUMED)
    user_ids, scores = model.score(history_frame([("fresh", "a", 2.0), ("other", "b", 1.0)]))
    assert list(user_ids) == ["fresh", "other"]
    candidates = scores[0].copy()
    candidates[0] = -np.inf  # a itself is in the history
    assert model.item_ids[int(np.argmax(candidates))] == "b"
    np.testing.assert_allclose(scores[0], [0, 2 * 2 / np.sqrt(6), 2 / np.sqrt(3), 0, 0])
    np.testing.assert_allclose(scores[1], [2 / np.sqrt(6), 0, 0, 0, 0])


def test_item_knn_keeps_top_neighbours_with_ties_to_lower_index() -> None:
    model = ItemKNNRecommender(neighbours=1).fit(CO_CONSUMED)
    similarity = model.similarity.toarray()
    assert np.count_nonzero(similarity[0]) == 1  # a keeps only b
    assert similarity[0, 1] > 0
    # x is consumed with p and q equally; with one neighbour it keeps p, the lower index.
    tied = interactions_frame([("u1", "x", 1, 0), ("u1", "p", 1, 0), ("u1", "q", 1, 0)])
    tied_model = ItemKNNRecommender(neighbours=1).fit(tied)
    assert list(tied_model.item_ids) == ["p", "q", "x"]
    np.testing.assert_allclose(tied_model.similarity.toarray()[2], [1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="neighbours"):
        ItemKNNRecommender(neighbours=0)


def test_ease_diagonal_is_zero_and_matches_per_item_ridge() -> None:
    l2_penalty = 0.5
    model = EASERecommender(l2_penalty=l2_penalty).fit(CO_CONSUMED)
    weights = model.similarity
    np.testing.assert_array_equal(np.diag(weights), np.zeros(5))
    # Reference: with diag(B) = 0 the objective separates by column, and each column j is a
    # ridge regression of item j on the other items.
    matrix = np.array(
        [
            [1, 1, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [1, 0, 1, 0, 0],
            [0, 0, 0, 1, 0],
        ],
        dtype=float,
    )
    for target in range(5):
        others = [item for item in range(5) if item != target]
        features = matrix[:, others]
        expected = np.linalg.solve(
            features.T @ features + l2_penalty * np.eye(4), features.T @ matrix[:, target]
        )
        np.testing.assert_allclose(weights[others, target], expected, atol=1e-12)


def test_ease_ranks_the_co_consumed_item_first() -> None:
    model = EASERecommender(l2_penalty=1.0).fit(CO_CONSUMED)
    _, scores = model.score(history_frame([("fresh", "a", 1.0)]))
    candidates = scores[0].copy()
    candidates[0] = -np.inf  # a itself is in the history
    assert model.item_ids[int(np.argmax(candidates))] == "b"


def test_ease_refuses_catalogs_above_max_items() -> None:
    model = EASERecommender(max_items=4)
    with pytest.raises(ValueError, match=r"5 items exceed max_items=4"):
        model.fit(CO_CONSUMED)
    with pytest.raises(RuntimeError, match="not fitted"):
        _ = model.similarity  # a failed fit leaves no half-fitted model behind
    with pytest.raises(ValueError, match="l2_penalty"):
        EASERecommender(l2_penalty=0.0)
