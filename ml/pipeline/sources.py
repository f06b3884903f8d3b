"""Candidate sources: each nominates items for many users at once and scores any (user, item).

Every source fits on a `Snapshot` and then, for a block of users (`Behaviour` plus their recent
items), returns its best `n` items per user with its score(s), or its score(s) for pairs another
source nominated (the ranker sees every source's opinion of every candidate). No source holds a
users x catalog matrix for more than one block of users; the ones that need a dense item x item
model (EASE) restrict it to the most popular items and say so.

Score columns are named after the source; the popularity source has one column per window.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from ml.constants import ITEM_ID, OCCURRED_AT, USER_ID, WEIGHT
from ml.pipeline.snapshot import Behaviour, Snapshot

logger = logging.getLogger("freshrank.sources")

RECENCY = "recency"
POPULARITY_DAY_WINDOWS = (1, 7, 30, 365)
POPULARITY_EVENT_WINDOWS = (1_000, 10_000)
TRENDING_HALF_LIFE_DAYS = 7.0
DEBUT_EVENTS = 20  # a user's opening events, for the debut popularity
COVISITATION_HALF_LIFE_DAYS = 60.0
COVISITATION_RELATED_PER_ITEM = 100
EASE_MAX_ITEMS = 2_000
KNN_NEIGHBOURS = 100
KNN_MAX_ITEMS = 30_000  # above this many catalog items, item-kNN keeps the most popular
KNN_BLOCK_ITEMS = 1_024
KNN_DENSE_SHARE = 0.05  # a block of similarities with more nonzeros than this is ranked dense
EXACT_INDEX_MAX_ITEMS = 50_000  # above this, an HNSW graph instead of exhaustive search
# sparse_top_per_row tells values apart to this fraction of a row's largest value.
TIE_STEPS = 2**39


def recency_weight(recency: np.ndarray | pd.Series) -> np.ndarray:
    """How much a user's item counts by how recent it is: 1 for the newest, then 1/2, 1/3..."""
    return 1.0 / (1.0 + np.asarray(recency, dtype=float))


class CandidateSource(ABC):
    """Fit on a snapshot; nominate and score items for blocks of users."""

    name: ClassVar[str]
    # Refit on every newer snapshot at serving time (cheap counting); a trained source (the
    # sequential model) keeps its weights and only learns the new catalog.
    refit_when_serving: ClassVar[bool] = True

    @property
    def columns(self) -> tuple[str, ...]:
        """The score columns this source adds to a candidate frame."""
        return (self.name,)

    @abstractmethod
    def fit(self, snapshot: Snapshot) -> CandidateSource:
        """Learn what the source needs from everything known at the snapshot."""

    @abstractmethod
    def scores(self, behaviour: Behaviour, recent: pd.DataFrame) -> pd.DataFrame:
        """(user_id, item_id, *columns) for every pair the source has an opinion on.

        Sparse: only pairs with evidence, bounded per user (a source that could score every
        item keeps its best few hundred)."""

    def candidates(self, behaviour: Behaviour, recent: pd.DataFrame, n: int) -> pd.DataFrame:
        """Each user's `n` best items by each of the source's columns."""
        return top_per_user(self.scores(behaviour, recent), self.columns, n)


def run_starts(ordered: np.ndarray) -> np.ndarray:
    """Positions where a new run of equal values begins in an ordered array."""
    return np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])[: len(ordered)]


def expand_runs(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, position) of every element of the runs starts[i] .. starts[i] + lengths[i] - 1,
    run after run: a join of each row with its run of the other side, in integer positions."""
    owner = np.repeat(np.arange(len(lengths)), lengths)
    within = np.arange(len(owner)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return owner, np.repeat(starts, lengths) + within


def top_per_user(frame: pd.DataFrame, columns: tuple[str, ...], n: int) -> pd.DataFrame:
    """Rows that are among a user's `n` highest for at least one column (ties to the lower id),
    sorted by user and item."""
    if frame.empty:
        return frame
    ordered = frame.sort_values([USER_ID, ITEM_ID], kind="stable").reset_index(drop=True)
    return ordered[top_per_user_mask(ordered, columns, n)].reset_index(drop=True)


def top_per_user_mask(ordered: pd.DataFrame, columns: tuple[str, ...], n: int) -> np.ndarray:
    """top_per_user's choice as a mask over a frame already sorted by user and item."""
    users = pd.factorize(ordered[USER_ID])[0]  # ascending, users in contiguous runs
    values = [ordered[column].to_numpy(dtype=float) for column in columns]
    return top_per_run_mask(users, values, n)


def top_per_run_mask(users: np.ndarray, columns: list[np.ndarray], n: int) -> np.ndarray:
    """Which rows are among their user's ``n`` highest positive values in at least one of
    ``columns`` (each a value per row), equal values to the earlier row; ``users``: each row's
    user as an integer code, the rows sorted by user."""
    keep = np.zeros(len(users), dtype=bool)
    for values in columns:
        # Only positive values can be kept, and they come first in each user's order: the
        # others need no sorting (most rows of a merged frame have none from a given source).
        positive = np.flatnonzero(values > 0)
        # Within a user, the best values, equal values in item order (the frame's order).
        starts = run_starts(users[positive])
        ends = np.r_[starts[1:], len(positive)]
        keep[positive[_smallest_per_run(-values[positive], starts, ends, n)]] = True
    return keep


