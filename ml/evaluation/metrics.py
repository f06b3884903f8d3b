"""Top-K ranking metrics, each a pure function with one signature.

Every metric takes `recommendations` (user_id, item_id, rank; rank 1 is the best) and `truth`
(user_id, item_id: the held-out items a user went on to consume) and a list length `k`, and
returns one float. Only each user's `k` best-ranked distinct items count. Accuracy metrics average
over the users in `truth`; a truth user with no recommendations scores 0. Beyond-accuracy metrics
(coverage, novelty, diversity) describe the lists themselves, take `truth` only to keep the shared
signature, and add keyword-only arguments for what else they need.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ml.constants import DEFAULT_TOP_K, ITEM_ID, RANK, USER_ID
from ml.frames import require_columns, require_positive_k

POSITION = "position"  # 1-based place of an item in a user's top-K list, after ties and gaps


def _top_k(recommendations: pd.DataFrame, k: int) -> pd.DataFrame:
    """Each user's k best-ranked distinct items with their 1-based list position."""
    require_positive_k(k)
    require_columns(recommendations, (USER_ID, ITEM_ID, RANK), name="recommendations")
    # A stable sort on rank alone keeps input order among equal ranks and never compares user ids.
    ordered = recommendations[[USER_ID, ITEM_ID, RANK]].sort_values(RANK, kind="stable")
    ordered = ordered.drop_duplicates([USER_ID, ITEM_ID], keep="first")
    ordered[POSITION] = ordered.groupby(USER_ID, sort=False).cumcount() + 1
    return ordered.loc[ordered[POSITION] <= k, [USER_ID, ITEM_ID, POSITION]]


def _hits(recommendations: pd.DataFrame, truth: pd.DataFrame, k: int) -> pd.DataFrame:
    """The top-k rows (user_id, item_id, position) whose item is in the user's truth."""
    top = _top_k(recommendations, k)
    return top.merge(_truth_pairs(truth), on=[USER_ID, ITEM_ID], how="inner")


def _truth_pairs(truth: pd.DataFrame) -> pd.DataFrame:
    """Distinct (user_id, item_id) pairs of the held-out truth."""
    require_columns(truth, (USER_ID, ITEM_ID), name="truth")
    return truth[[USER_ID, ITEM_ID]].drop_duplicates()


def _mean_over_truth_users(per_user: pd.Series, truth: pd.DataFrame) -> float:
    """Mean of a per-user value over every truth user, a missing user counting as 0."""
    users = pd.unique(truth[USER_ID])
    if len(users) == 0:
        return 0.0
    return float(per_user.reindex(users, fill_value=0.0).mean())


def recall_at_k(
    recommendations: pd.DataFrame, truth: pd.DataFrame, k: int = DEFAULT_TOP_K
) -> float:
    """Mean share of each user's held-out items found in their top k; in [0, 1].

    The denominator is the user's number of held-out items, so a user with more than k of them
    cannot reach 1 (the same definition as recommenders-team's recall_at_k).
    """
    return _recall(_hits(recommendations, truth, k), truth)


def _recall(hits: pd.DataFrame, truth: pd.DataFrame) -> float:
    hits_per_user = hits.groupby(USER_ID, sort=False).size()
    truth_per_user = _truth_pairs(truth).groupby(USER_ID, sort=False).size()
    recall = hits_per_user.reindex(truth_per_user.index, fill_value=0) / truth_per_user
    return _mean_over_truth_users(recall, truth)


def ndcg_at_k(recommendations: pd.DataFrame, truth: pd.DataFrame, k: int = DEFAULT_TOP_K) -> float:
    """Mean normalised discounted cumulative gain at k with binary relevance; in [0, 1].

    DCG sums 1 / log2(position + 1) over the hits in the top k; the ideal DCG places
    min(k, number of held-out items) hits at the top.
    """
    return _mean_over_truth_users(ndcg_per_user(recommendations, truth, k), truth)


