"""Features of (user, candidate item) pairs: what every source thinks, the item, the user, context.

One frame per block of users, one row per candidate: each source's score and its rank among the
user's candidates, item popularity per window and its trend, item age, cosine similarity of the
item's text vector to the user's recent items (query, mean and max), the user's activity and
time since their last event, and how popular the item is in the user's current context.

The ranker trains on cuts years apart and ranks at the newest one, so what it learns from must
mean the same at every cut: an item's popularity enters as its share of its window's events,
not as a count that grows with the log's traffic, and co-visitation also as a share of the
user's strongest candidate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml.constants import CONTEXT, ITEM_ID, OCCURRED_AT, USER_ID, WEIGHT
from ml.pipeline.snapshot import Behaviour, Snapshot
from ml.pipeline.sources import run_starts

RANKED_SOURCE_COLUMNS = (
    "covisitation",
    "covisitation_365d",
    "covisitation_all",
    "covisitation_last",
    "text",
    "item_knn",
    "ease",
    "sequential",
)
USER_SHARE_COLUMNS = ("covisitation", "covisitation_365d", "covisitation_all", "covisitation_last")
IDENTITY_COLUMNS = (USER_ID, ITEM_ID)
SHARE_SUFFIX = "_share"
USER_SHARE_SUFFIX = "_user_share"


Columns = dict[str, np.ndarray]  # a candidate frame's columns, in the frame's order


def ranks_within(values: np.ndarray, users: np.ndarray) -> np.ndarray:
    """Each row's rank (1 = highest value) among its user's rows (``users``: an integer a
    user); equal values rank in row order."""
    order = np.lexsort((np.arange(len(values)), -values, users))
    starts = run_starts(users[order])
    place = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    ranks = np.empty(len(values))
    ranks[order] = place + 1.0
    return ranks


def source_ranks(
    frame: Columns | pd.DataFrame, columns: tuple[str, ...], users: np.ndarray
) -> Columns:
    """`<column>_rank` of each column present: 1 for the user's (``users``: an integer a user) best
    candidate by that column, ties in frame order; NaN without a score."""
    ranks = {}
    for column in columns:
        if column not in frame:
            continue
        values = np.asarray(frame[column], dtype=float)
        scored = np.flatnonzero(values > 0)
        rank = np.full(len(values), np.nan)
        rank[scored] = ranks_within(values[scored], users[scored])
        ranks[f"{column}_rank"] = rank
    return ranks


def popularity_shares(frame: Columns | pd.DataFrame, totals: pd.Series) -> Columns:
    """`<column>_share`: each popularity column as a share of its window's total (0 for an
    empty window). A count doubles when traffic doubles; a share means the same at every cut."""
    shares = {}
    for column, total in totals.items():
        if column in frame:
            values = np.asarray(frame[column], dtype=float)
            shares[f"{column}{SHARE_SUFFIX}"] = (
                values / total if total > 0 else np.zeros(len(values))
            )
    return shares


def user_shares(
    frame: Columns | pd.DataFrame, columns: tuple[str, ...], users: np.ndarray
) -> Columns:
    """`<column>_user_share`: the score over the user's best candidate's (1 for the best, 0
    without a score): how strong a signal is for this user, whatever the log's size."""
    shares = {}
    for column in columns:
        if column not in frame:
            continue
        values = np.asarray(frame[column], dtype=float)
        best = np.zeros(int(users.max()) + 1 if len(users) else 0)
        np.maximum.at(best, users, values)
        best = best[users]
        shares[f"{column}{USER_SHARE_SUFFIX}"] = np.divide(
            values, best, out=np.zeros(len(values)), where=best > 0
        )
    return shares


def item_features(snapshot: Snapshot, items: pd.Series) -> pd.DataFrame:
    """Age in days since an item's first positive event (or created_at), and whether it is new."""
    first_seen = snapshot.first_seen
    first = first_seen.reindex(items.to_numpy())
    if snapshot.created is not None:
        first = first.fillna(snapshot.created.reindex(items.to_numpy()))
    age_days = (snapshot.as_of - first) / pd.Timedelta(days=1)
    return pd.DataFrame(
        {
            "item_age_days": age_days.to_numpy(dtype=float),
            "item_is_new": (~items.isin(first_seen.index)).to_numpy(dtype=float),
        }
    )