@dataclass(frozen=True)
class MergedScores:
    """merged_scores' outer union as arrays: row i is the pair (users[user_codes[i]],
    items[item_codes[i]]) with the score columns' values[i], 0 where no frame scored it.
    ``users`` and ``items`` are the distinct ids, sorted, so the rows (sorted by code) are in
    (user, item) order, each user's rows one run. Ranking selects rows by code and makes text
    ids only of the rows it keeps."""

    users: np.ndarray
    items: np.ndarray
    user_codes: np.ndarray
    item_codes: np.ndarray
    values: np.ndarray  # (rows, columns)
    columns: tuple[str, ...]

    def column(self, name: str) -> np.ndarray:
        return self.values[:, self.columns.index(name)]

    def frame(self, rows: np.ndarray | slice = slice(None)) -> pd.DataFrame:
        """(user_id, item_id, score columns...) of the chosen rows."""
        ids = {
            USER_ID: self.users[self.user_codes[rows]],
            ITEM_ID: self.items[self.item_codes[rows]],
        }
        values = self.values[rows]
        scores = {column: values[:, place] for place, column in enumerate(self.columns)}
        return pd.DataFrame({**ids, **scores}, copy=False)


def merged_scores(parts: list[pd.DataFrame], columns: tuple[str, ...]) -> MergedScores:
    """The outer union of (user_id, item_id, score columns...) frames on (user, item), 0 where
    a frame has no row for a pair, sorted by user and item (MergedScores).

    One integer key per pair instead of a chain of merges on two text columns: the merge of a
    block's candidates was the costliest step of ranking. Each frame holds a pair once.
    """
    users = np.concatenate(
        [np.zeros(0, dtype=object), *(part[USER_ID].to_numpy(dtype=object) for part in parts)]
    )
    items = np.concatenate(
        [np.zeros(0, dtype=object), *(part[ITEM_ID].to_numpy(dtype=object) for part in parts)]
    )
    # Sorted codes: the keys' order is the (user, item) text order.
    user_codes, user_values = pd.factorize(users, sort=True)
    item_codes, item_values = pd.factorize(items, sort=True)
    keys = user_codes.astype(np.int64) * len(item_values) + item_codes
    unique, rows = np.unique(keys, return_inverse=True)
    values = np.zeros((len(unique), len(columns)))
    position = {column: place for place, column in enumerate(columns)}
    start = 0
    for part in parts:
        mine = rows[start : start + len(part)]
        for column in part.columns.intersection(list(columns)):
            values[mine, position[column]] = part[column].to_numpy(dtype=float)
        start += len(part)
    width = max(len(item_values), 1)
    return MergedScores(
        users=np.asarray(user_values, dtype=object),
        items=np.asarray(item_values, dtype=object),
        user_codes=unique // width,
        item_codes=unique % width,
        values=values,
        columns=tuple(columns),
    )


def sparse_top_per_row(
    matrices: list[sp.csr_array], per_row: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, columns, values) of the entries among their row's `per_row` largest positive
    values in at least one of the same-shaped matrices (ties to the lower column), sorted by
    row and column; `values` holds one column per matrix, 0 where a matrix has no entry.

    top_per_user for scores that are sparse products: no frame of text keys is grouped."""
    entries = []
    kept = [np.zeros(0, np.int64)]
    for matrix in matrices:
        matrix = sp.csr_array(matrix)
        matrix.sum_duplicates()  # canonical: each row's columns sorted, once each
        all_rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
        keys = all_rows * matrix.shape[1] + matrix.indices
        data = matrix.data
        entries.append((keys, data))  # keys ascending
        positive = np.flatnonzero(data > 0)
        rows, values = all_rows[positive], data[positive]
        if not len(rows):
            continue
        # How far below its row's largest value each entry is, in steps of 2^-39 of it: values
        # closer than that tie, so float noise (a sum taken in another order) cannot reorder
        # a row. A row keeps its per_row smallest steps, equal steps in column order.
        starts = run_starts(rows)
        ends = np.r_[starts[1:], len(rows)]
        largest = np.repeat(np.maximum.reduceat(values, starts), ends - starts)
        below = np.rint((1.0 - values / largest) * TIE_STEPS).astype(np.int64)
        chosen = positive[_smallest_per_run(below, starts, ends, per_row)]
        kept.append(keys[chosen])
    # Each matrix's keys are ascending: a stable sort (a merge of those runs) and a pass for
    # the repeats cost less than hashing every key.
    union = np.sort(np.concatenate(kept), kind="stable")
    union = union[np.r_[True, union[1:] != union[:-1]]] if len(union) else union
    width = matrices[0].shape[1]
    values = np.zeros((len(union), len(matrices)))
    for column, (keys, data) in enumerate(entries):
        if len(keys):
            found = np.minimum(np.searchsorted(keys, union), len(keys) - 1)
            hit = keys[found] == union
            values[hit, column] = data[found[hit]]
    return union // width, union % width, values


def _smallest_per_run(
    values: np.ndarray, starts: np.ndarray, ends: np.ndarray, n: int
) -> np.ndarray:
    """Positions of the ``n`` smallest values of each run values[start:end], equal values to
    the earlier position: a partition per run that is longer than ``n`` (one sort of every
    entry of a block costs several times more), the whole of shorter runs."""
    long = np.flatnonzero(ends - starts > n)
    keep = np.ones(len(values), dtype=bool)
    for run in long:
        start, end = starts[run], ends[run]
        mine = values[start:end]
        cut = np.partition(mine, n - 1)[n - 1]
        inside = mine < cut
        tied = np.flatnonzero(mine == cut)[: n - int(inside.sum())]
        inside[tied] = True
        keep[start:end] = inside
    return np.flatnonzero(keep)


def _sparse_rows_to_frame(
    matrix: sp.csr_array, users: np.ndarray, items: np.ndarray, column: str, per_row: int
) -> pd.DataFrame:
    """(user_id, item_id, column) of each row's `per_row` largest positive entries."""
    rows, columns, values = sparse_top_per_row([matrix], per_row)
    return pd.DataFrame({USER_ID: users[rows], ITEM_ID: items[columns], column: values[:, 0]})


