"""How every recommender is evaluated: one temporal protocol, full ranking, results by segment.

Models learn from everything before a global cutoff. For each user active after it, the system
knows their events before the cutoff plus the first part of their events after it (what a
refreshing system has seen by the time it scores them); the rest of their post-cutoff items are
the truth. Users with nothing before the cutoff are `new_user`s: a batch system knows nothing of
them, a refreshing one knows their first events. Truth items nobody touched before the cutoff are
`new_item` targets. Ranking is over the whole catalog with the user's known items removed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml.constants import (
    DEFAULT_TOP_K,
    ITEM_ID,
    NEW_USER,
    OCCURRED_AT,
    RETURNING_USER,
    SEGMENT,
    USER_ID,
    WEIGHT,
)
from ml.evaluation.metrics import list_metrics

OVERALL = "overall"
NEW_ITEM_TARGETS = "new_item_targets"
SEGMENTS = (OVERALL, NEW_USER, RETURNING_USER, NEW_ITEM_TARGETS)
DEFAULT_REVEAL_FRACTION = 0.5


@dataclass
class EvaluationTask:
    """What is known at scoring time, what users did next, and who is in which segment."""

    histories: pd.DataFrame  # user_id, item_id, weight, occurred_at: known when scoring
    truth: pd.DataFrame  # user_id, item_id: what each evaluated user did next
    segments: pd.DataFrame  # user_id, segment (new_user / returning_user)
    new_items: frozenset[str]  # items with no interaction before the cutoff

    @property
    def users(self) -> np.ndarray:
        return np.sort(self.truth[USER_ID].unique())


def build_task(
    train: pd.DataFrame, holdout: pd.DataFrame, reveal_fraction: float = DEFAULT_REVEAL_FRACTION
) -> EvaluationTask:
    """Split each holdout user's events in time order: the first ``reveal_fraction`` are known.

    A user with n holdout events reveals floor(n * reveal_fraction) of them (so a user with one
    event is scored cold). Truth items the user already has in their known history are dropped:
    they are excluded from the ranking anyway.
    """
    if not 0.0 <= reveal_fraction < 1.0:
        raise ValueError(f"reveal_fraction must lie in [0, 1), got {reveal_fraction!r}")
    positive_train = train[train[WEIGHT] > 0] if WEIGHT in train else train
    ordered = holdout.sort_values([USER_ID, OCCURRED_AT, ITEM_ID], kind="stable")
    if WEIGHT in ordered:
        ordered = ordered[ordered[WEIGHT] > 0]
    position = ordered.groupby(USER_ID).cumcount()
    size = ordered.groupby(USER_ID)[ITEM_ID].transform("size")
    revealed_mask = position < np.floor(size * reveal_fraction)
    revealed, targets = ordered[revealed_mask], ordered[~revealed_mask]
    evaluated_users = targets[USER_ID].unique()
    history_columns = [c for c in (USER_ID, ITEM_ID, WEIGHT, OCCURRED_AT) if c in ordered]
    histories = pd.concat(
        [
            positive_train[positive_train[USER_ID].isin(evaluated_users)][history_columns],
            revealed[history_columns],
        ],
        ignore_index=True,
    )
    known = histories[[USER_ID, ITEM_ID]].drop_duplicates()
    truth = targets[[USER_ID, ITEM_ID]].drop_duplicates()
    truth = truth.merge(known, on=[USER_ID, ITEM_ID], how="left", indicator=True)
    truth = truth[truth["_merge"] == "left_only"].drop(columns="_merge").reset_index(drop=True)
    train_users = set(positive_train[USER_ID])
    users = truth[USER_ID].unique()
    segments = pd.DataFrame(
        {USER_ID: users, SEGMENT: [RETURNING_USER if u in train_users else NEW_USER for u in users]}
    )
    new_items = frozenset(set(holdout[ITEM_ID]) - set(positive_train[ITEM_ID]))
    return EvaluationTask(
        histories=histories[histories[USER_ID].isin(users)].reset_index(drop=True),
        truth=truth,
        segments=segments,
        new_items=new_items,
    )


def sample_users(task: EvaluationTask, max_users: int) -> EvaluationTask:
    """The task for at most ``max_users`` of its users, chosen by a hash of the user id.

    A backtest's cost grows with the users it ranks, its confidence interval barely improves
    after a few thousand; a hash picks the same users on every run and machine whatever their
    order, and is blind to what they did (no bias toward heavy or light users).
    """
    if max_users < 1:
        raise ValueError(f"max_users must be at least 1; got {max_users}")
    users = task.users
    if len(users) <= max_users:
        return task
    hashes = pd.util.hash_array(users.astype(str).astype(object))
    chosen = users[np.argsort(hashes, kind="stable")[:max_users]]

    def keep(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame[USER_ID].isin(chosen)].reset_index(drop=True)

    return EvaluationTask(
        histories=keep(task.histories),
        truth=keep(task.truth),
        segments=keep(task.segments),
        new_items=task.new_items,
    )


def segment_metrics(
    recommendations: pd.DataFrame,
    task: EvaluationTask,
    k: int = DEFAULT_TOP_K,
    *,
    catalog_size: int,
    item_popularity: pd.Series,
    item_vectors: Mapping | pd.Series | None = None,
) -> pd.DataFrame:
    """One row per segment with NDCG, Recall, HitRate, MRR, coverage, novelty and diversity."""
    rows = []
    for segment in SEGMENTS:
        if segment == NEW_ITEM_TARGETS:
            truth = task.truth[task.truth[ITEM_ID].isin(task.new_items)]
        elif segment == OVERALL:
            truth = task.truth
        else:
            users = task.segments.loc[task.segments[SEGMENT] == segment, USER_ID]
            truth = task.truth[task.truth[USER_ID].isin(users)]
        listed = recommendations[recommendations[USER_ID].isin(truth[USER_ID])]
        row: dict[str, object] = {"segment": segment, "users": int(truth[USER_ID].nunique())}
        if truth.empty:
            rows.append(row)
            continue
        row.update(
            list_metrics(
                listed,
                truth,
                k,
                catalog_size=catalog_size,
                item_popularity=item_popularity,
                item_vectors=item_vectors,
            )
        )
        rows.append(row)
    return pd.DataFrame(rows)