def ndcg_per_user(
    recommendations: pd.DataFrame, truth: pd.DataFrame, k: int = DEFAULT_TOP_K
) -> pd.Series:
    """NDCG@k of every truth user (indexed by user_id, 0 for a user with no list); in [0, 1]."""
    return _ndcg_per_user(_hits(recommendations, truth, k), truth, k)


def _ndcg_per_user(hits: pd.DataFrame, truth: pd.DataFrame, k: int) -> pd.Series:
    gains = 1.0 / np.log2(hits[POSITION].to_numpy(dtype=float) + 1.0)
    dcg = pd.Series(gains, index=hits[USER_ID].to_numpy()).groupby(level=0, sort=False).sum()
    truth_per_user = _truth_pairs(truth).groupby(USER_ID, sort=False).size()
    ideal_cumulative = np.cumsum(1.0 / np.log2(np.arange(2, k + 2, dtype=float)))
    ideal_hits = np.minimum(truth_per_user.to_numpy(), k)
    ideal_dcg = pd.Series(ideal_cumulative[ideal_hits - 1], index=truth_per_user.index)
    return dcg.reindex(ideal_dcg.index, fill_value=0.0) / ideal_dcg


def hit_rate_at_k(
    recommendations: pd.DataFrame, truth: pd.DataFrame, k: int = DEFAULT_TOP_K
) -> float:
    """Share of truth users with at least one held-out item in their top k; in [0, 1]."""
    return _hit_rate(_hits(recommendations, truth, k), truth)


def _hit_rate(hits: pd.DataFrame, truth: pd.DataFrame) -> float:
    hit_users = pd.unique(hits[USER_ID])
    return _mean_over_truth_users(pd.Series(1.0, index=hit_users), truth)


def mrr(recommendations: pd.DataFrame, truth: pd.DataFrame, k: int = DEFAULT_TOP_K) -> float:
    """Mean reciprocal rank of each user's first hit within the top k (0 if none); in [0, 1]."""
    return _mrr(_hits(recommendations, truth, k), truth)


def _mrr(hits: pd.DataFrame, truth: pd.DataFrame) -> float:
    first_hit = hits.groupby(USER_ID, sort=False)[POSITION].min()
    return _mean_over_truth_users(1.0 / first_hit.astype(float), truth)


def catalog_coverage(
    recommendations: pd.DataFrame,
    truth: pd.DataFrame,
    k: int = DEFAULT_TOP_K,
    *,
    catalog_size: int,
) -> float:
    """Distinct items in any top-k list divided by the catalog size; in [0, 1] for catalog items.

    `truth` is unused: coverage describes the lists, not how well they predict.
    """
    return _coverage(_top_k(recommendations, k), catalog_size)


def _coverage(top: pd.DataFrame, catalog_size: int) -> float:
    if catalog_size < 1:
        raise ValueError(f"catalog_size must be at least 1, got {catalog_size!r}")
    return top[ITEM_ID].nunique() / catalog_size


def novelty(
    recommendations: pd.DataFrame,
    truth: pd.DataFrame,
    k: int = DEFAULT_TOP_K,
    *,
    item_popularity: Mapping[Hashable, float] | pd.Series,
) -> float:
    """Mean self-information -log2(popularity share) of recommended items; >= 0, higher is rarer.

    `item_popularity` maps item id to its interaction count (or weight) in the training data; an
    item's share is its popularity over the total. Items missing from it (or with zero popularity)
    count as the least popular known item, so brand-new items score high but finite. Each user's
    top-k list is averaged first, then the users who have a list; `truth` is unused.
    """
    return _novelty(_top_k(recommendations, k), item_popularity)


