from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ml.constants import ITEM_ID, RANK, USER_ID
from ml.evaluation.metrics import (
    catalog_coverage,
    hit_rate_at_k,
    intra_list_diversity,
    list_metrics,
    mrr,
    ndcg_at_k,
    novelty,
    recall_at_k,
)


def recommendations_frame(lists: dict[str, list[str]]) -> pd.DataFrame:
    """Rows (user_id, item_id, rank) from ordered lists, best first."""
    rows = [
        (user, item, rank)
        for user, items in lists.items()
        for rank, item in enumerate(items, start=1)
    ]
    return pd.DataFrame(rows, columns=[USER_ID, ITEM_ID, RANK])


def truth_frame(items_by_user: dict[str, list[str]]) -> pd.DataFrame:
    """Rows (user_id, item_id) of held-out items."""
    rows = [(user, item) for user, items in items_by_user.items() for item in items]
    return pd.DataFrame(rows, columns=[USER_ID, ITEM_ID])


# u1 finds b at position 2 (and d at position 4); u2 finds x at position 1; u3 has no list.
RECOMMENDATIONS = recommendations_frame({"u1": ["a", "b", "c", "d"], "u2": ["x", "y", "z"]})
TRUTH = truth_frame({"u1": ["b", "d", "e"], "u2": ["x"], "u3": ["a"]})


def test_recall_divides_hits_by_held_out_items() -> None:
    # k=3: u1 1 of 3, u2 1 of 1, u3 none -> (1/3 + 1 + 0) / 3
    assert recall_at_k(RECOMMENDATIONS, TRUTH, k=3) == pytest.approx(4 / 9)
    # k=4 adds d for u1: (2/3 + 1 + 0) / 3
    assert recall_at_k(RECOMMENDATIONS, TRUTH, k=4) == pytest.approx(5 / 9)


def test_ndcg_worked_example() -> None:
    # Worked by hand, binary relevance, gain at position p is 1 / log2(p + 1):
    # u1, k=3: list a b c, hit b at p=2 -> DCG = 1/log2(3) = 0.63093.
    #   Held-out b d e: ideal places min(3, 3) = 3 hits -> IDCG = 1 + 1/log2(3) + 1/log2(4)
    #   = 1 + 0.63093 + 0.5 = 2.13093; NDCG = 0.63093 / 2.13093 = 0.29608.
    # u2, k=3: hit x at p=1 -> DCG = 1; ideal min(3, 1) = 1 hit -> IDCG = 1; NDCG = 1.
    # u3: no list -> 0.  Mean = (0.29608 + 1 + 0) / 3 = 0.43203.
    assert ndcg_at_k(RECOMMENDATIONS, TRUTH, k=3) == pytest.approx(0.43203, abs=1e-5)
    # u1, k=4: hits at p=2 and p=4 -> DCG = 0.63093 + 1/log2(5) = 0.63093 + 0.43068 = 1.06161;
    # IDCG still 2.13093 -> 0.49819.  Mean = (0.49819 + 1 + 0) / 3 = 0.49940.
    assert ndcg_at_k(RECOMMENDATIONS, TRUTH, k=4) == pytest.approx(0.49940, abs=1e-5)


def test_ndcg_is_one_for_a_perfect_list() -> None:
    truth = truth_frame({"u1": ["a", "b"]})
    assert ndcg_at_k(recommendations_frame({"u1": ["a", "b", "c"]}), truth, k=3) == 1.0
    assert ndcg_at_k(recommendations_frame({"u1": ["b", "a"]}), truth, k=3) == 1.0


def test_hit_rate_counts_users_with_any_hit() -> None:
    assert hit_rate_at_k(RECOMMENDATIONS, TRUTH, k=3) == pytest.approx(2 / 3)
    assert hit_rate_at_k(RECOMMENDATIONS, TRUTH, k=1) == pytest.approx(1 / 3)


def test_mrr_uses_first_hit_within_k() -> None:
    assert mrr(RECOMMENDATIONS, TRUTH, k=3) == pytest.approx((1 / 2 + 1) / 3)
    assert mrr(RECOMMENDATIONS, TRUTH, k=1) == pytest.approx(1 / 3)


def test_positions_follow_rank_not_row_order_and_ignore_gaps_and_repeats() -> None:
    shuffled = pd.DataFrame(
        {
            USER_ID: ["u1", "u1", "u1", "u1"],
            ITEM_ID: ["c", "a", "b", "a"],
            RANK: [30, 10, 20, 40],  # a repeats at a worse rank; gaps between ranks
        }
    )
    truth = truth_frame({"u1": ["b"]})
    # b is the second distinct item -> reciprocal rank 1/2 and gain 1/log2(3)
    assert mrr(shuffled, truth, k=3) == pytest.approx(0.5)
    assert ndcg_at_k(shuffled, truth, k=3) == pytest.approx(1 / math.log2(3))
    assert hit_rate_at_k(shuffled, truth, k=1) == 0.0


