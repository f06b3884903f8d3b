"""Checks on the DataFrames that ml/ functions take, so a wrong frame fails with a clear message."""

from __future__ import annotations

import numbers
from collections.abc import Iterable

import pandas as pd


def require_columns(frame: pd.DataFrame, columns: Iterable[str], *, name: str) -> None:
    """Raise ValueError naming the frame and the columns it lacks, if any are missing."""
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(
            f"{name} is missing column(s) {missing}; it has {list(frame.columns)}. "
            f"Rename or add the column(s) before calling this function."
        )


def require_positive_k(k: int) -> None:
    """Raise ValueError unless k is a positive integer (the length of a top-K list)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
