from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from ml.constants import ITEM_ID, OCCURRED_AT, RANK, REASON, SCORE, USER_ID, WEIGHT
from ml.models.baselines import ItemKNNRecommender, TrendingRecommender
from ml.ranking import (
    LIST_COLUMNS,
    TRENDING_NOW,
    rank_lists,
    top_k_indices,
    top_k_with_new_items,
    trending_lists,
)

ITEMS = ["a", "b", "c", "d"]
TRENDING = pd.Series({"a": 10.0, "b": 0.0, "c": 0.0, "d": 5.0})


def history_frame(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    """Histories from (user, item, weight) tuples."""
    return pd.DataFrame(rows, columns=[USER_ID, ITEM_ID, WEIGHT])


def test_top_k_indices_orders_best_first_and_breaks_ties_by_column() -> None:
    matrix = np.array([[1.0, 3.0, 3.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0], [5, 4, 3, 2, 1]])
    np.testing.assert_array_equal(top_k_indices(matrix, 2), [[1, 2], [0, 1], [0, 1]])
    np.testing.assert_array_equal(
        top_k_indices(matrix, 9), [[1, 2, 3, 0, 4], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]
    )
    with_excluded = np.array([[-np.inf, 1.0, -np.inf]])
    np.testing.assert_array_equal(top_k_indices(with_excluded, 2), [[1, 0]])


def test_top_k_indices_matches_a_full_sort() -> None:
    generator = np.random.default_rng(11)
    matrix = generator.integers(0, 4, size=(1100, 30)).astype(float)  # many ties, several blocks
    full = np.lexsort((np.broadcast_to(np.arange(30), matrix.shape), -matrix), axis=1)
    for k in (1, 5, 29, 30, 40):
        np.testing.assert_array_equal(top_k_indices(matrix, k), full[:, :k])


def test_top_k_indices_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="NaN"):
        top_k_indices(np.array([[np.nan, 1.0]]), 1)
    with pytest.raises(ValueError, match="2-dimensional"):
        top_k_indices(np.array([1.0, 2.0]), 1)
    with pytest.raises(ValueError, match="positive integer"):
        top_k_indices(np.array([[1.0]]), 0)


def test_blend_known_answer() -> None:
    # One user who consumed a.  Remaining b, c, d.
    # Model [b 2, c 4, d 1] / 4 -> [0.5, 1, 0.25]; trending [b 0, c 0, d 5] / 5 -> [0, 0, 1].
    # blend 0.1: b 0.45, c 0.9, d 0.225 + 0.1 = 0.325 -> c, b, d.
    scores = np.array([[0.0, 2.0, 4.0, 1.0]])
    histories = history_frame([("u", "a", 1.0)])
    lists = rank_lists(scores, ["u"], ITEMS, histories, TRENDING, 3)
    assert list(lists.columns) == list(LIST_COLUMNS)
    assert list(lists[ITEM_ID]) == ["c", "b", "d"]
    assert list(lists[RANK]) == [1, 2, 3]
    np.testing.assert_allclose(lists[SCORE], [0.9, 0.45, 0.325])
    # blend 0.5: b 0.25, c 0.5, d 0.125 + 0.5 = 0.625 -> d, c, b.
    half = rank_lists(scores, ["u"], ITEMS, histories, TRENDING, 3, trending_blend=0.5)
    assert list(half[ITEM_ID]) == ["d", "c", "b"]
    np.testing.assert_allclose(half[SCORE], [0.625, 0.5, 0.25])


def test_negative_model_scores_are_min_max_rescaled() -> None:
    # Model [-1, 1, 3, -3] over all four items: low -3, high 3 -> [1/3, 2/3, 1, 0].
    scores = np.array([[-1.0, 1.0, 3.0, -3.0]])
    lists = rank_lists(scores, ["u"], ITEMS, history_frame([]), TRENDING, 4, trending_blend=0.0)
    assert list(lists[ITEM_ID]) == ["c", "b", "a", "d"]
    np.testing.assert_allclose(lists[SCORE], [1.0, 2 / 3, 1 / 3, 0.0])