def test_users_only_in_recommendations_do_not_count() -> None:
    extra = pd.concat([RECOMMENDATIONS, recommendations_frame({"stranger": ["a"]})])
    assert recall_at_k(extra, TRUTH, k=3) == recall_at_k(RECOMMENDATIONS, TRUTH, k=3)


def test_empty_truth_scores_zero() -> None:
    empty_truth = truth_frame({})
    for metric in (recall_at_k, ndcg_at_k, hit_rate_at_k, mrr):
        assert metric(RECOMMENDATIONS, empty_truth, k=3) == 0.0


@pytest.mark.parametrize("k", [0, -1, 2.5])
def test_k_must_be_a_positive_integer(k: object) -> None:
    with pytest.raises(ValueError, match="k must be a positive integer"):
        recall_at_k(RECOMMENDATIONS, TRUTH, k=k)  # type: ignore[arg-type]


def test_missing_column_names_the_frame_and_column() -> None:
    with pytest.raises(ValueError, match=r"recommendations is missing column\(s\) \['rank'\]"):
        ndcg_at_k(RECOMMENDATIONS.drop(columns=RANK), TRUTH)


def reference_metrics(
    recommendations: pd.DataFrame, truth: pd.DataFrame, k: int
) -> dict[str, float]:
    """A deliberately naive per-user loop of the four accuracy metrics."""
    totals = {"recall": 0.0, "ndcg": 0.0, "hit": 0.0, "mrr": 0.0}
    users = list(dict.fromkeys(truth[USER_ID]))
    for user in users:
        relevant = set(truth.loc[truth[USER_ID] == user, ITEM_ID])
        ranked = recommendations.loc[recommendations[USER_ID] == user].sort_values(RANK)
        top: list[str] = []
        for item in ranked[ITEM_ID]:
            if item not in top:
                top.append(item)
        top = top[:k]
        hits = [position for position, item in enumerate(top, start=1) if item in relevant]
        totals["recall"] += len(hits) / len(relevant)
        dcg = sum(1 / math.log2(position + 1) for position in hits)
        ideal = sum(1 / math.log2(position + 1) for position in range(1, min(k, len(relevant)) + 1))
        totals["ndcg"] += dcg / ideal
        totals["hit"] += 1.0 if hits else 0.0
        totals["mrr"] += 1 / hits[0] if hits else 0.0
    return {name: total / len(users) for name, total in totals.items()}


@pytest.mark.parametrize("seed", range(5))
def test_accuracy_metrics_match_a_naive_reference(seed: int) -> None:
    generator = np.random.default_rng(seed)
    items = [f"i{number}" for number in range(15)]
    lists = {
        f"u{user}": list(generator.choice(items, size=generator.integers(0, 9), replace=False))
        for user in range(12)
    }
    held_out = {
        f"u{user}": list(generator.choice(items, size=generator.integers(1, 5), replace=False))
        for user in range(3, 15)
    }
    recommendations, truth = recommendations_frame(lists), truth_frame(held_out)
    for k in (1, 3, 5, 10):
        expected = reference_metrics(recommendations, truth, k)
        assert recall_at_k(recommendations, truth, k) == pytest.approx(expected["recall"])
        assert ndcg_at_k(recommendations, truth, k) == pytest.approx(expected["ndcg"])
        assert hit_rate_at_k(recommendations, truth, k) == pytest.approx(expected["hit"])
        assert mrr(recommendations, truth, k) == pytest.approx(expected["mrr"])


def test_catalog_coverage_counts_distinct_items_within_k() -> None:
    # k=2: u1 a b, u2 x y -> 4 distinct of a 10-item catalog
    assert catalog_coverage(RECOMMENDATIONS, TRUTH, k=2, catalog_size=10) == pytest.approx(0.4)
    shared = recommendations_frame({"u1": ["a", "b"], "u2": ["b", "a"]})
    assert catalog_coverage(shared, TRUTH, k=2, catalog_size=4) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="catalog_size"):
        catalog_coverage(RECOMMENDATIONS, TRUTH, k=2, catalog_size=0)


def test_novelty_is_mean_self_information() -> None:
    # Shares of 16 interactions: a 8/16, b 4/16, c 2/16 -> -log2: 1, 2, 3.
    popularity = {"a": 8, "b": 4, "c": 2, "d": 2}
    recommendations = recommendations_frame({"u1": ["a", "b", "d"], "u2": ["c", "new"]})
    # k=2: u1 (1 + 2) / 2 = 1.5; u2 c = 3 and the unknown item counts as the least popular
    # known item (2 of 16 -> 3): (3 + 3) / 2 = 3.  Mean over users = 2.25.
    assert novelty(recommendations, TRUTH, k=2, item_popularity=popularity) == pytest.approx(2.25)
    as_series = pd.Series(popularity)
    assert novelty(recommendations, TRUTH, k=2, item_popularity=as_series) == pytest.approx(2.25)


