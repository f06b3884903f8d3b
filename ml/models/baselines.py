"""Baseline recommenders: popularity, trending, item-kNN and EASE, all behind one interface.

`fit(interactions)` learns from (user_id, item_id, weight[, occurred_at]) rows; `score(histories)`
scores any users from the (user_id, item_id, weight) history they bring at scoring time, so users
never seen in `fit` are scored too and a fresh event changes a list without retraining. Only
positive weights count as evidence; dislikes and impressions add nothing here (the ranking layer
deals with them). Items are indexed in sorted id order, which also breaks score ties.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable
from typing import ClassVar, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ml.constants import (
    DEFAULT_EASE_L2,
    DEFAULT_EASE_MAX_ITEMS,
    DEFAULT_KNN_NEIGHBOURS,
    DEFAULT_TRENDING_HALF_LIFE_DAYS,
    ITEM_ID,
    OCCURRED_AT,
    SCORE,
    USER_ID,
    WEIGHT,
)
from ml.frames import require_columns


class Recommender(ABC):
    """Fit on interactions, then score users from the histories they bring at scoring time."""

    required_columns: ClassVar[tuple[str, ...]] = (USER_ID, ITEM_ID, WEIGHT)

    def __init__(self) -> None:
        self._item_index: pd.Index | None = None

    @property
    def item_ids(self) -> np.ndarray:
        """Item ids in score-column order (sorted), known after fit."""
        return self._fitted_item_index().to_numpy()

    def fit(
        self,
        interactions: pd.DataFrame,
        catalog_item_ids: Iterable[Hashable] | None = None,
    ) -> Self:
        """Learn from interactions; catalog items without interactions join the item index."""
        require_columns(interactions, self.required_columns, name="interactions")
        _require_finite_weights(interactions, name="interactions")
        item_index = _build_item_index(interactions[ITEM_ID], catalog_item_ids)
        self._item_index = None  # a fit that fails half-way must not leave a usable-looking model
        self._fit(interactions, item_index)
        self._item_index = item_index
        return self

    def score(self, histories: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(user ids sorted, scores of shape users x items aligned to item_ids) for each user.

        `histories` holds user_id, item_id and weight (1.0 for every row when the column is
        absent); items outside the index are ignored. Score users in batches to bound memory:
        the result is dense.
        """
        item_index = self._fitted_item_index()
        require_columns(histories, (USER_ID, ITEM_ID), name="histories")
        user_ids, history = _user_item_matrix(histories, item_index, name="histories")
        return user_ids, np.asarray(self._score(history), dtype=float)

    def _fitted_item_index(self) -> pd.Index:
        """The item index, or a clear error when fit has not run."""
        if self._item_index is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted yet: call fit(interactions)")
        return self._item_index

    @abstractmethod
    def _fit(self, interactions: pd.DataFrame, item_index: pd.Index) -> None:
        """Learn the model's parameters for the given item index."""

    @abstractmethod
    def _score(self, history: sp.csr_array) -> np.ndarray:
        """Dense users x items scores from a users x items matrix of positive history weights."""


class _ItemScoreRecommender(Recommender):
    """A recommender that gives every user the same per-item scores."""

    def __init__(self) -> None:
        super().__init__()
        self._item_scores = np.zeros(0)

    @property
    def item_scores(self) -> pd.Series:
        """Each item's score, indexed by item id (the input `rank_lists` takes as `trending`)."""
        item_index = self._fitted_item_index().rename(ITEM_ID)
        return pd.Series(self._item_scores, index=item_index, name=SCORE)

    def _score(self, history: sp.csr_array) -> np.ndarray:
        return np.tile(self._item_scores, (history.shape[0], 1))


class PopularityRecommender(_ItemScoreRecommender):
    """Scores each item by the sum of its positive interaction weights."""

    def _fit(self, interactions: pd.DataFrame, item_index: pd.Index) -> None:
        item_codes = item_index.get_indexer(interactions[ITEM_ID])
        weights = interactions[WEIGHT].to_numpy(dtype=float).clip(min=0.0)
        self._item_scores = np.bincount(item_codes, weights=weights, minlength=len(item_index))


