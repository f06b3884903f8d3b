"""Temporal holdout helpers: one global time cutoff, user segments and cold-start item targets."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml.constants import ITEM_ID, NEW_USER, OCCURRED_AT, RETURNING_USER, SEGMENT, USER_ID
from ml.frames import require_columns


def temporal_split(
    interactions: pd.DataFrame, validation_fraction: float
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]:
    """Split at one global event-time cutoff into (train, test, cutoff).

    The cutoff is the (1 - validation_fraction) quantile of `occurred_at`, taken as an actual event
    time; test holds every row at or after it, train every row before it. A single global cutoff
    (rather than a per-user leave-last-out) keeps the future out of training for every user.
    """
    require_columns(interactions, (OCCURRED_AT,), name="interactions")
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(
            f"validation_fraction must lie strictly between 0 and 1, got {validation_fraction!r}"
        )
    if interactions.empty:
        raise ValueError("interactions is empty: there is nothing to split")
    times = interactions[OCCURRED_AT]
    if not pd.api.types.is_datetime64_any_dtype(times):
        raise ValueError(
            f"interactions column {OCCURRED_AT!r} must hold datetimes, got dtype {times.dtype}; "
            "parse it with pandas.to_datetime first"
        )
    if times.isna().any():
        raise ValueError(
            f"interactions column {OCCURRED_AT!r} has {int(times.isna().sum())} missing time(s); "
            "drop or repair those rows before splitting"
        )
    cutoff = pd.Timestamp(times.quantile(1.0 - validation_fraction, interpolation="higher"))
    in_test = (times >= cutoff).to_numpy()
    if in_test.all():
        raise ValueError(
            f"every interaction happens at or after the cutoff {cutoff}: no training rows are "
            "left; use a smaller validation_fraction or data that spans more time"
        )
    train = interactions.loc[~in_test].reset_index(drop=True)
    test = interactions.loc[in_test].reset_index(drop=True)
    return train, test, cutoff


def segment_users(train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """One row per test user (in order of first appearance): user_id and segment.

    The segment is `returning_user` when the user has any training row, else `new_user`.
    """
    require_columns(train, (USER_ID,), name="train")
    require_columns(test, (USER_ID,), name="test")
    users = pd.unique(test[USER_ID])
    returning = pd.Index(users).isin(pd.unique(train[USER_ID]))
    return pd.DataFrame({USER_ID: users, SEGMENT: np.where(returning, RETURNING_USER, NEW_USER)})


def new_item_targets(train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """The test rows whose item never appears in train (the item cold-start targets)."""
    require_columns(train, (ITEM_ID,), name="train")
    require_columns(test, (ITEM_ID,), name="test")
    is_new = ~test[ITEM_ID].isin(pd.unique(train[ITEM_ID]))
    return test.loc[is_new].reset_index(drop=True)
