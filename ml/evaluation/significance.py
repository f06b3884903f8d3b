"""How sure is a difference between two models on the same users? A paired bootstrap.

A temporal holdout of a small catalogue holds few users (the packaged sample: about 80), so two
models' mean NDCG can differ by a hundredth by chance alone. Resampling the users (with
replacement, both models' values of a user kept together) gives an interval for the difference
in means, and the share of resamples in which the first model comes out ahead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Difference:
    """first - second: the mean over users, its bootstrap interval, and P(first ahead)."""

    mean: float
    low: float
    high: float
    share_ahead: float  # share of resamples with a positive difference; in [0, 1]
    users: int


def paired_bootstrap(
    first: pd.Series,
    second: pd.Series,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Difference:
    """The difference first - second of per-user values (indexed by user; a user missing from
    one side counts 0 there), with a percentile interval at ``confidence``."""
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    users = first.index.union(second.index)
    if len(users) == 0:
        raise ValueError("no users to compare")
    gaps = (first.reindex(users, fill_value=0.0) - second.reindex(users, fill_value=0.0)).to_numpy(
        dtype=float
    )
    generator = np.random.default_rng(seed)
    picks = generator.integers(0, len(gaps), size=(resamples, len(gaps)))
    means = gaps[picks].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Difference(
        mean=float(gaps.mean()),
        low=float(low),
        high=float(high),
        share_ahead=float((means > 0).mean()),
        users=len(gaps),
    )