def test_consumed_and_unavailable_items_are_removed_and_lists_shrink_to_fit() -> None:
    scores = np.array([[4.0, 3.0, 2.0, 1.0], [4.0, 3.0, 2.0, 1.0]])
    histories = history_frame([("u1", "a", 1.0), ("u1", "b", -4.0), ("stranger", "c", 1.0)])
    lists = rank_lists(scores, ["u1", "u2"], ITEMS, histories, TRENDING, 3, unavailable=["c"])
    assert list(lists.loc[lists[USER_ID] == "u1", ITEM_ID]) == ["d"]
    assert list(lists.loc[lists[USER_ID] == "u2", ITEM_ID]) == ["a", "b", "d"]


def test_reasons_name_the_heaviest_history_item_or_trending() -> None:
    # u1's model scores b and d; c has no model score so it can only be trending.
    scores = np.array([[0.0, 2.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    histories = history_frame(
        [("u1", "a", 1.0), ("u1", "old", 3.0), ("u1", "disliked", -5.0), ("u2", "c", 1.0)]
    )
    lists = rank_lists(
        scores, ["u1", "u2"], ITEMS, histories, TRENDING, 3, titles={"old": "Old Movie"}
    )
    u1 = lists.loc[lists[USER_ID] == "u1"].set_index(ITEM_ID)[REASON]
    assert u1.to_dict() == {
        "b": "because you watched Old Movie",
        "d": "because you watched Old Movie",
        "c": TRENDING_NOW,
    }
    u2 = lists.loc[lists[USER_ID] == "u2"]
    assert list(u2[ITEM_ID]) == ["a", "d", "b"]
    assert set(u2[REASON]) == {TRENDING_NOW}


def test_reasons_follow_the_contributing_item_when_similarity_is_given() -> None:
    # History: a (weight 1) and c (weight 2).  b is similar to a only, d to c only.
    similarity = np.zeros((4, 4))
    similarity[0, 1] = 0.9  # a -> b
    similarity[2, 3] = 0.1  # c -> d
    histories = history_frame([("u", "a", 1.0), ("u", "c", 2.0)])
    scores = histories[WEIGHT].to_numpy() @ similarity[[0, 2]]
    titles = pd.Series({"a": "Alpha", "c": None})
    for matrix in (similarity, sp.csr_array(similarity)):
        lists = rank_lists(
            scores[None, :], ["u"], ITEMS, histories, TRENDING, 2, titles=titles, similarity=matrix
        )
        assert lists.set_index(ITEM_ID)[REASON].to_dict() == {
            "b": "because you watched Alpha",
            "d": "because you watched c",  # c has no usable title: its id stands in
        }
    with pytest.raises(ValueError, match="similarity has shape"):
        rank_lists(scores[None, :], ["u"], ITEMS, histories, TRENDING, 2, similarity=np.eye(3))


def test_users_without_model_signal_get_trending_order() -> None:
    lists = rank_lists(np.zeros((1, 4)), ["u"], ITEMS, history_frame([]), TRENDING, 4)
    assert list(lists[ITEM_ID]) == ["a", "d", "b", "c"]  # b and c tie at 0: item order
    np.testing.assert_allclose(lists[SCORE], [0.1, 0.05, 0.0, 0.0])
    assert set(lists[REASON]) == {TRENDING_NOW}


def test_rank_lists_validates_its_inputs() -> None:
    histories = history_frame([])
    with pytest.raises(ValueError, match=r"scores has shape \(1, 3\)"):
        rank_lists(np.zeros((1, 3)), ["u"], ITEMS, histories, TRENDING, 2)
    with pytest.raises(ValueError, match="NaN or infinite"):
        rank_lists(np.full((1, 4), np.nan), ["u"], ITEMS, histories, TRENDING, 2)
    with pytest.raises(ValueError, match=r"item_ids must be unique; repeated: \['a'\]"):
        rank_lists(np.zeros((1, 4)), ["u"], ["a", "a", "b", "c"], histories, TRENDING, 2)
    with pytest.raises(ValueError, match="trending_blend"):
        rank_lists(np.zeros((1, 4)), ["u"], ITEMS, histories, TRENDING, 2, trending_blend=1.5)
    with pytest.raises(ValueError, match="histories is missing"):
        rank_lists(np.zeros((1, 4)), ["u"], ITEMS, histories.drop(columns=ITEM_ID), TRENDING, 2)


def test_trending_lists_known_answer() -> None:
    lists = trending_lists(TRENDING, ["n1", "n2"], 3, exclude=["d"])
    assert list(lists.columns) == list(LIST_COLUMNS)
    assert list(lists[USER_ID]) == ["n1"] * 3 + ["n2"] * 3
    assert list(lists[ITEM_ID]) == ["a", "b", "c"] * 2  # b and c tie: trending order
    assert list(lists[RANK]) == [1, 2, 3] * 2
    np.testing.assert_allclose(lists[SCORE], [1.0, 0.0, 0.0] * 2)
    assert set(lists[REASON]) == {TRENDING_NOW}
    assert trending_lists(TRENDING, [], 3).empty
    assert trending_lists(TRENDING, ["n1"], 3, exclude=ITEMS).empty
    with pytest.raises(ValueError, match="trending index must be unique"):
        trending_lists(pd.Series([1.0, 2.0], index=["a", "a"]), ["n1"], 3)


def test_knn_and_trending_lists_end_to_end() -> None:
    newest = pd.Timestamp("2024-05-01")
    events = pd.DataFrame(
        {
            USER_ID: ["u1", "u1", "u2", "u2", "u3", "u3", "u4", "u4", "u4"],
            ITEM_ID: ["a", "b", "a", "b", "b", "c", "d", "e", "a"],
            WEIGHT: [1.0, 1.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0, 1.0],
            OCCURRED_AT: [newest - pd.Timedelta(days=day) for day in (9, 8, 7, 6, 5, 4, 3, 2, 1)],
        }
    )
    catalog = ["a", "b", "c", "d", "e", "f"]
    knn = ItemKNNRecommender(neighbours=2).fit(events, catalog_item_ids=catalog)
    trending = TrendingRecommender(half_life_days=3.0).fit(events, catalog_item_ids=catalog)
    histories = events[[USER_ID, ITEM_ID, WEIGHT]]
    user_ids, scores = knn.score(histories)
    k = 3
    lists = rank_lists(
        scores,
        user_ids,
        knn.item_ids,
        histories,
        trending.item_scores,
        k,
        unavailable=["f"],
        titles={"a": "Alpha"},
        similarity=knn.similarity,
    )
    cold = trending_lists(trending.item_scores, ["newcomer"], k, exclude=["f"])
    combined = pd.concat([lists, cold], ignore_index=True)
    assert not combined.duplicated([USER_ID, ITEM_ID]).any()
    assert "f" not in set(combined[ITEM_ID])
    for user, user_list in combined.groupby(USER_ID):
        assert user_list[SCORE].is_monotonic_decreasing
        assert list(user_list[RANK]) == list(range(1, len(user_list) + 1))
        consumed = set(events.loc[events[USER_ID] == user, ITEM_ID])
        assert not consumed & set(user_list[ITEM_ID])
        assert len(user_list) == min(k, 5 - len(consumed))
    u1 = lists.loc[lists[USER_ID] == "u1"]
    assert u1.iloc[0][ITEM_ID] == "c"  # b's neighbour, b being co-consumed with c by u3
    assert u1.iloc[0][REASON] == "because you watched b"


ITEMS_MANY = [f"i{number:02d}" for number in range(12)]


def reference_lists(
    scores: np.ndarray,
    histories: pd.DataFrame,
    trending: pd.Series,
    k: int,
    blend: float,
    unavailable: set[str],
) -> dict[int, list[tuple[str, float]]]:
    """A deliberately naive per-user version of rank_lists' ordering and scores."""
    expected = {}
    for user in range(scores.shape[0]):
        consumed = set(histories.loc[histories[USER_ID] == user, ITEM_ID])
        allowed = [i for i, item in enumerate(ITEMS_MANY) if item not in consumed | unavailable]
        model = {i: scores[user, i] for i in allowed}
        high, low = max(model.values()), min(min(model.values()), 0.0)
        trend = {i: max(trending.get(ITEMS_MANY[i], 0.0), 0.0) for i in allowed}
        trend_high = max(trend.values())
        blended = {
            i: (1 - blend) * ((model[i] - low) / (high - low) if high > low else 0.0)
            + blend * (trend[i] / trend_high if trend_high > 0 else 0.0)
            for i in allowed
        }
        ranked = sorted(allowed, key=lambda i: (-blended[i], i))[:k]
        expected[user] = [(ITEMS_MANY[i], blended[i]) for i in ranked]
    return expected


def test_rank_lists_matches_a_naive_reference_across_blocks() -> None:
    generator = np.random.default_rng(5)
    n_users = 1100  # more than one block of users
    scores = generator.integers(-2, 4, size=(n_users, len(ITEMS_MANY))).astype(np.float32)
    histories = pd.DataFrame(
        {
            USER_ID: generator.integers(0, n_users, size=3000),
            ITEM_ID: generator.choice(ITEMS_MANY, size=3000),
        }
    )
    trending = pd.Series(generator.integers(0, 3, size=8).astype(float), index=ITEMS_MANY[:8])
    unavailable = {"i03"}
    lists = rank_lists(
        scores,
        range(n_users),
        ITEMS_MANY,
        histories,
        trending,
        5,
        trending_blend=0.3,
        unavailable=unavailable,
    )
    expected = reference_lists(scores, histories, trending, 5, 0.3, unavailable)
    for user, user_list in lists.groupby(USER_ID):
        assert list(user_list[ITEM_ID]) == [item for item, _ in expected[user]]
        np.testing.assert_allclose(user_list[SCORE], [score for _, score in expected[user]])
    assert lists[USER_ID].nunique() == n_users


def test_rank_lists_of_nothing_is_empty() -> None:
    histories = history_frame([])
    no_items = rank_lists(np.zeros((2, 0)), ["u1", "u2"], [], histories, TRENDING, 3)
    assert no_items.empty
    assert list(no_items.columns) == list(LIST_COLUMNS)
    no_users = rank_lists(np.zeros((0, 4)), [], ITEMS, histories, TRENDING, 3)
    assert no_users.empty


def test_new_item_slot_replaces_the_lowest_established_item() -> None:
    # Columns 0-3 established, 4-5 new. Top 3 by value: 0, 1, 2; best new: 5.
    values = np.array([[0.9, 0.8, 0.7, 0.6, 0.1, 0.3]])
    is_new = np.array([False, False, False, False, True, True])
    assert top_k_with_new_items(values, 3, is_new, slots=1).tolist() == [[0, 1, 5]]
    assert top_k_with_new_items(values, 3, is_new, slots=2).tolist() == [[0, 5, 4]]
    assert top_k_with_new_items(values, 3, is_new, slots=0).tolist() == [[0, 1, 2]]


def test_new_item_already_listed_needs_no_slot() -> None:
    values = np.array([[0.9, 0.2, 0.8, 0.5], [0.9, 0.8, 0.7, 0.1]])
    is_new = np.array([False, False, True, False])
    # Row 0 lists new item 2 on its own merit; row 1 does not and gets it in the last place.
    assert top_k_with_new_items(values, 2, is_new, slots=1).tolist() == [[0, 2], [0, 2]]


def test_excluded_new_items_are_never_forced_in() -> None:
    values = np.array([[0.9, 0.8, -np.inf, 0.1]])
    is_new = np.array([False, False, True, False])
    assert top_k_with_new_items(values, 2, is_new, slots=1).tolist() == [[0, 1]]
    with pytest.raises(ValueError, match="slots"):
        top_k_with_new_items(values, 2, is_new, slots=-1)


def test_rank_lists_keeps_a_place_for_the_best_new_item_not_consumed() -> None:
    # Items a, b, c established; d new. User u consumed a; d would rank last without the slot.
    scores = np.array([[0.9, 0.8, 0.7, 0.1]])
    histories = history_frame([("u", "a", 1.0)])
    is_new = np.array([False, False, False, True])
    plain = rank_lists(scores, ["u"], ITEMS, histories, TRENDING, 2, trending_blend=0.0)
    slotted = rank_lists(
        scores,
        ["u"],
        ITEMS,
        histories,
        TRENDING,
        2,
        trending_blend=0.0,
        is_new=is_new,
        new_item_slots=1,
    )
    assert list(plain[ITEM_ID]) == ["b", "c"]
    assert list(slotted[ITEM_ID]) == ["b", "d"]
    assert slotted[SCORE].is_monotonic_decreasing
