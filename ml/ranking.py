"""The first ranking layer: turn score matrices into top-K lists with a reason per item.

Rules, in order: drop items the user already has in their history and unavailable items; rescale
the model score and the trending score to [0, 1] over each user's remaining items (divided by the
largest; min-max when scores go negative) and blend them; keep the k best, ties to the earlier
item. A listed item whose raw model score is positive says "because you watched <title>" after
the history item that contributed most to it; any other item says "trending now".
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ml.constants import (
    DEFAULT_TRENDING_BLEND,
    ITEM_ID,
    RANK,
    REASON,
    SCORE,
    USER_ID,
    WEIGHT,
)
from ml.frames import require_columns, require_positive_k

TRENDING_NOW = "trending now"
BECAUSE_YOU_WATCHED = "because you watched {title}"
LIST_COLUMNS = (USER_ID, RANK, ITEM_ID, SCORE, REASON)

Ids = Sequence[Hashable] | np.ndarray | pd.Index
Titles = Mapping[Hashable, str] | pd.Series
SimilarityMatrix = sp.sparray | sp.spmatrix | np.ndarray
_POSITION = "position"  # an item's column in the score matrix


def top_k_indices(matrix: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k largest values, best first; ties go to the lower column.

    Returns shape (rows, min(k, columns)). Uses argpartition, so a row costs O(columns), not a
    full sort; NaN is rejected because it has no place in an order.
    """
    require_positive_k(k)
    values = np.asarray(matrix, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"matrix must be 2-dimensional, got shape {values.shape}")
    if np.isnan(values).any():
        raise ValueError("matrix contains NaN; replace it (for example with -inf) before ranking")
    n_rows, n_columns = values.shape
    width = min(k, n_columns)
    if width < n_columns:
        kth = np.argpartition(-values, width - 1, axis=1)[:, width - 1 : width]
        threshold = np.take_along_axis(values, kth, axis=1)
        above = values > threshold
        tied = values == threshold
        # argpartition picks arbitrary members of a tie at the boundary; take the lowest columns.
        places_left = width - above.sum(axis=1, keepdims=True)
        chosen = above | (tied & (np.cumsum(tied, axis=1) <= places_left))
        candidates = np.nonzero(chosen)[1].reshape(n_rows, width)
    else:
        candidates = np.broadcast_to(np.arange(n_columns), (n_rows, n_columns))
    # Candidates are in column order, so a stable sort leaves tied values in column order.
    candidate_values = np.take_along_axis(values, candidates, axis=1)
    order = np.argsort(-candidate_values, axis=1, kind="stable")
    return np.take_along_axis(candidates, order, axis=1)


def rank_lists(
    scores: np.ndarray,
    user_ids: Ids,
    item_ids: Ids,
    histories: pd.DataFrame,
    trending: pd.Series,
    k: int,
    *,
    trending_blend: float = DEFAULT_TRENDING_BLEND,
    unavailable: Iterable[Hashable] | None = None,
    titles: Titles | None = None,
    similarity: SimilarityMatrix | None = None,
) -> pd.DataFrame:
    """Top-k lists (user_id, rank, item_id, score, reason) from a users x items score matrix.

    `histories` (user_id, item_id[, weight]) lists what each user already consumed: those items
    are never listed. `trending` maps item id to a trending score (missing items count 0). The
    score is (1 - trending_blend) x model + trending_blend x trending, both rescaled to [0, 1] over
    the user's remaining items (see `_rescale_rows`), so it lies in [0, 1] and falls with rank.
    Each user gets k items where enough remain. `similarity` (items x items, row = history item;
    a model's `similarity`) lets the reason name the history item whose weight x similarity
    contributes most; without it the reason names the user's most heavily weighted history item.
    """
    require_positive_k(k)
    require_columns(histories, (USER_ID, ITEM_ID), name="histories")
    if not 0.0 <= trending_blend <= 1.0:
        raise ValueError(f"trending_blend must lie in [0, 1], got {trending_blend!r}")
    user_index = _unique_index(user_ids, name="user_ids")
    item_index = _unique_index(item_ids, name="item_ids")
    model = np.asarray(scores, dtype=float)
    expected_shape = (len(user_index), len(item_index))
    if model.shape != expected_shape:
        raise ValueError(
            f"scores has shape {model.shape} but user_ids x item_ids is {expected_shape}"
        )
    if not np.isfinite(model).all():
        raise ValueError("scores contains NaN or infinite values; the model output is broken")
    if similarity is not None and similarity.shape != (len(item_index), len(item_index)):
        raise ValueError(
            f"similarity has shape {similarity.shape} but must be items x items "
            f"({len(item_index)} x {len(item_index)}) in item_ids order"
        )

    excluded = _consumed_mask(histories, user_index, item_index)
    if unavailable is not None:
        unavailable_columns = item_index.get_indexer(pd.Index(list(unavailable)))
        excluded[:, unavailable_columns[unavailable_columns >= 0]] = True

    trending_row = _trending_vector(trending, item_index)
    blended = (1.0 - trending_blend) * _rescale_rows(model, excluded) + trending_blend * (
        _rescale_rows(np.broadcast_to(trending_row, model.shape), excluded)
    )
    blended[excluded] = -np.inf

    top = top_k_indices(blended, k)
    top_scores = np.take_along_axis(blended, top, axis=1)
    listed = np.isfinite(top_scores)  # excluded items sort last; drop them
    user_positions = np.broadcast_to(np.arange(len(user_index))[:, None], top.shape)[listed]
    item_positions = top[listed]
    ranks = np.broadcast_to(np.arange(1, top.shape[1] + 1), top.shape)[listed]

    lists = pd.DataFrame(
        {
            USER_ID: user_index.to_numpy()[user_positions],
            RANK: ranks.astype(np.int64),
            ITEM_ID: item_index.to_numpy()[item_positions],
            SCORE: top_scores[listed],
        }
    )
    model_driven = model[user_positions, item_positions] > 0
    lists[REASON] = _reasons(
        lists, model_driven, item_positions, histories, item_index, titles, similarity
    )
    return lists.loc[:, list(LIST_COLUMNS)]