def _dense_top_per_row(
    values: np.ndarray, per_row: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's ``per_row`` largest positive entries of a dense matrix as (rows, columns,
    values), unordered (ties at the cut go to whichever the partition keeps)."""
    width = min(per_row, values.shape[1])
    top = np.argpartition(-values, width - 1, axis=1)[:, :width]
    picked = np.take_along_axis(values, top, axis=1)
    keep = picked > 0
    rows = np.broadcast_to(np.arange(len(values))[:, None], top.shape)[keep]
    return rows, top[keep], picked[keep][:, None]


def _dense_rows_to_frame(
    values: np.ndarray, users: np.ndarray, items: np.ndarray, column: str, per_row: int
) -> pd.DataFrame:
    """(user_id, item_id, column) of each row's `per_row` largest positive entries."""
    from ml.ranking import top_k_indices

    if values.size == 0:
        return pd.DataFrame({USER_ID: [], ITEM_ID: [], column: []})
    top = top_k_indices(values, per_row)
    picked = np.take_along_axis(values, top, axis=1)
    rows, places = np.nonzero(picked > 0)
    return pd.DataFrame(
        {
            USER_ID: users[rows],
            ITEM_ID: items[top[rows, places]],
            column: picked[rows, places],
        }
    )


def _history_matrix(recent: pd.DataFrame, users: np.ndarray, item_index: pd.Index) -> sp.csr_array:
    """Users x items matrix of the recent items, weighted by recency."""
    rows = pd.Index(users).get_indexer(recent[USER_ID])
    columns = item_index.get_indexer(recent[ITEM_ID])
    known = (rows >= 0) & (columns >= 0)
    weights = recency_weight(recent[RECENCY].to_numpy())[known]
    return sp.csr_array(
        (weights, (rows[known], columns[known])), shape=(len(users), len(item_index))
    )


class PopularitySource(CandidateSource):
    """Item popularity over windows of event time (days back from the newest event) and of the
    last N events, decayed trending, and all time: the same for every user."""

    name = "popularity"

    def __init__(
        self,
        day_windows: tuple[int, ...] = POPULARITY_DAY_WINDOWS,
        event_windows: tuple[int, ...] = POPULARITY_EVENT_WINDOWS,
        trending_half_life_days: float = TRENDING_HALF_LIFE_DAYS,
        per_user: int = 200,
    ) -> None:
        self.day_windows = day_windows
        self.event_windows = event_windows
        self.trending_half_life_days = trending_half_life_days
        self.per_user = per_user
        self.item_scores = pd.DataFrame()

    @property
    def columns(self) -> tuple[str, ...]:
        return (
            *(f"popularity_{days}d" for days in self.day_windows),
            *(f"popularity_last_{count}" for count in self.event_windows),
            "popularity_all",
            "trending",
            "popularity_debut",
        )

    def fit(self, snapshot: Snapshot) -> PopularitySource:
        events = snapshot.positive.sort_values(OCCURRED_AT, kind="stable")
        age_days = ((snapshot.as_of - events[OCCURRED_AT]) / pd.Timedelta(days=1)).to_numpy()
        weights = events[WEIGHT].to_numpy(dtype=float)
        item_index = pd.Index(snapshot.item_ids)
        codes = item_index.get_indexer(events[ITEM_ID])
        scores = {}
        for days in self.day_windows:
            inside = age_days <= days
            scores[f"popularity_{days}d"] = np.bincount(
                codes[inside], weights[inside], len(item_index)
            )
        for count in self.event_windows:
            scores[f"popularity_last_{count}"] = np.bincount(
                codes[-count:], weights[-count:], len(item_index)
            )
        scores["popularity_all"] = np.bincount(codes, weights, len(item_index))
        decay = np.exp2(-age_days / self.trending_half_life_days)
        scores["trending"] = np.bincount(codes, weights * decay, len(item_index))
        # What users pick first: the items of each user's opening events, where a new user
        # starts (onboarding screens, landing pages), over the longest day window.
        opening = events.groupby(USER_ID, sort=False).cumcount().to_numpy() < DEBUT_EVENTS
        opening &= age_days <= max(self.day_windows, default=365)
        scores["popularity_debut"] = np.bincount(codes[opening], weights[opening], len(item_index))
        self.item_scores = pd.DataFrame(scores, index=item_index)
        self._best_items = {}  # best_items' answers, by n
        return self

    def best_items(self, n: int | None = None) -> np.ndarray:
        """Every item among some window's `n` (default `per_user`) best, as sorted ids: every
        user's candidates from this source (worked out once per ``n``: every block asks)."""
        n = n or self.per_user
        known = self.__dict__.setdefault("_best_items", {})  # a source saved before it has none
        if n not in known:
            best = set()
            for column in self.columns:
                column_scores = self.item_scores[column]
                best.update(column_scores[column_scores > 0].nlargest(n).index)
            known[n] = np.array(sorted(best), dtype=object)
        return known[n]

    def scores(self, behaviour: Behaviour, recent: pd.DataFrame) -> pd.DataFrame:
        items = self.best_items()
        users = behaviour.users
        frame = pd.DataFrame(
            {USER_ID: np.repeat(users, len(items)), ITEM_ID: np.tile(items, len(users))}
        )
        return frame.join(self.item_scores.loc[items], on=ITEM_ID)

    def item_features(self, items: pd.Series) -> pd.DataFrame:
        """Every window's popularity of the given items (0 for unknown ones), aligned to them."""
        return self.item_scores.reindex(items.to_numpy()).fillna(0.0).reset_index(drop=True)

    def window_totals(self) -> pd.Series:
        """Every window's summed popularity over all items (what a share divides by)."""
        return self.item_scores.sum()


