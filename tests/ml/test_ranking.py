from __future__ import annotations

import numpy as np
import pytest

from ml.ranking import top_k_indices


def test_top_k_indices_orders_best_first_and_breaks_ties_by_column() -> None:
    matrix = np.array([[1.0, 3.0, 3.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0], [5, 4, 3, 2, 1]])
    np.testing.assert_array_equal(top_k_indices(matrix, 2), [[1, 2], [0, 1], [0, 1]])
    np.testing.assert_array_equal(
        top_k_indices(matrix, 9), [[1, 2, 3, 0, 4], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]
    )
    with_excluded = np.array([[-np.inf, 1.0, -np.inf]])
    np.testing.assert_array_equal(top_k_indices(with_excluded, 2), [[1, 0]])


def test_top_k_indices_ties_scores_that_differ_only_by_float_noise() -> None:
    noisy = 0.1 + 0.2 + 0.3  # 0.6000000000000001: 0.6 added up in another order
    matrix = np.array([[0.5, 0.6, noisy], [0.5, noisy, 0.6]])
    np.testing.assert_array_equal(top_k_indices(matrix, 1), [[1], [1]])
    np.testing.assert_array_equal(top_k_indices(matrix, 3), [[1, 2, 0], [1, 2, 0]])


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