def trending_lists(
    trending: pd.Series,
    user_ids: Ids,
    k: int,
    exclude: Iterable[Hashable] | None = None,
) -> pd.DataFrame:
    """The same top-k trending list for every user (those with no history); reason "trending now".

    `trending` maps item id to a trending score; `exclude` drops items (e.g. unavailable ones).
    Scores are divided by the largest remaining one, so they lie in [0, 1]; ties keep `trending`
    order.
    """
    require_positive_k(k)
    user_index = _unique_index(user_ids, name="user_ids")
    item_index = _unique_index(trending.index, name="trending index")
    candidates = ~item_index.isin(pd.Index(list(exclude or [])))
    items = item_index[candidates]
    values = _trending_vector(trending, item_index)[candidates][None, :]
    if len(items) == 0 or len(user_index) == 0:
        return pd.DataFrame({column: [] for column in LIST_COLUMNS})
    best = top_k_indices(values, k)[0]
    list_scores = _rescale_rows(values, np.zeros(values.shape, dtype=bool))[0, best]
    n_users, width = len(user_index), len(best)
    return pd.DataFrame(
        {
            USER_ID: np.repeat(user_index.to_numpy(), width),
            RANK: np.tile(np.arange(1, width + 1, dtype=np.int64), n_users),
            ITEM_ID: np.tile(items.to_numpy()[best], n_users),
            SCORE: np.tile(list_scores, n_users),
            REASON: TRENDING_NOW,
        }
    )


def _unique_index(ids: Ids, *, name: str) -> pd.Index:
    """Ids as an Index, refusing duplicates (a duplicate would make two lists or two columns)."""
    index = pd.Index(ids)
    if index.has_duplicates:
        duplicates = index[index.duplicated()].unique()[:5].tolist()
        raise ValueError(f"{name} must be unique; repeated: {duplicates}")
    return index


def _consumed_mask(histories: pd.DataFrame, users: pd.Index, items: pd.Index) -> np.ndarray:
    """Users x items boolean matrix, True where the item is in the user's history."""
    mask = np.zeros((len(users), len(items)), dtype=bool)
    user_positions = users.get_indexer(histories[USER_ID])
    item_positions = items.get_indexer(histories[ITEM_ID])
    known = (user_positions >= 0) & (item_positions >= 0)
    mask[user_positions[known], item_positions[known]] = True
    return mask


def _trending_vector(trending: pd.Series, items: pd.Index) -> np.ndarray:
    """Trending scores aligned to items: missing items 0, negative scores clipped to 0."""
    _unique_index(trending.index, name="trending index")
    aligned = trending.reindex(items)
    return aligned.fillna(0.0).to_numpy(dtype=float).clip(min=0.0)