class CoVisitationSource(CandidateSource):
    """Items that followed or accompanied the user's recent items in other users' sessions.

    Reads the `item_covisitation` mart (pairs per day), decays each day's pairs by its age
    before the snapshot, keeps each item's strongest related items, and scores a user's
    candidate by the recency-weighted sum over their recent items.
    """

    name = "covisitation"

    def __init__(
        self,
        half_life_days: float = COVISITATION_HALF_LIFE_DAYS,
        related_per_item: int = COVISITATION_RELATED_PER_ITEM,
        per_user: int = 200,
    ) -> None:
        self.half_life_days = half_life_days
        self.related_per_item = related_per_item
        self.per_user = per_user
        self.related = pd.DataFrame(columns=[ITEM_ID, "related_item_id", "covisitation"])
        self._matrices: tuple[pd.Index, dict[str, sp.csr_array]] | None = None
        self._related_codes = np.zeros(0, dtype=np.int64)

    @property
    def columns(self) -> tuple[str, ...]:
        return ("covisitation", "covisitation_365d", "covisitation_all", "covisitation_last")

    def fit(self, snapshot: Snapshot) -> CoVisitationSource:
        self._matrices = None
        pairs = snapshot.covisitation
        if pairs.empty:
            # Text ids even when empty: a float key cannot merge with users' recent items.
            ids, scores = pd.Series(dtype=object), pd.Series(dtype=float)
            self.related = pd.DataFrame(
                {
                    ITEM_ID: ids,
                    "related_item_id": ids,
                    "covisitation": scores,
                    "covisitation_365d": scores,
                    "covisitation_all": scores,
                }
            )
            return self
        age_days = (snapshot.as_of - pd.to_datetime(pairs["pair_date"])) / pd.Timedelta(days=1)
        weights = pairs["pair_weight"].to_numpy(dtype=float)
        frame = pd.DataFrame(
            {
                ITEM_ID: pairs[ITEM_ID].astype(str).to_numpy(),
                "related_item_id": pairs["related_item_id"].astype(str).to_numpy(),
                "covisitation": weights * np.exp2(-age_days.to_numpy() / self.half_life_days),
                # The last year alone: what sessions do now, when habits drift.
                "covisitation_365d": np.where(age_days.to_numpy() <= 365, weights, 0.0),
                "covisitation_all": weights,
            }
        )
        related = frame.groupby([ITEM_ID, "related_item_id"], as_index=False, sort=False).sum()
        related = related.sort_values([ITEM_ID, "related_item_id"], kind="stable")
        # Each item keeps its strongest related items by any of the three measures.
        keep = np.zeros(len(related), dtype=bool)
        for column in ("covisitation", "covisitation_365d", "covisitation_all"):
            place = related.groupby(ITEM_ID, sort=False)[column].rank(
                method="first", ascending=False
            )
            keep |= (place <= self.related_per_item).to_numpy() & (related[column] > 0).to_numpy()
        self.related = related[keep].reset_index(drop=True)
        return self

    @property
    def matrices(self) -> tuple[pd.Index, dict[str, sp.csr_array]]:
        """(item index, source item x related item matrix per measure) of `related`: a
        block's scores are then sparse products instead of a join and a grouped sum."""
        if getattr(self, "_matrices", None) is None:
            related = self.related
            codes, items = pd.factorize(
                np.concatenate([related[ITEM_ID], related["related_item_id"]]), sort=True
            )
            rows, columns = codes[: len(related)], codes[len(related) :]
            items = pd.Index(items)
            shape = (len(items), len(items))
            self._related_codes = columns  # each related row's related item, in `items`
            self._matrices = (
                items,
                {
                    measure: sp.csr_array(
                        (related[measure].to_numpy(dtype=float), (rows, columns)), shape=shape
                    )
                    for measure in ("covisitation", "covisitation_365d", "covisitation_all")
                },
            )
        return self._matrices

    def contributions(
        self, recent: pd.DataFrame, pairs: pd.DataFrame | None = None
    ) -> pd.DataFrame:
        """(user_id, source item, item_id, and each measure) per recent item and related item;
        only the (user_id, item_id) rows of ``pairs`` when given (what a list's reasons need)."""
        related = self.related
        # The join on the source item by positions: `related` holds each item's rows together
        # (sorted by item), so every recent row meets its item's run, in order.
        sources = related[ITEM_ID].to_numpy()
        starts = run_starts(sources)
        counts = np.diff(np.r_[starts, len(sources)])
        found = pd.Index(sources[starts]).get_indexer(recent[ITEM_ID])
        known = found >= 0
        first, repeats = np.zeros((2, len(recent)), dtype=np.int64)
        first[known], repeats[known] = starts[found[known]], counts[found[known]]
        left, right = expand_runs(first, repeats)
        if pairs is not None:
            left, right = self._within(pairs, recent, left, right)
        recency = recent[RECENCY].to_numpy()[left]
        weight = recency_weight(recency)

        def measure(column: str) -> np.ndarray:
            return related[column].to_numpy(dtype=float)[right]

        return pd.DataFrame(
            {
                USER_ID: recent[USER_ID].to_numpy()[left],
                "source_item_id": sources[right],
                ITEM_ID: related["related_item_id"].to_numpy()[right],
                "covisitation": measure("covisitation") * weight,
                "covisitation_365d": measure("covisitation_365d") * weight,
                "covisitation_all": measure("covisitation_all") * weight,
                # What followed the newest item alone: the strongest next-item signal.
                "covisitation_last": np.where(recency == 0, measure("covisitation_all"), 0.0),
            }
        )

    def _within(
        self, pairs: pd.DataFrame, recent: pd.DataFrame, left: np.ndarray, right: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The (recent row, related row) matches whose user and related item are a pair of
        ``pairs``: one integer key per (user, item), so no text is compared per match."""
        items, _ = self.matrices
        users = pd.factorize(np.concatenate([recent[USER_ID], pairs[USER_ID]]))[0]
        pair_items = items.get_indexer(pairs[ITEM_ID])
        wanted = users[len(recent) :].astype(np.int64) * len(items) + pair_items
        wanted = np.unique(wanted[pair_items >= 0])
        keys = users[: len(recent)][left].astype(np.int64) * len(items) + self._related_codes[right]
        if not len(wanted):
            return left[:0], right[:0]
        found = np.minimum(np.searchsorted(wanted, keys), len(wanted) - 1)
        keep = wanted[found] == keys
        return left[keep], right[keep]

    def scores(self, behaviour: Behaviour, recent: pd.DataFrame) -> pd.DataFrame:
        """The recency-weighted sums of `contributions`, as products of the users' recent
        items (users x items, weighted by recency) with each measure's item x item matrix;
        `covisitation_last` multiplies the newest item alone by the all-time weights."""
        items, measures = self.matrices
        columns = items.get_indexer(recent[ITEM_ID])
        known = columns >= 0
        users, rows = np.unique(recent[USER_ID].to_numpy()[known], return_inverse=True)
        if len(users) == 0:
            return pd.DataFrame({USER_ID: [], ITEM_ID: [], **{c: [] for c in self.columns}})
        recency = recent[RECENCY].to_numpy()[known]
        shape = (len(users), len(items))
        history = sp.csr_array((recency_weight(recency), (rows, columns[known])), shape=shape)
        newest = recency == 0
        last = sp.csr_array(
            (np.ones(int(newest.sum())), (rows[newest], columns[known][newest])), shape=shape
        )
        products = [
            history @ measures["covisitation"],
            history @ measures["covisitation_365d"],
            history @ measures["covisitation_all"],
            last @ measures["covisitation_all"],
        ]
        user_rows, item_columns, values = sparse_top_per_row(products, self.per_user)
        frame = pd.DataFrame({USER_ID: users[user_rows], ITEM_ID: items[item_columns]})
        frame[list(self.columns)] = values
        return frame


class TextNeighbourSource(CandidateSource):
    """Items whose text vectors lie nearest to the user's recent items, through a FAISS index.

    The query is the recency-weighted mean of the user's recent item vectors. Every catalog item
    with a vector is in the index, touched or not, so this is how brand-new items are reached.
    """

    name = "text"

    def __init__(self, per_user: int = 100, query_length: int = 10) -> None:
        self.per_user = per_user
        self.query_length = query_length
        self.index = None
        self.vectors: np.ndarray = np.zeros((0, 0), dtype=np.float32)
        self.item_ids: np.ndarray = np.array([], dtype=object)
        self._positions: pd.Index = pd.Index([])

    def fit(self, snapshot: Snapshot) -> TextNeighbourSource:
        self.index = None
        if snapshot.vectors is None:
            return self
        vectors = snapshot.vectors.to_numpy(dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.vectors = np.ascontiguousarray(vectors / np.where(norms > 0, norms, 1.0))
        self.item_ids = snapshot.vectors.index.to_numpy(dtype=object)
        self._positions = pd.Index(self.item_ids)
        self._build_index()
        return self

    def _build_index(self) -> None:
        import faiss

        dimension = self.vectors.shape[1]
        if self._exact:
            index = faiss.IndexFlatIP(dimension)
        else:
            index = faiss.IndexHNSWFlat(dimension, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = 128
        index.add(self.vectors)
        self.index = index

    def __getstate__(self) -> dict:
        # A FAISS index is not picklable. An exact index is rebuilt from the vectors on load (a
        # copy); an HNSW graph travels as FAISS's own bytes, since building it again costs
        # about 10 s at 100,000 items on 2 cores (loading the bytes 0.5 s), in every worker that
        # loads the pipeline and every refresh that loads the serving state.
        state = self.__dict__.copy()
        state["index"] = None
        state["_had_index"] = self.index is not None
        if self.index is not None and not self._exact:
            import faiss

            state["_graph"] = faiss.serialize_index(self.index)
        return state

    def __setstate__(self, state: dict) -> None:
        had_index = state.pop("_had_index", False)
        graph = state.pop("_graph", None)
        self.__dict__.update(state)
        if not had_index:
            return
        if graph is not None:
            import faiss

            try:
                self.index = faiss.deserialize_index(graph)
                return
            except RuntimeError as error:  # another FAISS's bytes: build the graph again
                logger.warning("text index from another FAISS (%s): rebuilding it", error)
        self._build_index()

    @property
    def _exact(self) -> bool:
        """Whether the index searches exhaustively (else an HNSW graph)."""
        return len(self.item_ids) <= EXACT_INDEX_MAX_ITEMS

    def queries(self, recent: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(users, unit query vectors) for users with at least one recent item that has text."""
        recent = recent[recent[RECENCY] < self.query_length]
        positions = self._positions.get_indexer(recent[ITEM_ID])
        known = positions >= 0
        if self.index is None or not known.any():
            return np.array([], dtype=object), np.zeros((0, self.vectors.shape[1]), np.float32)
        users, rows = np.unique(recent[USER_ID].to_numpy()[known], return_inverse=True)
        weights = recency_weight(recent[RECENCY].to_numpy()[known])
        # Over the recent items' own vectors only: a product with every vector would copy the
        # whole float32 catalog into float64 first (300 MB at 100,000 items, a block at a time).
        # Their columns keep the catalog's order, so the sums are the same to the last bit.
        items, columns = np.unique(positions[known], return_inverse=True)
        mix = sp.csr_array((weights, (rows, columns)), shape=(len(users), len(items)))
        query = np.asarray(mix @ self.vectors[items], dtype=np.float32)
        norms = np.linalg.norm(query, axis=1, keepdims=True)
        return users, np.ascontiguousarray(query / np.where(norms > 0, norms, 1.0))

    def scores(self, behaviour: Behaviour, recent: pd.DataFrame) -> pd.DataFrame:
        users, query = self.queries(recent)
        if len(users) == 0:
            return pd.DataFrame({USER_ID: [], ITEM_ID: [], self.name: []})
        width = min(self.per_user + self.query_length, len(self.item_ids))
        similarity, neighbours = self.index.search(query, width)
        found = neighbours >= 0
        rows = np.broadcast_to(np.arange(len(users))[:, None], neighbours.shape)[found]
        return pd.DataFrame(
            {
                USER_ID: users[rows],
                ITEM_ID: self.item_ids[neighbours[found]],
                self.name: similarity[found].astype(float),
            }
        )

    def pair_similarity(self, pairs: pd.DataFrame, recent: pd.DataFrame) -> pd.DataFrame:
        """Cosine of each (user, item)'s item vector with the user's recent items: the query
        (recency-weighted mean), the mean and the max over the recent items (NaN: no text)."""
        if self.index is None or pairs.empty:
            return pd.DataFrame(
                np.nan, index=pairs.index, columns=["text", "text_mean", "text_max"], dtype=float
            )
        history = recent[recent[RECENCY] < self.query_length]
        # The query's cosine from the same per-user products as the mean and the max: a
        # product of every user's query with every distinct candidate grew with the catalog.
        similarity = self.recent_similarity(
            pairs, history, query_weights=recency_weight(history[RECENCY].to_numpy())
        )
        return pd.DataFrame(
            {
                "text": similarity["query"].to_numpy(),
                "text_mean": similarity["mean"].to_numpy(),
                "text_max": similarity["max"].to_numpy(),
            },
            index=pairs.index,
        )

    def rows(self, item_ids: pd.Series | pd.Index | np.ndarray) -> np.ndarray:
        """Each item's row in `vectors` (-1: the item has no text vector)."""
        return self._positions.get_indexer(pd.Index(item_ids))

    def vectors_of(self, item_ids: pd.Index) -> np.ndarray:
        """The items' unit vectors in their order, zeros where an item has none."""
        rows = self.rows(item_ids)
        vectors = np.zeros((len(item_ids), self.vectors.shape[1]), dtype=np.float32)
        vectors[rows >= 0] = self.vectors[rows[rows >= 0]]
        return vectors

    def recent_similarity(
        self,
        pairs: pd.DataFrame,
        recent: pd.DataFrame,
        exclude_self: bool = False,
        query_weights: np.ndarray | None = None,
    ) -> pd.DataFrame:
        """For each (user, item) row of `pairs` (by position): the mean and the max cosine of
        the item's vector with the user's `recent` items that have one, and which of them is
        the most similar (ties: the earlier in `recent`). NaN and None where the item has no
        vector or the user no such recent item; ``exclude_self`` leaves the item itself out.
        With ``query_weights`` (one per row of `recent`), also "query": the cosine with the
        user's query, the weighted sum of those recent items' vectors (queries()).

        One product per user, their candidates against their own recent items, reduced at
        once: a product between every candidate and every recent item of a block of users, or
        a row per (pair, recent item), costs far more than the few products each user needs."""
        mean = np.full(len(pairs), np.nan)
        best = np.full(len(pairs), np.nan)
        query = np.full(len(pairs), np.nan)
        similar = np.full(len(pairs), None, dtype=object)
        history_rows = self.rows(recent[ITEM_ID])
        has_vector = history_rows >= 0
        history_rows = history_rows[has_vector]
        weights = None if query_weights is None else np.asarray(query_weights)[has_vector]
        history_items = recent[ITEM_ID].to_numpy()[has_vector]
        item_rows = self.rows(pairs[ITEM_ID])
        known = np.flatnonzero(item_rows >= 0)
        # Users as integer codes on both sides (a text-keyed join was most of the cost).
        codes, users = pd.factorize(
            np.concatenate(
                [pairs[USER_ID].to_numpy()[known], recent[USER_ID].to_numpy()[has_vector]]
            )
        )
        pair_users, history_users = codes[: len(known)], codes[len(known) :]
        by_user = np.argsort(history_users, kind="stable")
        counts = np.bincount(history_users, minlength=len(users))
        starts = np.cumsum(counts) - counts
        # Pairs and recent items grouped by user, so each user's share is a contiguous slice.
        order = np.argsort(pair_users, kind="stable")
        owners = known[order]
        candidate_rows = item_rows[owners]
        recent_rows = history_rows[by_user]
        recent_weights = None if weights is None else weights[by_user]
        bounds = run_starts(pair_users[order])
        ends = np.r_[bounds[1:], len(order)]
        grouped = np.full((3, len(order)), np.nan)  # mean, max and query, in `order`
        slot = np.full(len(order), -1)  # the most similar recent item's place in `recent_rows`
        # A few hundred tiny products on one BLAS thread: two threads spin-wait on each other,
        # and under a busy neighbour this loop took 20 times as long.
        with threadpool_limits(limits=1, user_api="blas"):
            for begin, end, user in zip(bounds, ends, pair_users[order][bounds], strict=True):
                first, count = starts[user], counts[user]
                if not count:
                    continue
                left, right = candidate_rows[begin:end], recent_rows[first : first + count]
                recent_vectors = self.vectors[right]
                block = (self.vectors[left] @ recent_vectors.T).astype(float)
                if recent_weights is not None:
                    mine = recent_weights[first : first + count]
                    norm = float(np.linalg.norm(mine @ recent_vectors.astype(float)))
                    grouped[2, begin:end] = (block @ mine) / norm if norm > 0 else 0.0
                if exclude_self:
                    itself = left[:, None] == right[None, :]
                    others = count - itself.sum(axis=1)
                    block[itself] = -np.inf
                    compared = others > 0
                    totals = np.where(itself, 0.0, block).sum(axis=1)
                    grouped[0, begin:end][compared] = totals[compared] / others[compared]
                    grouped[1, begin:end][compared] = block.max(axis=1)[compared]
                    slot[begin:end][compared] = first + block.argmax(axis=1)[compared]
                else:
                    grouped[0, begin:end] = block.mean(axis=1)
                    grouped[1, begin:end] = block.max(axis=1)
                    slot[begin:end] = first + block.argmax(axis=1)
        mean[owners], best[owners], query[owners] = grouped
        found = slot >= 0
        similar[owners[found]] = history_items[by_user[slot[found]]]
        frame = {"mean": mean, "max": best, "most_similar": similar}
        if query_weights is not None:
            frame["query"] = query
        return pd.DataFrame(frame)


class ItemKNNSource(CandidateSource):
    """Item-item cosine similarity over users; a user scores the recency-weighted sum."""

    name = "item_knn"

    def __init__(
        self, neighbours: int = KNN_NEIGHBOURS, per_user: int = 200, max_items: int = KNN_MAX_ITEMS
    ) -> None:
        self.neighbours = neighbours
        self.per_user = per_user
        self.max_items = max_items
        self.similarity: sp.csr_array | None = None
        self.item_index = pd.Index([])

    def fit(self, snapshot: Snapshot) -> ItemKNNSource:
        self.item_index = pd.Index(snapshot.item_ids)
        positive = snapshot.positive
        if len(self.item_index) > self.max_items:
            # Its cost grows with the square of the items: a large catalog keeps its most
            # popular ones (the others still reach users through the other sources).
            popularity = positive.groupby(ITEM_ID)[WEIGHT].sum()
            kept = popularity.nlargest(self.max_items).index
            logger.info(
                "item-kNN restricted to the %d most popular of %d catalog items",
                len(kept),
                len(self.item_index),
            )
            self.item_index = pd.Index(sorted(kept))
            positive = positive[positive[ITEM_ID].isin(self.item_index)]
        n_items = len(self.item_index)
        users, user_codes = np.unique(positive[USER_ID].to_numpy(), return_inverse=True)
        matrix = sp.csr_array(
            (
                positive[WEIGHT].to_numpy(dtype=float),
                (user_codes, self.item_index.get_indexer(positive[ITEM_ID])),
            ),
            shape=(len(users), n_items),
        )
        matrix.sum_duplicates()
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=0)).ravel())
        matrix = sp.csr_array(
            matrix
            @ sp.diags_array(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0))
        )
        by_item = sp.csr_array(matrix.T)
        rows, columns, values = [], [], []
        # Blocks of items at a time, each a sparse product: items that share no user with an
        # item never appear in its row.
        for start in range(0, n_items, KNN_BLOCK_ITEMS):
            stop = min(start + KNN_BLOCK_ITEMS, n_items)
            block = by_item[start:stop] @ matrix
            if block.nnz > KNN_DENSE_SHARE * block.shape[0] * block.shape[1]:
                # Most pairs share a user (a small, busy catalog): a dense pass is faster.
                dense = block.toarray()
                dense[np.arange(stop - start), np.arange(start, stop)] = 0.0  # not its own
                found = _dense_top_per_row(dense, self.neighbours)
            else:
                block = sp.coo_array(block)
                other = block.col != block.row + start  # an item is not its own neighbour
                block = sp.csr_array(
                    (block.data[other], (block.row[other], block.col[other])), shape=block.shape
                )
                found = sparse_top_per_row([block], self.neighbours)
            rows.append(found[0] + start)
            columns.append(found[1])
            values.append(found[2][:, 0])
        self.similarity = sp.csr_array(
            (
                np.concatenate(values or [np.zeros(0)]),
                (
                    np.concatenate(rows or [np.zeros(0, int)]),
                    np.concatenate(columns or [np.zeros(0, int)]),
                ),
            ),
            shape=(n_items, n_items),
        )
        return self

    def scores(self, behaviour: Behaviour, recent: pd.DataFrame) -> pd.DataFrame:
        users = behaviour.users
        history = _history_matrix(recent, users, self.item_index)
        product = sp.csr_array(history @ self.similarity)
        return _sparse_rows_to_frame(
            product, users, self.item_index.to_numpy(), self.name, self.per_user
        )


