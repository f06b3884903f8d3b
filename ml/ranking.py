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
_USER_POSITION = "user_position"  # a user's row in the score matrix
_BLOCK_ROWS = 512  # rows ranked at once


def top_k_indices(matrix: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k largest values, best first; ties go to the lower column.

    Returns shape (rows, min(k, columns)). Uses argpartition, so a row costs O(columns), not a
    full sort, and works through the rows in blocks to keep temporaries small; NaN is rejected
    because it has no place in an order.
    """
    require_positive_k(k)
    values = np.asarray(matrix)
    if values.ndim != 2:
        raise ValueError(f"matrix must be 2-dimensional, got shape {values.shape}")
    width = min(k, values.shape[1])
    top = np.empty((values.shape[0], width), dtype=np.intp)
    for start in range(0, values.shape[0], _BLOCK_ROWS):
        block = np.asarray(values[start : start + _BLOCK_ROWS], dtype=float)
        if np.isnan(block).any():
            raise ValueError("matrix contains NaN; replace it (for example with -inf) first")
        top[start : start + _BLOCK_ROWS] = _top_k_block(block, width)
    return top


def top_k_with_new_items(
    matrix: np.ndarray, k: int, is_new: np.ndarray | None, slots: int = 0
) -> np.ndarray:
    """top_k_indices, except that each row's best ``slots`` new items are sure of a place.

    ``is_new`` flags the columns of items nobody has interacted with yet. Where a row's top k
    holds fewer than ``slots`` of them, its lowest-ranked established items give way to the
    best new items left (finite values only), which take the last places in their own order:
    the list stays ordered by value, and a new item reachable only through its text is shown
    to the users it suits best instead of never. With ``slots`` 0 this is top_k_indices.
    """
    top = top_k_indices(matrix, k)
    if not slots or is_new is None or not np.any(is_new):
        return top
    if slots < 0:
        raise ValueError(f"slots must be 0 or more, got {slots!r}")
    values = np.asarray(matrix, dtype=float)
    is_new = np.asarray(is_new, dtype=bool)
    width = top.shape[1]
    listed_values = np.take_along_axis(values, top, axis=1)
    listed_new = is_new[top] & np.isfinite(listed_values)
    short = np.flatnonzero(listed_new.sum(axis=1) < min(slots, width))
    for row in short:
        candidates = np.where(is_new, values[row], -np.inf)
        candidates[top[row]] = -np.inf
        best_new = [
            column
            for column in top_k_indices(candidates[None, :], slots)[0]
            if np.isfinite(candidates[column])
        ][: slots - int(listed_new[row].sum())]
        established = np.flatnonzero(~listed_new[row])
        best_new = best_new[: len(established)]
        if not best_new:
            continue
        dropped = set(established[::-1][: len(best_new)].tolist())
        kept = [column for place, column in enumerate(top[row]) if place not in dropped]
        top[row] = np.asarray(kept + best_new, dtype=np.intp)
    return top


def _top_k_block(values: np.ndarray, width: int) -> np.ndarray:
    """top_k_indices for one block of rows, width <= columns."""
    n_rows, n_columns = values.shape
    if width < n_columns:
        # The entry at position n - width of an ascending partition is each row's width-th largest.
        kth = np.argpartition(values, n_columns - width, axis=1)[:, n_columns - width]
        threshold = values[np.arange(n_rows), kth][:, None]
        above = values > threshold
        tied = values == threshold
        places_left = width - above.sum(axis=1)
        chosen = above | tied
        # Where more values tie at the threshold than places are left, argpartition's pick among
        # them is arbitrary: keep the lowest columns instead (only those rows pay for the scan).
        surplus = np.flatnonzero(tied.sum(axis=1) > places_left)
        if len(surplus):
            first_ties = np.cumsum(tied[surplus], axis=1, dtype=np.int32)
            first_ties = first_ties <= places_left[surplus, None]
            chosen[surplus] = above[surplus] | (tied[surplus] & first_ties)
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
    multipliers: np.ndarray | None = None,
    excluded: np.ndarray | None = None,
    is_new: np.ndarray | None = None,
    new_item_slots: int = 0,
) -> pd.DataFrame:
    """Top-k lists (user_id, rank, item_id, score, reason) from a users x items score matrix.

    `multipliers` (users x items, e.g. feedback demotions from `ml.rules`) scale the blended
    score; `excluded` (users x items, bool) removes items on top of the consumed ones. With
    `new_item_slots`, each list keeps that many of its last places for the best items flagged in
    `is_new` (aligned to item_ids) that are not excluded: see top_k_with_new_items.

    `histories` (user_id, item_id[, weight]) lists what each user already consumed: those items
    are never listed. `trending` maps item id to a trending score (missing items count 0). The
    score is (1 - trending_blend) x model + trending_blend x trending, both rescaled to [0, 1] over
    the user's remaining items (as the module docstring says), so it lies in [0, 1] and falls
    with rank. Each user gets k items where enough remain. `similarity` (items x items, row =
    history item; a model's `similarity`) lets the reason name the history item whose weight x
    similarity contributes most; without it the reason names the user's most heavily weighted
    history item. Users are ranked in blocks, so memory beyond `scores` stays small.
    """
    require_positive_k(k)
    require_columns(histories, (USER_ID, ITEM_ID), name="histories")
    if not 0.0 <= trending_blend <= 1.0:
        raise ValueError(f"trending_blend must lie in [0, 1], got {trending_blend!r}")
    user_index = _unique_index(user_ids, name="user_ids")
    item_index = _unique_index(item_ids, name="item_ids")
    model = np.asarray(scores)
    expected_shape = (len(user_index), len(item_index))
    if model.shape != expected_shape:
        raise ValueError(
            f"scores has shape {model.shape} but user_ids x item_ids is {expected_shape}"
        )
    if similarity is not None and similarity.shape != (len(item_index), len(item_index)):
        raise ValueError(
            f"similarity has shape {similarity.shape} but must be items x items "
            f"({len(item_index)} x {len(item_index)}) in item_ids order"
        )

    consumed_users, consumed_items = _consumed_pairs(histories, user_index, item_index)
    unavailable_columns = item_index.get_indexer(pd.Index(list(unavailable or [])))
    unavailable_columns = unavailable_columns[unavailable_columns >= 0]
    trending_row = _trending_vector(trending, item_index)
    user_parts, item_parts, rank_parts, score_parts = [], [], [], []
    # Blocks of users keep every temporary a few megabytes, whatever the number of users.
    for start in range(0, len(user_index), _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, len(user_index))
        block = np.asarray(model[start:stop], dtype=float)
        if not np.isfinite(block).all():
            raise ValueError("scores contains NaN or infinite values; the model output is broken")
        block_excluded = np.zeros(block.shape, dtype=bool)
        first, last = np.searchsorted(consumed_users, [start, stop])
        block_excluded[consumed_users[first:last] - start, consumed_items[first:last]] = True
        block_excluded[:, unavailable_columns] = True
        if excluded is not None:
            block_excluded |= np.asarray(excluded[start:stop], dtype=bool)
        blended = _blend(block, trending_row, block_excluded, trending_blend)
        if multipliers is not None:
            blended = np.where(block_excluded, -np.inf, blended * multipliers[start:stop])
        top = top_k_with_new_items(blended, k, is_new, new_item_slots)
        top_scores = np.take_along_axis(blended, top, axis=1)
        rows, places = np.nonzero(np.isfinite(top_scores))  # excluded items sort last: drop them
        user_parts.append(rows + start)
        item_parts.append(top[rows, places])
        rank_parts.append(places + 1)
        score_parts.append(top_scores[rows, places])

    user_positions = np.concatenate(user_parts or [np.zeros(0, dtype=np.intp)])
    item_positions = np.concatenate(item_parts or [np.zeros(0, dtype=np.intp)])
    lists = pd.DataFrame(
        {
            USER_ID: user_index.to_numpy()[user_positions],
            RANK: np.concatenate(rank_parts or [np.zeros(0)]).astype(np.int64),
            ITEM_ID: item_index.to_numpy()[item_positions],
            SCORE: np.concatenate(score_parts or [np.zeros(0)]),
        }
    )
    model_driven = model[user_positions, item_positions] > 0
    explaining = _explaining_items(
        user_positions, item_positions, model_driven, histories, user_index, item_index, similarity
    )
    lists[REASON] = _reasons(explaining, titles)
    return lists


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


def _consumed_pairs(
    histories: pd.DataFrame, users: pd.Index, items: pd.Index
) -> tuple[np.ndarray, np.ndarray]:
    """(user positions, item positions) of history rows whose user and item are known, by user."""
    user_positions = users.get_indexer(histories[USER_ID])
    item_positions = items.get_indexer(histories[ITEM_ID])
    known = (user_positions >= 0) & (item_positions >= 0)
    order = np.argsort(user_positions[known], kind="stable")
    return user_positions[known][order], item_positions[known][order]


def _trending_vector(trending: pd.Series, items: pd.Index) -> np.ndarray:
    """Trending scores aligned to items: missing items 0, negative scores clipped to 0."""
    _unique_index(trending.index, name="trending index")
    aligned = trending.reindex(items)
    return aligned.fillna(0.0).to_numpy(dtype=float).clip(min=0.0)


def _blend(
    model: np.ndarray, trending_row: np.ndarray, excluded: np.ndarray, trending_blend: float
) -> np.ndarray:
    """(1 - trending_blend) x rescaled model + trending_blend x rescaled trending; -inf excluded."""
    blended = _rescale_rows(model, excluded)
    blended *= 1.0 - trending_blend
    if trending_blend > 0:
        trending_part = _rescale_rows(np.broadcast_to(trending_row, model.shape), excluded)
        trending_part *= trending_blend
        blended += trending_part
    blended[excluded] = -np.inf
    return blended


def _rescale_rows(values: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """Rescale each row to [0, 1] over its non-excluded entries: (value - low) / (high - low).

    high is the row's largest value and low the smaller of its smallest value and 0, so for
    non-negative scores this is value / max and a score of 0 (no evidence) stays 0 even when every
    remaining item has some evidence; a row with negative scores is min-max rescaled. A row with
    nothing above low rescales to 0. Excluded entries come back finite but meaningless.
    """
    allowed = ~excluded
    high = np.max(values, axis=1, where=allowed, initial=-np.inf)
    low = np.minimum(np.min(values, axis=1, where=allowed, initial=np.inf), 0.0)
    span = high - low
    usable = np.isfinite(span) & (span > 0)
    rescaled = values - np.where(usable, low, 0.0)[:, None]
    rescaled *= np.divide(1.0, span, out=np.zeros_like(span), where=usable)[:, None]
    return rescaled


def _explaining_items(
    user_positions: np.ndarray,
    item_positions: np.ndarray,
    model_driven: np.ndarray,
    histories: pd.DataFrame,
    user_index: pd.Index,
    item_index: pd.Index,
    similarity: SimilarityMatrix | None,
) -> np.ndarray:
    """Per listed row, the history item that explains it (None: nothing does, so trending)."""
    explaining = np.full(len(user_positions), None, dtype=object)
    history = _positive_history(histories, user_index)
    rows = np.flatnonzero(model_driven)
    if len(rows) == 0 or history.empty:
        return explaining
    heaviest = history.sort_values(WEIGHT, ascending=False, kind="stable").drop_duplicates(
        _USER_POSITION
    )
    heaviest_item = np.full(len(user_index), None, dtype=object)
    heaviest_item[heaviest[_USER_POSITION].to_numpy()] = heaviest[ITEM_ID].to_numpy()
    explaining[rows] = heaviest_item[user_positions[rows]]
    if similarity is not None:
        _explain_by_contribution(
            explaining, rows, user_positions, item_positions, history, item_index, similarity
        )
    return explaining


def _explain_by_contribution(
    explaining: np.ndarray,
    rows: np.ndarray,
    user_positions: np.ndarray,
    item_positions: np.ndarray,
    history: pd.DataFrame,
    item_index: pd.Index,
    similarity: SimilarityMatrix,
) -> None:
    """Set each row's explaining item to the history item with the largest weight x similarity.

    Pairs every listed row with each history item of its user (ties go to the earlier history
    item) and keeps rows with no positive contribution as they were.
    """
    sources = item_index.get_indexer(history[ITEM_ID])
    known = sources >= 0
    by_user = np.argsort(history[_USER_POSITION].to_numpy()[known], kind="stable")
    history_users = history[_USER_POSITION].to_numpy()[known][by_user]
    history_sources = sources[known][by_user]
    history_weights = history[WEIGHT].to_numpy(dtype=float)[known][by_user]
    history_items = history[ITEM_ID].to_numpy()[known][by_user]

    row_users = user_positions[rows]
    starts = np.searchsorted(history_users, row_users, side="left")
    counts = np.searchsorted(history_users, row_users, side="right") - starts
    pair_rows = np.repeat(rows, counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    pair_history = np.repeat(starts, counts) + offsets
    contributions = history_weights[pair_history] * _lookup(
        similarity, history_sources[pair_history], item_positions[pair_rows]
    )
    positive = contributions > 0
    pair_rows, pair_history = pair_rows[positive], pair_history[positive]
    order = np.lexsort((pair_history, -contributions[positive], pair_rows))
    _, first_of_row = np.unique(pair_rows[order], return_index=True)
    best = order[first_of_row]
    explaining[pair_rows[best]] = history_items[pair_history[best]]


def _lookup(similarity: SimilarityMatrix, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """similarity[rows[i], columns[i]] for every i, dense or sparse (absent entries are 0)."""
    if not sp.issparse(similarity):
        return np.asarray(similarity, dtype=float)[rows, columns]
    matrix = sp.csr_array(similarity)
    if not matrix.has_canonical_format:
        matrix = matrix.copy()
        matrix.sum_duplicates()
    if matrix.nnz == 0:
        return np.zeros(len(rows))
    # Canonical CSR stores entries sorted by (row, column), so row x width + column is sorted.
    width = np.int64(matrix.shape[1])
    stored_rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    stored_keys = stored_rows * width + matrix.indices
    wanted_keys = rows.astype(np.int64) * width + columns
    found = np.minimum(np.searchsorted(stored_keys, wanted_keys), matrix.nnz - 1)
    return np.where(stored_keys[found] == wanted_keys, matrix.data[found], 0.0)


def _positive_history(histories: pd.DataFrame, user_index: pd.Index) -> pd.DataFrame:
    """User position, item_id and weight (summed per pair, positive only) of listed users.

    Rows keep the order of each pair's first appearance in `histories`.
    """
    positions = user_index.get_indexer(histories[USER_ID])
    weights = (
        histories[WEIGHT].to_numpy(dtype=float)
        if WEIGHT in histories.columns
        else np.ones(len(histories))
    )
    frame = pd.DataFrame(
        {_USER_POSITION: positions, ITEM_ID: histories[ITEM_ID].to_numpy(), WEIGHT: weights}
    )
    frame = frame.loc[positions >= 0]
    frame = frame.groupby([_USER_POSITION, ITEM_ID], sort=False, as_index=False)[WEIGHT].sum()
    return frame.loc[frame[WEIGHT] > 0].reset_index(drop=True)


def _reasons(explaining: np.ndarray, titles: Titles | None) -> np.ndarray:
    """The reason text of each row: its explaining item's title (or id), else trending now."""
    title_of = dict(titles.items()) if titles is not None else {}
    return np.array(
        [
            TRENDING_NOW
            if _is_missing(item)
            else BECAUSE_YOU_WATCHED.format(title=_title(item, title_of))
            for item in explaining
        ],
        dtype=object,
    )


def _title(item: Hashable, titles: Mapping[Hashable, str]) -> str:
    """The item's title, or its id when it has no usable title."""
    title = titles.get(item)
    return str(item) if _is_missing(title) or str(title).strip() == "" else str(title)


def _is_missing(value: object) -> bool:
    """True for None and NaN-like values."""
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))