def _rescale_rows(values: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """Rescale each row to [0, 1] over its non-excluded entries: (value - low) / (high - low).

    high is the row's largest value and low the smaller of its smallest value and 0, so for
    non-negative scores this is value / max and a score of 0 (no evidence) stays 0 even when every
    remaining item has some evidence; a row with negative scores is min-max rescaled. A row with
    nothing above low rescales to 0.
    """
    low = np.where(excluded, np.inf, values).min(axis=1, keepdims=True, initial=0.0)
    high = np.where(excluded, -np.inf, values).max(axis=1, keepdims=True, initial=-np.inf)
    span = high - low
    shifted = np.where(excluded, 0.0, values - low)
    return np.divide(
        shifted, span, out=np.zeros(values.shape), where=np.isfinite(span) & (span > 0)
    )


def _reasons(
    lists: pd.DataFrame,
    model_driven: np.ndarray,
    item_positions: np.ndarray,
    histories: pd.DataFrame,
    item_index: pd.Index,
    titles: Titles | None,
    similarity: SimilarityMatrix | None,
) -> np.ndarray:
    """One reason per listed row: the explaining history item's title, or "trending now"."""
    explaining = np.full(len(lists), None, dtype=object)
    history = _positive_history(histories, lists[USER_ID])
    if model_driven.any() and not history.empty:
        heaviest = history.sort_values(WEIGHT, ascending=False, kind="stable").drop_duplicates(
            USER_ID
        )
        heaviest_item = pd.Series(heaviest[ITEM_ID].to_numpy(), index=heaviest[USER_ID].to_numpy())
        rows = np.flatnonzero(model_driven)
        explaining[rows] = heaviest_item.reindex(lists[USER_ID].to_numpy()[rows]).to_numpy()
        if similarity is not None:
            _explain_by_contribution(
                explaining, lists, rows, item_positions, history, item_index, similarity
            )
    title_of = titles if titles is not None else {}
    return np.array(
        [
            TRENDING_NOW
            if _is_missing(item)
            else BECAUSE_YOU_WATCHED.format(title=_title(item, title_of))
            for item in explaining
        ],
        dtype=object,
    )


def _explain_by_contribution(
    explaining: np.ndarray,
    lists: pd.DataFrame,
    rows: np.ndarray,
    item_positions: np.ndarray,
    history: pd.DataFrame,
    item_index: pd.Index,
    similarity: SimilarityMatrix,
) -> None:
    """Set each row's explaining item to the history item with the largest weight x similarity."""
    matrix = sp.csr_array(similarity) if sp.issparse(similarity) else np.asarray(similarity)
    history = history.assign(**{_POSITION: item_index.get_indexer(history[ITEM_ID])})
    history = history.loc[history[_POSITION] >= 0]
    rows_by_user = pd.Series(rows).groupby(lists[USER_ID].to_numpy()[rows], sort=False)
    for user, user_history in history.groupby(USER_ID, sort=False):
        if user not in rows_by_user.groups:
            continue
        user_rows = rows_by_user.get_group(user).to_numpy()
        sources = user_history[_POSITION].to_numpy()
        block = matrix[sources][:, item_positions[user_rows]]
        block = block.toarray() if sp.issparse(block) else block
        contributions = user_history[WEIGHT].to_numpy()[:, None] * block
        best = contributions.argmax(axis=0)  # ties go to the earlier history row
        has_source = contributions.max(axis=0) > 0
        explaining[user_rows[has_source]] = user_history[ITEM_ID].to_numpy()[best[has_source]]


def _positive_history(histories: pd.DataFrame, listed_users: pd.Series) -> pd.DataFrame:
    """user_id, item_id, weight (summed per pair, positive only) of users that have lists."""
    listed = histories[USER_ID].isin(pd.unique(listed_users)).to_numpy()
    frame = histories.loc[listed, [USER_ID, ITEM_ID]].assign(
        **{WEIGHT: histories.loc[listed, WEIGHT] if WEIGHT in histories.columns else 1.0}
    )
    frame = frame.groupby([USER_ID, ITEM_ID], sort=False, as_index=False)[WEIGHT].sum()
    return frame.loc[frame[WEIGHT] > 0].reset_index(drop=True)


def _title(item: Hashable, titles: Titles | Mapping[Hashable, str]) -> str:
    """The item's title, or its id when it has no usable title."""
    title = titles.get(item)
    return str(item) if _is_missing(title) or str(title).strip() == "" else str(title)


def _is_missing(value: object) -> bool:
    """True for None and NaN-like values."""
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))
