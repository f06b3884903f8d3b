"""What the platform knows at one moment of event time, and what it knows of the users it ranks.

A `Snapshot` is every event before a moment (`as_of`), the co-visitation pairs whose events all
happened before it, the catalog and the item text vectors. Candidate sources fit on a snapshot;
a backtest cuts one snapshot out of the full log per cut point, and serving uses the newest.
`Behaviour` is the events of the users being ranked, which may be newer than the snapshot (a
refreshing system knows a user's latest clicks before it retrains anything).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from ml.constants import (
    AVAILABLE,
    CONTEXT,
    CREATED_AT,
    EVENT_TYPE,
    ITEM_ID,
    NON_CONSUMING_EVENT_TYPES,
    OCCURRED_AT,
    TITLE,
    USER_ID,
    VALUE,
    WEIGHT,
)
from ml.frames import require_columns

EVENT_COLUMNS = (USER_ID, ITEM_ID, EVENT_TYPE, WEIGHT, OCCURRED_AT)
PAIR_COLUMNS = ("item_id", "related_item_id", "pair_date", "pair_weight")


def _events(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """Events with the columns ranking reads, ids as text, optional columns filled with NA."""
    require_columns(frame, EVENT_COLUMNS, name=name)
    events = frame.copy()
    events[USER_ID] = _as_text(events[USER_ID])
    events[ITEM_ID] = _as_text(events[ITEM_ID])
    events[WEIGHT] = events[WEIGHT].astype(float)
    if not pd.api.types.is_datetime64_any_dtype(events[OCCURRED_AT]):
        # (pd.to_datetime samples even a datetime column's values as Timestamps first.)
        events[OCCURRED_AT] = pd.to_datetime(events[OCCURRED_AT])
    if getattr(events[OCCURRED_AT].dtype, "tz", None) is not None:
        # Times with a zone are the same instants in UTC: the warehouse's naive UTC times.
        events[OCCURRED_AT] = events[OCCURRED_AT].dt.tz_convert("UTC").dt.tz_localize(None)
    for column in (VALUE, CONTEXT):
        if column not in events:
            events[column] = None
    return events.reset_index(drop=True)


def _as_text(column: pd.Series) -> pd.Series:
    """The column as text: as it is when every value already is (one pass in C, where
    astype(str) converts each value in Python), converted otherwise."""
    if pd.api.types.infer_dtype(column, skipna=False) == "string":
        return column
    return column.astype(str)


@dataclass
class Snapshot:
    """Every event before `as_of`, with the catalog and item vectors of that moment."""

    interactions: (
        pd.DataFrame
    )  # user_id, item_id, event_type, weight, occurred_at[, value, context]
    items: pd.DataFrame  # item_id, title[, available, created_at]
    vectors: pd.DataFrame | None = None  # item text vectors indexed by item_id
    covisitation: pd.DataFrame | None = None  # item_id, related_item_id, pair_date, pair_weight
    as_of: pd.Timestamp | None = None  # defaults to just after the newest event

    def __post_init__(self) -> None:
        self.interactions = _events(self.interactions, "interactions")
        require_columns(self.items, (ITEM_ID,), name="items")
        self.items = self.items.copy()
        self.items[ITEM_ID] = self.items[ITEM_ID].astype(str)
        if TITLE not in self.items:
            self.items[TITLE] = self.items[ITEM_ID]
        if self.covisitation is None:
            self.covisitation = pd.DataFrame({column: [] for column in PAIR_COLUMNS})
        require_columns(self.covisitation, PAIR_COLUMNS, name="covisitation")
        if self.vectors is not None:
            self.vectors = self.vectors.copy()
            self.vectors.index = self.vectors.index.astype(str)
            if self.vectors.empty:
                self.vectors = None
        if self.as_of is None:
            newest = self.interactions[OCCURRED_AT].max()
            self.as_of = (
                pd.Timestamp(newest) + pd.Timedelta(microseconds=1)
                if pd.notna(newest)
                else pd.Timestamp("1970-01-01")
            )

    @property
    def item_ids(self) -> np.ndarray:
        """Every known item, catalog or interacted, in sorted order."""
        catalog = set(self.items[ITEM_ID]) | set(self.interactions[ITEM_ID])
        return np.array(sorted(catalog), dtype=object)

    @property
    def positive(self) -> pd.DataFrame:
        """The events that count as evidence of interest (positive weight)."""
        return self.interactions[self.interactions[WEIGHT] > 0]

    @property
    def unavailable(self) -> frozenset[str]:
        """Catalog items marked unavailable (a missing flag means available)."""
        if AVAILABLE not in self.items:
            return frozenset()
        flags = self.items[AVAILABLE].astype("boolean").fillna(True).to_numpy(dtype=bool)
        return frozenset(self.items.loc[~flags, ITEM_ID])

    @cached_property
    def titles(self) -> pd.Series:
        return self.items.drop_duplicates(ITEM_ID, keep="last").set_index(ITEM_ID)[TITLE]

    # Cached: ranking asks for these once per block of users and per reason, and each is a pass
    # over every event. A snapshot is never changed after it is made.
    @cached_property
    def first_seen(self) -> pd.Series:
        """Each interacted item's first positive event time (items nobody touched are absent)."""
        return self.positive.groupby(ITEM_ID)[OCCURRED_AT].min()

    @cached_property
    def created(self) -> pd.Series | None:
        """Each catalog item's creation time as naive UTC (NaT where unknown); None without the
        column."""
        if CREATED_AT not in self.items:
            return None
        created = self.items.drop_duplicates(ITEM_ID, keep="last").set_index(ITEM_ID)[CREATED_AT]
        return pd.to_datetime(created, errors="coerce", utc=True).dt.tz_localize(None)

    @cached_property
    def fingerprint(self) -> tuple:
        """Cheap facts that differ when the snapshots' behaviour, catalog or pairs differ: the
        moment, the numbers of events and pairs, and hashes of the catalog and the vectors."""
        vectors = None
        if self.vectors is not None:
            hashed = pd.util.hash_pandas_object(self.vectors, index=True)
            vectors = (self.vectors.shape, int(hashed.sum()))
        return (
            self.as_of,
            len(self.interactions),
            len(self.covisitation),
            int(pd.util.hash_pandas_object(self.items[ITEM_ID], index=False).sum()),
            self.unavailable,
            vectors,
        )

    def summary(self) -> Snapshot:
        """What a fitted pipeline keeps of its snapshot when it is saved: the catalog, the
        moment, what ranking derives from the events (each item's first event, its creation
        time, its title) and the fingerprint; no events, no pairs, no vectors (the sources hold
        what they need of those). A saved pipeline's size then follows the catalog, not the log.
        """
        for derived in ("titles", "first_seen", "created", "fingerprint"):
            getattr(self, derived)  # computed and cached on this snapshot
        slim = Snapshot.__new__(Snapshot)
        slim.__dict__.update(self.__dict__)
        # Empty copies: an empty slice is a view that would hold every event in memory.
        slim.interactions = self.interactions.iloc[:0].copy()
        slim.covisitation = self.covisitation.iloc[:0].copy()
        slim.vectors = None
        return slim

    def before(self, cut: pd.Timestamp) -> Snapshot:
        """The snapshot as it stood at ``cut``: events before it, pairs from before its date,
        the items created before it (or with no creation time)."""
        cut = pd.Timestamp(cut)
        pairs = self.covisitation
        pair_dates = pd.to_datetime(pairs["pair_date"])
        items, vectors = self.items, self.vectors
        if CREATED_AT in items:
            # Items created after the cut did not exist yet: a backtest must not offer them.
            created = pd.to_datetime(items[CREATED_AT], errors="coerce", utc=True)
            created = created.dt.tz_localize(None)
            items = items[~(created >= cut).to_numpy()]
            if vectors is not None:
                vectors = vectors[vectors.index.isin(items[ITEM_ID])]
        return Snapshot(
            interactions=self.interactions[self.interactions[OCCURRED_AT] < cut],
            items=items,
            vectors=vectors,
            covisitation=pairs[(pair_dates < cut.normalize()).to_numpy()],
            as_of=cut,
        )