class EASESource(CandidateSource):
    """EASE (a closed-form item-item model) over the `max_items` most popular items.

    Its dense item x item solve costs max_items^3, so a larger catalog is restricted to its most
    popular items (logged) rather than skipped.
    """

    name = "ease"

    def __init__(self, max_items: int = EASE_MAX_ITEMS, per_user: int = 200) -> None:
        self.max_items = max_items
        self.per_user = per_user
        self.weights: np.ndarray | None = None
        self.item_index = pd.Index([])

    def fit(self, snapshot: Snapshot) -> EASESource:
        from ml.models.baselines import EASERecommender

        positive = snapshot.positive
        popularity = positive.groupby(ITEM_ID)[WEIGHT].sum().sort_values(ascending=False)
        if len(popularity) > self.max_items:
            logger.info(
                "EASE restricted to the %d most popular of %d interacted items",
                self.max_items,
                len(popularity),
            )
        kept = pd.Index(sorted(popularity.index[: self.max_items]))
        self.item_index = kept
        if kept.empty:
            self.weights = np.zeros((0, 0))
            return self
        model = EASERecommender(max_items=max(self.max_items, 1)).fit(
            positive[positive[ITEM_ID].isin(kept)], catalog_item_ids=kept
        )
        self.weights = model.similarity
        return self

    def scores(self, behaviour: Behaviour, recent: pd.DataFrame) -> pd.DataFrame:
        users = behaviour.users
        history = _history_matrix(recent, users, self.item_index)
        values = np.asarray(history @ self.weights) if len(self.item_index) else np.zeros((0, 0))
        return _dense_rows_to_frame(
            values, users, self.item_index.to_numpy(), self.name, self.per_user
        )