def test_novelty_needs_some_popularity() -> None:
    with pytest.raises(ValueError, match="positive popularity"):
        novelty(RECOMMENDATIONS, TRUTH, k=2, item_popularity={"a": 0})
    assert novelty(recommendations_frame({}), TRUTH, k=2, item_popularity={"a": 1}) == 0.0


def test_intra_list_diversity_known_answer() -> None:
    vectors = {
        "a": np.array([1.0, 0.0]),
        "b": np.array([0.0, 1.0]),
        "c": np.array([1.0, 1.0]),
        "d": np.array([2.0, 0.0]),
        "zero": np.array([0.0, 0.0]),
    }
    recommendations = recommendations_frame(
        {
            "u1": ["a", "b", "c"],  # distances 1, 1 - 1/sqrt(2), 1 - 1/sqrt(2)
            "u2": ["a", "d"],  # same direction -> 0
            "u3": ["a", "unknown"],  # one vectored item: no pairs, left out
            "u4": ["a", "zero"],  # a zero vector is orthogonal to everything -> 1
        }
    )
    first = (1 + 2 * (1 - 1 / math.sqrt(2))) / 3
    expected = (first + 0.0 + 1.0) / 3
    result = intra_list_diversity(recommendations, TRUTH, k=3, item_vectors=vectors)
    assert result == pytest.approx(expected)
    as_series = pd.Series(vectors)
    assert intra_list_diversity(
        recommendations, TRUTH, k=3, item_vectors=as_series
    ) == pytest.approx(expected)


def test_intra_list_diversity_matches_pairwise_loop() -> None:
    generator = np.random.default_rng(7)
    items = [f"i{number}" for number in range(20)]
    vectors = {item: generator.normal(size=4) for item in items}
    lists = {f"u{user}": list(generator.choice(items, size=6, replace=False)) for user in range(10)}
    expected_per_user = []
    for top in lists.values():
        distances = []
        for first in range(5):
            for second in range(first + 1, 5):
                u, v = vectors[top[first]], vectors[top[second]]
                distances.append(1 - u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))
        expected_per_user.append(np.mean(distances))
    result = intra_list_diversity(recommendations_frame(lists), TRUTH, k=5, item_vectors=vectors)
    assert result == pytest.approx(float(np.mean(expected_per_user)))


def test_intra_list_diversity_without_pairs_is_zero() -> None:
    single = recommendations_frame({"u1": ["a"]})
    assert intra_list_diversity(single, TRUTH, k=3, item_vectors={"a": [1.0, 0.0]}) == 0.0
    assert intra_list_diversity(single, TRUTH, k=3, item_vectors={"b": [1.0, 0.0]}) == 0.0


def test_list_metrics_give_what_each_metric_gives_alone() -> None:
    popularity = pd.Series({"a": 5.0, "b": 1.0, "x": 2.0, "y": 8.0})
    vectors = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [1.0, 1.0], "x": [1.0, 0.0], "y": [1.0, 0.0]}
    for k in (1, 2, 4):
        figures = list_metrics(
            RECOMMENDATIONS,
            TRUTH,
            k,
            catalog_size=10,
            item_popularity=popularity,
            item_vectors=vectors,
        )
        assert figures == {
            f"ndcg@{k}": ndcg_at_k(RECOMMENDATIONS, TRUTH, k),
            f"recall@{k}": recall_at_k(RECOMMENDATIONS, TRUTH, k),
            f"hit_rate@{k}": hit_rate_at_k(RECOMMENDATIONS, TRUTH, k),
            "mrr": mrr(RECOMMENDATIONS, TRUTH, k),
            "coverage": catalog_coverage(RECOMMENDATIONS, TRUTH, k, catalog_size=10),
            "novelty": novelty(RECOMMENDATIONS, TRUTH, k, item_popularity=popularity),
            "diversity": intra_list_diversity(RECOMMENDATIONS, TRUTH, k, item_vectors=vectors),
        }
    # Known answers at k=4: u1's hits at 2 and 4 of three held-out items, u2's at 1, u3 none.
    at_four = list_metrics(RECOMMENDATIONS, TRUTH, 4, catalog_size=10, item_popularity=popularity)
    assert at_four["hit_rate@4"] == pytest.approx(2 / 3)
    assert at_four["mrr"] == pytest.approx((1 / 2 + 1) / 3)
    assert "diversity" not in at_four