class TrendingRecommender(_ItemScoreRecommender):
    """Scores each item by positive weight decayed with its age before the newest event.

    Age is measured back from the newest `occurred_at` in the fitted data, never the wall clock,
    so replays and backfills rank as live traffic did. A weight halves every `half_life_days`;
    with `window_days` set, events older than the window count for nothing.
    """

    required_columns: ClassVar[tuple[str, ...]] = (USER_ID, ITEM_ID, WEIGHT, OCCURRED_AT)

    def __init__(
        self,
        half_life_days: float = DEFAULT_TRENDING_HALF_LIFE_DAYS,
        window_days: float | None = None,
    ) -> None:
        super().__init__()
        if not half_life_days > 0:
            raise ValueError(f"half_life_days must be positive, got {half_life_days!r}")
        if window_days is not None and not window_days > 0:
            raise ValueError(f"window_days must be positive or None, got {window_days!r}")
        self.half_life_days = half_life_days
        self.window_days = window_days
        self.reference_time: pd.Timestamp | None = None

    def _fit(self, interactions: pd.DataFrame, item_index: pd.Index) -> None:
        times = interactions[OCCURRED_AT]
        if not pd.api.types.is_datetime64_any_dtype(times):
            raise ValueError(
                f"interactions column {OCCURRED_AT!r} must hold datetimes, got dtype "
                f"{times.dtype}; parse it with pandas.to_datetime first"
            )
        self._item_scores = np.zeros(len(item_index))
        self.reference_time = None
        if times.notna().sum() == 0:
            return
        self.reference_time = pd.Timestamp(times.max())
        age_days = ((self.reference_time - times) / pd.Timedelta(days=1)).to_numpy(dtype=float)
        decayed = interactions[WEIGHT].to_numpy(dtype=float).clip(min=0.0) * np.exp2(
            -age_days / self.half_life_days
        )
        counted = np.isfinite(decayed)  # rows without a time carry no evidence of trend
        if self.window_days is not None:
            counted &= age_days <= self.window_days
        item_codes = item_index.get_indexer(interactions[ITEM_ID])
        self._item_scores = np.bincount(
            item_codes[counted], weights=decayed[counted], minlength=len(item_index)
        )


class ItemKNNRecommender(Recommender):
    """Item-item cosine similarity on positive weights; a user scores sum(weight x similarity).

    Each item keeps only its `neighbours` most similar items (ties to the lower item index), so
    a user's history item contributes to at most that many candidates.
    """

    def __init__(self, neighbours: int = DEFAULT_KNN_NEIGHBOURS) -> None:
        super().__init__()
        if neighbours < 1:
            raise ValueError(f"neighbours must be at least 1, got {neighbours!r}")
        self.neighbours = neighbours
        self._similarity: sp.csr_array | None = None

    @property
    def similarity(self) -> sp.csr_array:
        """Items x items pruned cosine similarity: row i holds item i's neighbours."""
        self._fitted_item_index()
        assert self._similarity is not None  # set together with the item index
        return self._similarity

    def _fit(self, interactions: pd.DataFrame, item_index: pd.Index) -> None:
        _, matrix = _user_item_matrix(interactions, item_index, name="interactions")
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=0)).ravel())
        inverse_norms = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        matrix.data *= inverse_norms[matrix.indices]
        similarity = sp.csr_array(matrix.T @ matrix)
        similarity = sp.csr_array(similarity - sp.diags_array(similarity.diagonal()))
        similarity.eliminate_zeros()
        self._similarity = _keep_largest_per_row(similarity, self.neighbours)

    def _score(self, history: sp.csr_array) -> np.ndarray:
        return (history @ self.similarity).toarray()