def _novelty(top: pd.DataFrame, item_popularity: Mapping[Hashable, float] | pd.Series) -> float:
    popularity = pd.Series(item_popularity, dtype=float)
    positive = popularity[popularity > 0]
    if positive.empty:
        raise ValueError("item_popularity has no item with positive popularity")
    if top.empty:
        return 0.0
    item_popularity_values = positive.reindex(top[ITEM_ID].to_numpy()).fillna(positive.min())
    self_information = -np.log2(item_popularity_values.to_numpy() / positive.sum())
    per_user = pd.Series(self_information, index=top[USER_ID].to_numpy())
    return float(per_user.groupby(level=0, sort=False).mean().mean())


def intra_list_diversity(
    recommendations: pd.DataFrame,
    truth: pd.DataFrame,
    k: int = DEFAULT_TOP_K,
    *,
    item_vectors: Mapping[Hashable, Sequence[float] | np.ndarray] | pd.Series,
) -> float:
    """Mean pairwise cosine distance (1 - cosine) within each top-k list; in [0, 2].

    Items without a vector are skipped; a zero vector is treated as orthogonal to everything.
    Lists with fewer than two vectored items have no pairs and are left out of the mean (0.0 when
    no list has a pair). With non-negative vectors the result lies in [0, 1]; `truth` is unused.
    """
    return _diversity(_top_k(recommendations, k), item_vectors)


def _diversity(
    top: pd.DataFrame, item_vectors: Mapping[Hashable, Sequence[float] | np.ndarray] | pd.Series
) -> float:
    # Only the listed items' vectors are looked up (the catalog's may be many thousands).
    vectors = {item: item_vectors[item] for item in pd.unique(top[ITEM_ID]) if item in item_vectors}
    top = top.loc[top[ITEM_ID].isin(list(vectors))]
    if top.empty:
        return 0.0
    item_codes, items = pd.factorize(top[ITEM_ID])
    matrix = np.vstack([np.asarray(vectors[item], dtype=float) for item in items])
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
    user_codes, users = pd.factorize(top[USER_ID])
    membership = sp.csr_matrix(
        (np.ones(len(top)), (user_codes, np.arange(len(top)))), shape=(len(users), len(top))
    )
    # For unit vectors u_1..u_n: sum over pairs i<j of cos(u_i, u_j) = (|sum u|^2 - sum |u|^2) / 2,
    # which gives every list's mean pairwise similarity without building n x n matrices.
    rows = unit[item_codes]
    summed = membership @ rows
    squared_norms = membership @ np.einsum("ij,ij->i", rows, rows)
    list_lengths = np.bincount(user_codes, minlength=len(users)).astype(float)
    pairs = list_lengths * (list_lengths - 1.0) / 2.0
    similarity_sums = (np.einsum("ij,ij->i", summed, summed) - squared_norms) / 2.0
    has_pairs = pairs > 0
    if not has_pairs.any():
        return 0.0
    return float(np.mean(1.0 - similarity_sums[has_pairs] / pairs[has_pairs]))


def list_metrics(
    recommendations: pd.DataFrame,
    truth: pd.DataFrame,
    k: int = DEFAULT_TOP_K,
    *,
    catalog_size: int,
    item_popularity: Mapping[Hashable, float] | pd.Series,
    item_vectors: Mapping[Hashable, Sequence[float] | np.ndarray] | pd.Series | None = None,
) -> dict[str, float]:
    """Every metric above of the same lists and truth, from one top-k and one join with the
    truth (what calling each function gives, without redoing them per metric)."""
    top = _top_k(recommendations, k)
    hits = top.merge(_truth_pairs(truth), on=[USER_ID, ITEM_ID], how="inner")
    figures = {
        f"ndcg@{k}": _mean_over_truth_users(_ndcg_per_user(hits, truth, k), truth),
        f"recall@{k}": _recall(hits, truth),
        f"hit_rate@{k}": _hit_rate(hits, truth),
        "mrr": _mrr(hits, truth),
        "coverage": _coverage(top, catalog_size),
        "novelty": _novelty(top, item_popularity),
    }
    if item_vectors is not None:
        figures["diversity"] = _diversity(top, item_vectors)
    return figures