def user_features(behaviour: Behaviour, as_of: pd.Timestamp) -> pd.DataFrame:
    """Per user: events, distinct items, mean weight, days since the last event (0 when newer
    than as_of) and the days their history spans (short for someone new)."""
    events = behaviour.events
    grouped = events.groupby(USER_ID)
    last = grouped[OCCURRED_AT].max()
    first = grouped[OCCURRED_AT].min()
    frame = pd.DataFrame(
        {
            "user_events": grouped.size(),
            "user_items": grouped[ITEM_ID].nunique(),
            "user_mean_weight": grouped[WEIGHT].mean(),
            "user_days_since_last": ((as_of - last) / pd.Timedelta(days=1)).clip(lower=0.0),
            "user_span_days": (last - first) / pd.Timedelta(days=1),
        }
    )
    return frame.reindex(behaviour.users)


def user_contexts(behaviour: Behaviour, context_key: str) -> pd.Series:
    """Each user's current context value (their latest event's), None when it has none."""
    from ml.rules import context_value

    events = behaviour.events
    if events.empty:
        return pd.Series(dtype=object)
    latest = events.sort_values(OCCURRED_AT, kind="stable").drop_duplicates(USER_ID, keep="last")
    values = [
        context_value(context, occurred_at, context_key)
        for context, occurred_at in zip(latest[CONTEXT], latest[OCCURRED_AT], strict=True)
    ]
    return pd.Series(values, index=latest[USER_ID].to_numpy(), dtype=object)


def context_popularity(
    pairs: pd.DataFrame, contexts: pd.Series, by_context: dict[str, pd.Series]
) -> np.ndarray:
    """The item's share of its context's popularity in the user's current context (0 if none)."""
    values = np.zeros(len(pairs))
    if not by_context or contexts.empty:
        return values
    # Each row's context as an integer code: one text comparison per row, not one per value.
    codes, seen = pd.factorize(contexts.reindex(pairs[USER_ID].to_numpy()).to_numpy())
    # Items as integer codes too: each context looks up its distinct items, not every row.
    item_codes, items = pd.factorize(pairs[ITEM_ID].to_numpy())
    for code, value in enumerate(seen):
        scores = by_context.get(value)
        if scores is None:
            continue
        mine = np.flatnonzero(codes == code)
        local, asked = pd.factorize(item_codes[mine])
        positions = scores.index.get_indexer(items[asked])[local]
        found = positions >= 0
        values[mine[found]] = scores.to_numpy()[positions[found]]
    return values


def trend_features(frame: Columns | pd.DataFrame) -> Columns:
    """Whether an item is rising: recent popularity against its longer-run rate."""
    trends = {}

    def popularity(days: int) -> np.ndarray:
        return np.asarray(frame[f"popularity_{days}d"], dtype=float)

    if "popularity_7d" in frame and "popularity_30d" in frame:
        trends["trend_7d_vs_30d"] = (popularity(7) + 1.0) / (popularity(30) * 7.0 / 30.0 + 1.0)
    if "popularity_30d" in frame and "popularity_365d" in frame:
        trends["trend_30d_vs_365d"] = (popularity(30) + 1.0) / (
            popularity(365) * 30.0 / 365.0 + 1.0
        )
    return trends


def columns_frame(columns: Columns) -> pd.DataFrame:
    """The columns as a frame, in their order, the float columns stored as one block.

    A frame made from a dict of some fifty columns copies them into blocks column by column
    through pandas' own machinery (about 0.14 s for a block of 1,000 users' 180,000 candidates);
    filling one float array and wrapping it costs a plain copy (0.02 s). Other columns (ids,
    counts) keep their dtypes and places."""
    names = list(columns)
    arrays = [np.asarray(columns[name]) for name in names]
    floats = [place for place, array in enumerate(arrays) if array.dtype == np.float64]
    length = len(arrays[0]) if arrays else 0
    values = np.empty((len(floats), length))
    for row, place in enumerate(floats):
        values[row] = arrays[place]
    # values.T is a view whose columns are values' rows: pandas keeps it as one block.
    frame = pd.DataFrame(values.T, columns=[names[place] for place in floats], copy=False)
    others = sorted(set(range(len(names))) - set(floats))
    for place in others:  # ascending: every earlier column is already in its place
        frame.insert(place, names[place], arrays[place])
    return frame


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """Every numeric column but the ids and the counts that have a share beside them: what the
    ranker learns from."""
    return [
        column
        for column in frame.columns
        if column not in IDENTITY_COLUMNS
        and f"{column}{SHARE_SUFFIX}" not in frame
        and pd.api.types.is_numeric_dtype(frame[column])
    ]