class EASERecommender(Recommender):
    """EASE (Steck 2019): a closed-form item-item linear model with a zero diagonal.

    B = I - P / diag(P) with P = (X'X + l2_penalty I)^-1. B is dense items x items, so fitting
    more than `max_items` items raises instead of exhausting memory.
    """

    def __init__(
        self, l2_penalty: float = DEFAULT_EASE_L2, max_items: int = DEFAULT_EASE_MAX_ITEMS
    ) -> None:
        super().__init__()
        if not l2_penalty > 0:
            raise ValueError(f"l2_penalty must be positive, got {l2_penalty!r}")
        self.l2_penalty = l2_penalty
        self.max_items = max_items
        self._weights: np.ndarray | None = None

    @property
    def similarity(self) -> np.ndarray:
        """Items x items learned weights B (zero diagonal): row i holds item i's contributions."""
        self._fitted_item_index()
        assert self._weights is not None  # set together with the item index
        return self._weights

    def _fit(self, interactions: pd.DataFrame, item_index: pd.Index) -> None:
        n_items = len(item_index)
        if n_items > self.max_items:
            gibibytes = n_items * n_items * 8 * 3 / 2**30  # Gram, inverse and weights in float64
            raise ValueError(
                f"EASE needs dense {n_items} x {n_items} item matrices (about {gibibytes:.1f} GiB) "
                f"and {n_items} items exceed max_items={self.max_items}; raise max_items if the "
                "memory is there, or use ItemKNNRecommender"
            )
        _, matrix = _user_item_matrix(interactions, item_index, name="interactions")
        gram = (matrix.T @ matrix).toarray()
        gram[np.diag_indices(n_items)] += self.l2_penalty
        precision = np.linalg.inv(gram)
        weights = precision / -np.diag(precision)
        np.fill_diagonal(weights, 0.0)
        self._weights = weights

    def _score(self, history: sp.csr_array) -> np.ndarray:
        return history @ self.similarity


def _build_item_index(
    interaction_items: pd.Series, catalog_item_ids: Iterable[Hashable] | None
) -> pd.Index:
    """Sorted distinct ids of the interaction items and the catalog items."""
    items = pd.Index(pd.unique(interaction_items), name=ITEM_ID)
    if catalog_item_ids is not None:
        items = pd.Index(list(catalog_item_ids)).append(items).unique()
    try:
        return items.sort_values()
    except TypeError as error:
        raise ValueError(
            "item ids mix types that cannot be ordered (for example numbers and strings); "
            "cast catalog and interaction item ids to one type"
        ) from error


def _user_item_matrix(
    frame: pd.DataFrame, item_index: pd.Index, *, name: str
) -> tuple[np.ndarray, sp.csr_array]:
    """(sorted user ids, users x items matrix of summed positive weights) of a frame.

    Every user of the frame gets a row, even one whose items are all unknown or unweighted.
    """
    user_codes, user_ids = pd.factorize(frame[USER_ID], sort=True)
    item_codes = item_index.get_indexer(frame[ITEM_ID])
    if WEIGHT in frame.columns:
        _require_finite_weights(frame, name=name)
        weights = frame[WEIGHT].to_numpy(dtype=float)
    else:
        weights = np.ones(len(frame))
    kept = (item_codes >= 0) & (weights > 0)
    matrix = sp.csr_array(
        (weights[kept], (user_codes[kept], item_codes[kept])),
        shape=(len(user_ids), len(item_index)),
    )
    matrix.sum_duplicates()
    return np.asarray(user_ids), matrix


def _keep_largest_per_row(matrix: sp.csr_array, count: int) -> sp.csr_array:
    """Keep each row's `count` largest entries, ties going to the lower column index."""
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    order = np.lexsort((matrix.indices, -matrix.data, rows))
    place_in_row = np.arange(len(order)) - matrix.indptr[rows[order]]
    kept = order[place_in_row < count]
    return sp.csr_array((matrix.data[kept], (rows[kept], matrix.indices[kept])), shape=matrix.shape)


def _require_finite_weights(frame: pd.DataFrame, *, name: str) -> None:
    """Raise ValueError naming the first row whose weight is missing or infinite."""
    weights = frame[WEIGHT].to_numpy(dtype=float)
    bad = ~np.isfinite(weights)
    if bad.any():
        first = frame.index[int(np.argmax(bad))]
        raise ValueError(
            f"{name} column {WEIGHT!r} has {int(bad.sum())} missing or infinite value(s), "
            f"first at index {first!r}; fill or drop those rows"
        )