@dataclass
class Behaviour:
    """The events of the users being ranked (any age; newer than the snapshot is fine)."""

    events: pd.DataFrame
    users: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))

    def __post_init__(self) -> None:
        self.events = _events(self.events, "events")
        listed = np.asarray(self.users, dtype=object).astype(str)
        self.users = np.array(sorted(set(listed) | set(self.events[USER_ID])), dtype=object)

    def recent_items(self, length: int) -> pd.DataFrame:
        """(user_id, item_id, recency, occurred_at): each user's `length` latest distinct items
        of positive weight, recency 0 for the newest."""
        positive = self.events[self.events[WEIGHT] > 0]
        ordered = positive.sort_values([OCCURRED_AT, ITEM_ID], ascending=False, kind="stable")
        ordered = ordered.drop_duplicates([USER_ID, ITEM_ID])
        ordered = ordered.groupby(USER_ID, sort=False).head(length)
        recent = ordered[[USER_ID, ITEM_ID, OCCURRED_AT]].copy()
        recent["recency"] = recent.groupby(USER_ID, sort=False).cumcount()
        return recent.reset_index(drop=True)

    def consumed(self) -> pd.DataFrame:
        """(user_id, item_id) pairs the user consumed (any event but an impression)."""
        consuming = ~self.events[EVENT_TYPE].isin(NON_CONSUMING_EVENT_TYPES)
        return self.events.loc[consuming, [USER_ID, ITEM_ID]].drop_duplicates()

    def for_users(self, users: np.ndarray) -> Behaviour:
        chosen = self.events[self.events[USER_ID].isin(users)]
        return Behaviour(chosen, users=np.asarray(users, dtype=object))

    def blocks(self, size: int) -> Iterator[Behaviour]:
        """The behaviour split into blocks of ``size`` users (in `users` order), each with its
        users' events: one sort, then slices, so the cost follows the events once rather than
        once per block."""
        if size < 1:
            raise ValueError(f"block size must be at least 1; got {size}")
        return self._slices(range(0, len(self.users), size))

    def shares(self, count: int, events_per_user: float) -> Iterator[Behaviour]:
        """The behaviour split into at most ``count`` parts of consecutive users (in `users`
        order) that cost about the same to rank, a user costing as much as
        ``events_per_user`` events plus their own events: equal numbers of users can differ
        twofold in events (a shard of heavy users finishes last while the other worker waits).
        """
        if count < 1:
            raise ValueError(f"parts: at least one, not {count}")
        if not len(self.users):
            return iter(())
        per_user = np.bincount(
            pd.Index(self.users).get_indexer(self.events[USER_ID]), minlength=len(self.users)
        )
        cost = np.cumsum(per_user + events_per_user)
        # Each part starts after the user whose cumulative cost first reaches its share.
        targets = cost[-1] * np.arange(1, count) / count
        starts = np.unique(np.r_[0, np.searchsorted(cost, targets) + 1])
        return self._slices(starts[starts < len(self.users)])

    def _slices(self, starts: Iterable[int]) -> Iterator[Behaviour]:
        """A Behaviour per run of users from each start to the next (the last to the end)."""
        codes = pd.Index(self.users).get_indexer(self.events[USER_ID])
        order = np.argsort(codes, kind="stable")
        sorted_codes = codes[order]
        starts = list(starts)
        ends = [*starts[1:], len(self.users)] if starts else []
        for start, end in zip(starts, ends, strict=True):
            first, last = np.searchsorted(sorted_codes, [start, end])
            yield self._part(self.events.iloc[order[first:last]], self.users[start:end])

    @classmethod
    def _part(cls, events: pd.DataFrame, users: np.ndarray) -> Behaviour:
        """A Behaviour of some of this one's users and all of their (already checked) events,
        without checking them again: ranking splits its users into shares and blocks, and
        copying and converting every event once more per part cost a refresh of 530 MovieLens
        users 0.12 s where the split alone takes 0.03 s."""
        part = cls.__new__(cls)
        events.index = pd.RangeIndex(len(events))  # as _events leaves it
        part.events, part.users = events, users
        return part
