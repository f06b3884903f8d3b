"""Top-k selection over score matrices (rows ranked in blocks, ties to the lower column).

The ranking pipeline itself lives in ml.pipeline; this is the one matrix primitive it and the
rules share.
"""

from __future__ import annotations

import numpy as np

from ml.frames import require_positive_k

TRENDING_NOW = "trending now"
_BLOCK_ROWS = 512  # rows ranked at once
# Scores are compared after rounding to this many decimal places, so near-equal scores tie and
# the tie goes to the lower column (item). Float noise (another engine's or worker's order of
# additions, another BLAS) is about 1e-15; the smallest real difference between candidates is
# far above 1e-12.
SCORE_DECIMALS = 12


def comparable_scores(scores: np.ndarray) -> np.ndarray:
    """``scores`` rounded to SCORE_DECIMALS: what an order compares, so noise cannot reorder it."""
    return np.round(np.asarray(scores, dtype=float), SCORE_DECIMALS)


def top_k_indices(matrix: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k largest values, best first; ties (values equal to
    SCORE_DECIMALS places) go to the lower column.

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
        top[start : start + _BLOCK_ROWS] = _top_k_block(comparable_scores(block), width)
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