@dataclass(frozen=True)
class SequentialSourceConfig:
    epochs: int = 3
    hidden_size: int = 64
    seed: int = 7
    # 0: train in this process; n: n DDP replicas on Ray Train (needs a Ray session, see
    # ml/distributed/session.py); train_storage is where Ray Train keeps the run ("" temporary).
    train_workers: int = 0
    train_storage: str = ""


class SequentialSource(CandidateSource):
    """The sequential model (SASRec family, item = ID + text) as one source among the others."""

    name = "sequential"
    refit_when_serving = False

    def __init__(self, config: SequentialSourceConfig | None = None, per_user: int = 100) -> None:
        self.config = config or SequentialSourceConfig()
        self.per_user = per_user
        self.model = None

    def fit(self, snapshot: Snapshot) -> SequentialSource:
        from ml.models.sequential import SequentialConfig, SequentialRecommender

        self.model = None
        positive = snapshot.positive
        if positive[USER_ID].nunique() < 2:
            return self
        base = SequentialConfig()
        config = replace(
            base,
            max_epochs=self.config.epochs,
            min_epochs=self.config.epochs,
            hidden_size=self.config.hidden_size,
            seed=self.config.seed,
        )
        catalog = pd.Index(snapshot.item_ids)
        if self.config.train_workers:
            from ml.distributed.training import fit_sequential_on_ray

            self.model = fit_sequential_on_ray(
                positive,
                config,
                self.config.train_workers,
                catalog_item_ids=catalog,
                text_vectors=snapshot.vectors,
                storage_path=self.config.train_storage or None,
            ).model
            return self
        self.model = SequentialRecommender(config).fit(
            positive, catalog_item_ids=catalog, text_vectors=snapshot.vectors
        )
        return self

    def __getstate__(self) -> dict:
        # The network class is built inside a function, so the model travels as its state.
        state = self.__dict__.copy()
        state["model"] = None if self.model is None else self.model.state()
        return state

    def __setstate__(self, state: dict) -> None:
        from ml.models.sequential import model_from_state

        self.__dict__.update(state)
        if self.model is not None:
            self.model = model_from_state(self.model)

    def learn_catalog(self, snapshot: Snapshot) -> SequentialSource:
        """The trained model over the snapshot's catalog: new items enter through their text."""
        if self.model is not None:
            self.model = self.model.with_catalog(pd.Series(snapshot.item_ids), snapshot.vectors)
        return self

    def scores(self, behaviour: Behaviour, recent: pd.DataFrame) -> pd.DataFrame:
        if self.model is None or recent.empty:
            return pd.DataFrame({USER_ID: [], ITEM_ID: [], self.name: []})
        histories = recent.rename(columns={RECENCY: "_recency"}).assign(**{WEIGHT: 1.0})
        users, values = self.model.score(histories[[USER_ID, ITEM_ID, WEIGHT, OCCURRED_AT]])
        # Softmax scores over the catalog, so the source's opinion is a probability-like number.
        values = values - values.max(axis=1, keepdims=True)
        values = np.exp(values)
        values /= values.sum(axis=1, keepdims=True)
        return _dense_rows_to_frame(
            values, np.asarray(users, dtype=object), self.model.item_ids, self.name, self.per_user
        )


SOURCES: dict[str, type[CandidateSource]] = {
    source.name: source
    for source in (
        PopularitySource,
        CoVisitationSource,
        TextNeighbourSource,
        ItemKNNSource,
        EASESource,
        SequentialSource,
    )
}
