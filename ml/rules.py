"""Configurable ranking rules: exclusion, feedback demotions, negative feedback, MMR, trending
per context.

The ranking pipeline (ml.pipeline) applies them to its candidates with the cell functions
(`excluded_at`, `feedback_multipliers_at`), which cost what a block's events and candidates
cost; request-time personalisation applies them to one user's few events (`one_user_excluded`,
`one_user_feedback`). The users x items matrix functions (`excluded_mask`,
`feedback_multipliers`, `negative_feedback_penalty`) state the same rules plainly, and the
tests hold the cell and one-user functions to them. Every matrix has one row per entry of
`user_ids` and one column per entry of `item_ids`, in the caller's order. Time always means
event time (`occurred_at`), never the wall clock, so a replay or a backfill ranks exactly as
live traffic did. Events without a time carry no order: the impression and click rules leave
them out, the negative feedback rule counts them as older than any timed event, and they still
count as consumption.

- exclusion: items the user consumed (any event but an impression), items they purchased and
  unavailable items are never listed. A rebuyable item is exempt from both the purchase and
  the consumption rule (buying it again is the point); nothing is exempt from unavailability.
- feedback: an item shown more than `free_impressions` times with no engagement at or after the
  impressions is multiplied by `impression_demotion` per extra impression, never below
  `min_impression_factor`; an item clicked or viewed with no add_to_cart/purchase at or after
  the click, by `click_without_conversion_factor` (once, however many clicks).
- negative feedback: an item is multiplied by 1 - strength x (its largest cosine similarity,
  clipped at 0, to an item whose latest like/dislike/rating from the user was negative).
The multipliers apply to scores that are never negative, so a multiplier below 1 always
pushes an item down.
"""

from __future__ import annotations

import json
import numbers
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from ml.constants import (
    CONTEXT,
    CONTEXT_VALUE,
    CONTROL_CHARACTER,
    DEFAULT_CLICK_WITHOUT_CONVERSION_FACTOR,
    DEFAULT_CONTEXT_KEY,
    DEFAULT_CONTEXT_MIN_EVENTS,
    DEFAULT_EVENT_WEIGHTS,
    DEFAULT_FREE_IMPRESSIONS,
    DEFAULT_IMPRESSION_DEMOTION,
    DEFAULT_LOW_RATING_THRESHOLD,
    DEFAULT_MIN_IMPRESSION_FACTOR,
    DEFAULT_MMR_MIN_CANDIDATES,
    DEFAULT_NEGATIVE_FEEDBACK_STRENGTH,
    DEFAULT_TRENDING_HALF_LIFE_DAYS,
    EVENT_TYPE,
    ITEM_ID,
    MAX_ID_LENGTH,
    NON_CONSUMING_EVENT_TYPES,
    OCCURRED_AT,
    RANK,
    RATING_MAX,
    REASON,
    SCORE,
    USER_ID,
    VALUE,
)
from ml.frames import require_columns, require_positive_k
from ml.ranking import TRENDING_NOW, top_k_indices

REASON_TRENDING_CONTEXT = "popular at this hour"

IMPRESSION = "impression"
PURCHASE = "purchase"
DISLIKE = "dislike"
RATE = "rate"
# Any of these at or after an impression means the impression was not ignored.
ENGAGEMENT_EVENT_TYPES = ("click", "add_to_cart", "purchase", "like", "rate")
CLICK_EVENT_TYPES = ("click", "view")
CONVERSION_EVENT_TYPES = ("add_to_cart", "purchase")
# The user's latest event of these types on an item says whether they liked it.
EXPLICIT_FEEDBACK_EVENT_TYPES = ("like", "dislike", "rate")
MMR_CANDIDATES_PER_PLACE = 5

Ids = Sequence[Hashable] | np.ndarray | pd.Index
_NO_TIME = np.iinfo(np.int64).min  # an event time (ns) earlier than any real one
_MMR_BLOCK_FLOATS = 8_000_000  # bounds the candidate vectors and similarities MMR holds
# Contexts that can be read off the event time when the context JSON lacks them.
_TIME_CONTEXTS = {"hour": "hour", "weekday": "dayofweek"}
_IDENTITY_COLUMNS = (USER_ID, ITEM_ID, EVENT_TYPE)


@dataclass(frozen=True)
class RankingRules:
    """Settings of the ranking rules; the defaults are the platform's (see the module docstring).

    Factors are multipliers in (0, 1] (1 turns a rule off); `mmr_lambda` None turns MMR off,
    otherwise 1 is pure relevance and 0 pure diversity.
    """

    impression_demotion: float = DEFAULT_IMPRESSION_DEMOTION
    free_impressions: int = DEFAULT_FREE_IMPRESSIONS
    min_impression_factor: float = DEFAULT_MIN_IMPRESSION_FACTOR
    click_without_conversion_factor: float = DEFAULT_CLICK_WITHOUT_CONVERSION_FACTOR
    exclude_consumed: bool = True
    exclude_purchased: bool = True
    rebuyable_item_ids: frozenset[Hashable] = field(default_factory=frozenset)
    negative_feedback_strength: float = DEFAULT_NEGATIVE_FEEDBACK_STRENGTH
    low_rating_threshold: float = DEFAULT_LOW_RATING_THRESHOLD
    mmr_lambda: float | None = None
    new_item_slots: int = 0  # places per list kept for items nobody has touched yet

    def __post_init__(self) -> None:
        for name in ("impression_demotion", "click_without_conversion_factor"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must lie in (0, 1], got {value!r}")
        for name in ("min_impression_factor", "negative_feedback_strength"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
        if isinstance(self.free_impressions, bool) or not (
            isinstance(self.free_impressions, numbers.Integral) and self.free_impressions >= 0
        ):
            raise ValueError(
                f"free_impressions must be a non-negative integer, got {self.free_impressions!r}"
            )
        if isinstance(self.new_item_slots, bool) or not (
            isinstance(self.new_item_slots, numbers.Integral) and self.new_item_slots >= 0
        ):
            raise ValueError(
                f"new_item_slots must be a non-negative integer, got {self.new_item_slots!r}"
            )
        if self.mmr_lambda is not None and not 0.0 <= self.mmr_lambda <= 1.0:
            raise ValueError(f"mmr_lambda must be None or lie in [0, 1], got {self.mmr_lambda!r}")
        # A set passed by the caller would make the rules unhashable and mutable from outside.
        object.__setattr__(self, "rebuyable_item_ids", frozenset(self.rebuyable_item_ids))


@dataclass(frozen=True)
class _CodedEvents:
    """The events of known users on known items, as positions in the score matrix."""

    users: np.ndarray  # row of each event
    items: np.ndarray  # column of each event
    types: pd.Series  # event type, default index
    times: np.ndarray  # nanoseconds since the epoch, _NO_TIME when unknown
    values: np.ndarray  # float value, NaN when absent
    shape: tuple[int, int]

    @property
    def pairs(self) -> np.ndarray:
        """Flat position of each event's (user, item) cell in a C-ordered matrix."""
        return self.users.astype(np.int64) * self.shape[1] + self.items

    def of_type(self, event_types: Iterable[str]) -> np.ndarray:
        """Boolean mask of the events whose type is one of `event_types`."""
        return self.types.isin(list(event_types)).to_numpy()


def feedback_multipliers(
    events: pd.DataFrame, user_ids: Ids, item_ids: Ids, rules: RankingRules
) -> np.ndarray:
    """Users x items multipliers in [min_impression_factor x click factor, 1]; 1 is untouched.

    An impression is unclicked when the user did not click, add to cart, purchase, like or rate
    the item at or after it; n unclicked impressions give impression_demotion ** (n -
    free_impressions), floored at min_impression_factor. A click or view with no add_to_cart or
    purchase at or after it multiplies by click_without_conversion_factor once. Needs occurred_at.
    """
    coded = _code_events(
        events, _unique_index(user_ids, "user_ids"), _unique_index(item_ids, "item_ids")
    )
    return _feedback_multipliers(coded, rules)


def excluded_mask(
    events: pd.DataFrame,
    user_ids: Ids,
    item_ids: Ids,
    rules: RankingRules,
    unavailable: Iterable[Hashable] = (),
) -> np.ndarray:
    """Users x items booleans, True where the item must not be recommended to the user.

    Consumed items (any event but an impression) when rules.exclude_consumed, purchased items
    when rules.exclude_purchased, and every unavailable item. Rebuyable items are exempt from
    the first two, never from the third. Unknown ids are ignored; no event time is needed.
    """
    item_index = _unique_index(item_ids, "item_ids")
    coded = _code_events(events, _unique_index(user_ids, "user_ids"), item_index, need_time=False)
    return _excluded_mask(coded, item_index, rules, unavailable)


def negative_feedback_penalty(
    events: pd.DataFrame,
    user_ids: Ids,
    item_ids: Ids,
    item_vectors: np.ndarray,
    rules: RankingRules,
) -> np.ndarray:
    """Users x items multipliers in [1 - negative_feedback_strength, 1]; 1 is untouched.

    An item is negative for a user when their latest like, dislike or rating of it (a rating
    without a value says nothing) is a dislike or a rating at or below low_rating_threshold; a
    later like or good rating cancels an earlier dislike. Each item is multiplied by 1 -
    strength x max(0, largest cosine similarity to one of the user's negative items).
    `item_vectors` (items x dim, rows in item_ids order) are normalised here; zero rows are
    similar to nothing. Users without negative feedback get 1 everywhere.
    """
    item_index = _unique_index(item_ids, "item_ids")
    coded = _code_events(events, _unique_index(user_ids, "user_ids"), item_index, need_time=False)
    vectors = _unit_rows(item_vectors, len(item_index))
    return _negative_feedback_penalty(coded, vectors, rules)


def feedback_multipliers_at(
    events: pd.DataFrame,
    user_ids: Ids,
    item_ids: Ids,
    rows: np.ndarray,
    columns: np.ndarray,
    rules: RankingRules,
    item_vectors: np.ndarray | Callable[[pd.Index], np.ndarray] | None = None,
) -> np.ndarray:
    """feedback_multipliers (x negative_feedback_penalty with `item_vectors`) of the cells
    (rows[i], columns[i]) only, one multiplier per cell.

    What ranking candidates needs: it costs what the events and the cells cost, where the
    matrix functions cost users x items (a ranked block of users against every item any of
    them touched). ``item_vectors`` may be a function from item ids to their vectors: then only
    the items that negative feedback compares are looked up.
    """
    item_index = _unique_index(item_ids, "item_ids")
    coded = _code_events(events, _unique_index(user_ids, "user_ids"), item_index)
    rows, columns = np.asarray(rows, dtype=np.int64), np.asarray(columns, dtype=np.int64)
    multipliers = np.ones(len(rows))
    cells, factors = _feedback_cells(coded, rules)
    if len(cells):
        wanted = rows * coded.shape[1] + columns
        found = np.minimum(np.searchsorted(cells, wanted), len(cells) - 1)
        hit = cells[found] == wanted
        multipliers[hit] = factors[found[hit]]
    if item_vectors is not None and rules.negative_feedback_strength > 0:
        if callable(item_vectors):
            given = item_vectors

            def vectors_of(positions: np.ndarray) -> np.ndarray:
                return _unit_rows(given(item_index[positions]), len(positions))

        else:
            vectors = _unit_rows(item_vectors, len(item_index))
            vectors_of = vectors.__getitem__
        multipliers *= _negative_feedback_at(coded, vectors_of, rules, rows, columns)
    return multipliers


def mmr_rerank(
    scores: np.ndarray,
    item_vectors: np.ndarray,
    k: int,
    lambda_: float,
    *,
    candidates: int | None = None,
) -> np.ndarray:
    """Column indices of each row's k picks by maximal marginal relevance, in pick order.

    Among the `candidates` best-scored items (default max(5k, 50)), each step picks the item
    maximising lambda_ x relevance - (1 - lambda_) x (largest cosine similarity to an item
    already picked, negative similarity counting 0); relevance is the score rescaled to [0, 1]
    over the row's candidates. Ties go to the better-scored item, then the lower column, so
    lambda_ = 1 gives top_k_indices. Items scored -inf are never picked: a row with fewer than
    k pickable items ends in -1 (drop them; -1 is not a column). Shape (rows, min(k, items)).
    """
    require_positive_k(k)
    if not 0.0 <= lambda_ <= 1.0:
        raise ValueError(f"lambda_ must lie in [0, 1], got {lambda_!r}")
    values = np.asarray(scores, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"scores must be 2-dimensional, got shape {values.shape}")
    vectors = _unit_rows(item_vectors, values.shape[1])
    n_rows, n_items = values.shape
    width = min(k, n_items)
    if np.isposinf(values).any():
        raise ValueError("scores contains +inf; only -inf (excluded) may be infinite")
    if candidates is None:
        candidates = max(MMR_CANDIDATES_PER_PLACE * k, DEFAULT_MMR_MIN_CANDIDATES)
    if isinstance(candidates, bool) or not (
        isinstance(candidates, numbers.Integral) and candidates >= 1
    ):
        raise ValueError(f"candidates must be a positive integer or None, got {candidates!r}")
    pool = min(max(candidates, width), n_items)
    picks = np.full((n_rows, width), -1, dtype=np.intp)
    if width == 0 or n_rows == 0:
        return picks
    block = max(1, _MMR_BLOCK_FLOATS // (pool * (pool + vectors.shape[1])))
    for start in range(0, n_rows, block):
        stop = min(start + block, n_rows)
        picks[start:stop] = _mmr_block(values[start:stop], vectors, width, pool, lambda_)
    return picks


def context_trending(
    events: pd.DataFrame,
    item_ids: Ids,
    context_key: str = DEFAULT_CONTEXT_KEY,
    half_life_days: float = DEFAULT_TRENDING_HALF_LIFE_DAYS,
    *,
    min_events: int = DEFAULT_CONTEXT_MIN_EVENTS,
    event_weights: Mapping[str, float] = DEFAULT_EVENT_WEIGHTS,
) -> dict[str, np.ndarray]:
    """Trending per context value: {value: scores aligned to item_ids}.

    Each event weighs event_weights[event_type] (a rating x value / RATING_MAX, 0 without a
    value; negative weights count 0) and halves every half_life_days before the newest event.

    An event's context value is its context JSON's `context_key` field, else (for "hour" and
    "weekday", Monday 0) read off occurred_at; values are text, whole numbers without a
    decimal point ("9", not "9.0"). Decay runs from the newest event of the whole frame, so
    contexts compare. A value with fewer than `min_events` events of positive weight on known
    items is left out (its users get the global trending list).
    """
    item_index = _unique_index(item_ids, "item_ids")
    decayed = _decayed_weights(events, half_life_days, event_weights)
    contexts = _event_context_values(events, context_key)
    columns = item_index.get_indexer(events[ITEM_ID])
    counted = (columns >= 0) & (decayed > 0) & contexts.notna().to_numpy()
    codes, values = pd.factorize(contexts[counted])
    event_counts = np.bincount(codes, minlength=len(values))
    columns, decayed = columns[counted], decayed[counted]
    by_context = {}
    for code in np.flatnonzero(event_counts >= min_events):
        mine = codes == code
        by_context[str(values[code])] = np.bincount(
            columns[mine], weights=decayed[mine], minlength=len(item_index)
        )
    return by_context


def context_value(
    context: object,
    occurred_at: pd.Timestamp | None = None,
    context_key: str = DEFAULT_CONTEXT_KEY,
) -> str | None:
    """A request's context value, normalised as context_trending normalises events' values.

    `context` is the request's context (JSON text, a mapping or None); without `context_key` in
    it the value is read off `occurred_at` (e.g. the request time) where the key allows it.
    """
    value = _normalise_context_value(_context_field(context, context_key))
    if value is None and occurred_at is not None and context_key in _TIME_CONTEXTS:
        timestamp = pd.Timestamp(occurred_at)
        if not pd.isna(timestamp):
            value = str(getattr(timestamp, _TIME_CONTEXTS[context_key]))
    return value


def context_trending_lists(
    context_scores: Mapping[str, np.ndarray],
    item_ids: Ids,
    k: int,
    *,
    global_trending: np.ndarray | None = None,
    exclude: Iterable[Hashable] = (),
) -> pd.DataFrame:
    """Top-k items per context value: rows of (context_value, rank, item_id, score, reason).

    `context_scores` is context_trending's output. Items the context's events picked come first,
    best first, with their score divided by the context's largest (so in (0, 1]) and
    REASON_TRENDING_CONTEXT; ties go to the higher `global_trending` (aligned to item_ids), then
    the earlier item. When fewer than k items have a context score, the rest of the list is
    filled in global_trending order with score 0 and "trending now", so a context list is as
    long as the global one. Excluded items (e.g. unavailable ones) are never listed.
    """
    require_positive_k(k)
    item_index = _unique_index(item_ids, "item_ids")
    overall = _item_vector(global_trending, len(item_index), "global_trending")
    allowed = ~item_index.isin(pd.Index(list(exclude)))
    allowed_columns = np.flatnonzero(allowed)
    # lexsort sorts by its last key first: best global trending, then the earlier item.
    global_order = allowed_columns[np.lexsort((allowed_columns, -overall[allowed_columns]))]
    items = item_index.to_numpy()
    frames = []
    for value in sorted(context_scores):
        scores = _item_vector(context_scores[value], len(item_index), f"context {value!r}")
        picked = np.flatnonzero(allowed & (scores > 0))
        picked = picked[np.lexsort((picked, -overall[picked], -scores[picked]))][:k]
        # The first k + len(picked) of the global order hold k items the context did not pick.
        fill = global_order[: k + len(picked)]
        fill = fill[~np.isin(fill, picked)][: k - len(picked)]
        columns = np.concatenate([picked, fill])
        top = scores[picked[0]] if len(picked) else 1.0
        frames.append(
            pd.DataFrame(
                {
                    CONTEXT_VALUE: value,
                    RANK: np.arange(1, len(columns) + 1, dtype=np.int64),
                    ITEM_ID: items[columns],
                    SCORE: np.concatenate([scores[picked] / top, np.zeros(len(fill))]),
                    REASON: [REASON_TRENDING_CONTEXT] * len(picked) + [TRENDING_NOW] * len(fill),
                }
            )
        )
    if not frames:
        return pd.DataFrame(
            {
                CONTEXT_VALUE: pd.Series(dtype=object),
                RANK: pd.Series(dtype=np.int64),
                ITEM_ID: pd.Series(dtype=item_index.dtype),
                SCORE: pd.Series(dtype=float),
                REASON: pd.Series(dtype=object),
            }
        )
    return pd.concat(frames, ignore_index=True)


def one_user_excluded(events: Iterable[Mapping[str, object]], rules: RankingRules) -> set:
    """excluded_mask for one user's few events as plain mappings (no unavailable items).

    The request path's form of the rule: building frames for a handful of events costs more
    than the whole read. tests/ml/test_rules.py checks that both forms agree.
    """
    excluded = set()
    for event in events:
        kind = event[EVENT_TYPE]
        if (rules.exclude_consumed and kind not in NON_CONSUMING_EVENT_TYPES) or (
            rules.exclude_purchased and kind == PURCHASE
        ):
            excluded.add(event[ITEM_ID])
    return excluded - rules.rebuyable_item_ids


def one_user_feedback(events: Iterable[Mapping[str, object]], rules: RankingRules) -> dict:
    """feedback_multipliers for one user's few events as plain mappings: item -> multiplier,
    for the items whose multiplier is not 1. Events without an occurred_at are left out."""
    timed = [event for event in events if event.get(OCCURRED_AT) is not None]
    multipliers: dict = {}
    if rules.impression_demotion < 1:
        unclicked: dict = {}
        for event in timed:
            if event[EVENT_TYPE] != IMPRESSION:
                continue
            engaged = _latest_of(timed, event[ITEM_ID], ENGAGEMENT_EVENT_TYPES)
            if engaged is None or event[OCCURRED_AT] > engaged:
                unclicked[event[ITEM_ID]] = unclicked.get(event[ITEM_ID], 0) + 1
        for item, count in unclicked.items():
            extra = max(count - rules.free_impressions, 0)
            factor = max(rules.impression_demotion**extra, rules.min_impression_factor)
            multipliers[item] = multipliers.get(item, 1.0) * factor
    if rules.click_without_conversion_factor < 1:
        unconverted = set()
        for event in timed:
            if event[EVENT_TYPE] not in CLICK_EVENT_TYPES:
                continue
            converted = _latest_of(timed, event[ITEM_ID], CONVERSION_EVENT_TYPES)
            if converted is None or event[OCCURRED_AT] > converted:
                unconverted.add(event[ITEM_ID])
        for item in unconverted:
            multipliers[item] = multipliers.get(item, 1.0) * rules.click_without_conversion_factor
    return {item: factor for item, factor in multipliers.items() if factor != 1.0}


def _latest_of(
    events: Sequence[Mapping[str, object]], item: object, event_types: Sequence[str]
) -> object | None:
    """The latest occurred_at among the events on ``item`` of ``event_types``, else None."""
    times = [
        event[OCCURRED_AT]
        for event in events
        if event[ITEM_ID] == item and event[EVENT_TYPE] in event_types
    ]
    return max(times) if times else None


def _unique_index(ids: Ids, name: str) -> pd.Index:
    """Ids as an Index; a duplicate would make two rows or columns mean the same id."""
    index = pd.Index(ids)
    if index.has_duplicates:
        repeated = index[index.duplicated()].unique()[:5].tolist()
        raise ValueError(f"{name} must be unique; repeated: {repeated}")
    return index


def _code_events(
    events: pd.DataFrame, user_index: pd.Index, item_index: pd.Index, *, need_time: bool = True
) -> _CodedEvents:
    """The events of users in user_index on items in item_index, as matrix positions."""
    required = (USER_ID, ITEM_ID, EVENT_TYPE, OCCURRED_AT) if need_time else _IDENTITY_COLUMNS
    require_columns(events, required, name="events")
    users = user_index.get_indexer(events[USER_ID])
    items = item_index.get_indexer(events[ITEM_ID])
    known = (users >= 0) & (items >= 0)
    if OCCURRED_AT in events.columns:
        times = _event_nanoseconds(events[OCCURRED_AT])[known]
    else:
        times = np.full(int(known.sum()), _NO_TIME, dtype=np.int64)
    if VALUE in events.columns:
        values = pd.to_numeric(events[VALUE], errors="coerce").to_numpy(dtype=float)[known]
    else:
        values = np.full(int(known.sum()), np.nan)
    return _CodedEvents(
        users=users[known],
        items=items[known],
        types=events[EVENT_TYPE][known].reset_index(drop=True),
        times=times,
        values=values,
        shape=(len(user_index), len(item_index)),
    )


def _item_vector(values: np.ndarray | None, n_items: int, name: str) -> np.ndarray:
    """Scores aligned to item_ids as floats, negatives 0; None is all zeros."""
    if values is None:
        return np.zeros(n_items)
    vector = np.asarray(values, dtype=float)
    if vector.shape != (n_items,):
        raise ValueError(
            f"{name} has shape {vector.shape} but must hold one score per item ({n_items},)"
        )
    if not np.isfinite(vector).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return np.maximum(vector, 0.0)


def _require_datetimes(times: pd.Series) -> None:
    """Refuse an occurred_at column that pandas does not hold as datetimes."""
    if not pd.api.types.is_datetime64_any_dtype(times):
        raise ValueError(
            f"events column {OCCURRED_AT!r} must hold datetimes, got dtype {times.dtype}; "
            f"parse it with pandas.to_datetime first"
        )


def _event_nanoseconds(times: pd.Series) -> np.ndarray:
    """Event times as UTC nanoseconds since the epoch; _NO_TIME where the time is missing."""
    _require_datetimes(times)
    if isinstance(times.dtype, pd.DatetimeTZDtype):
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    # NaT is stored as the smallest int64, which is _NO_TIME.
    return times.to_numpy(dtype="datetime64[ns]").view(np.int64)


def _excluded_mask(
    coded: _CodedEvents,
    item_index: pd.Index,
    rules: RankingRules,
    unavailable: Iterable[Hashable],
) -> np.ndarray:
    """excluded_mask on coded events."""
    cells, unavailable_items = _excluded_cells(coded, item_index, rules, unavailable)
    excluded = np.zeros(coded.shape, dtype=bool)
    excluded.reshape(-1)[cells] = True  # a view: writing a cell writes the matrix
    excluded[:, unavailable_items] = True
    return excluded


def excluded_at(
    events: pd.DataFrame,
    user_ids: Ids,
    item_ids: Ids,
    rows: np.ndarray,
    columns: np.ndarray,
    rules: RankingRules,
    unavailable: Iterable[Hashable] = (),
) -> np.ndarray:
    """excluded_mask's value at the cells (rows[i], columns[i]) only: what dropping a block's
    candidates needs, at the cost of its events and cells rather than users x items."""
    item_index = _unique_index(item_ids, "item_ids")
    coded = _code_events(events, _unique_index(user_ids, "user_ids"), item_index, need_time=False)
    cells, unavailable_items = _excluded_cells(coded, item_index, rules, unavailable)
    rows, columns = np.asarray(rows, dtype=np.int64), np.asarray(columns, dtype=np.int64)
    wanted = rows * coded.shape[1] + columns
    return np.isin(wanted, cells) | np.isin(columns, unavailable_items)


def _excluded_cells(
    coded: _CodedEvents,
    item_index: pd.Index,
    rules: RankingRules,
    unavailable: Iterable[Hashable],
) -> tuple[np.ndarray, np.ndarray]:
    """(flat cells excluded by the user's history, columns of unavailable items). Rebuyable
    items are exempt from the first, never from the second: no exemption undoes unavailability."""
    by_history = np.zeros(len(coded.users), dtype=bool)
    if rules.exclude_consumed:
        by_history |= ~coded.of_type(NON_CONSUMING_EVENT_TYPES)
    if rules.exclude_purchased:
        by_history |= coded.of_type((PURCHASE,))
    if rules.rebuyable_item_ids:
        rebuyable = item_index.isin(list(rules.rebuyable_item_ids))
        by_history &= ~rebuyable[coded.items]
    cells = np.unique(coded.pairs[by_history])
    unavailable_columns = item_index.get_indexer(pd.Index(list(unavailable)))
    return cells, unavailable_columns[unavailable_columns >= 0]


def _feedback_multipliers(coded: _CodedEvents, rules: RankingRules) -> np.ndarray:
    """feedback_multipliers on coded events; events without a time are left out."""
    multipliers = np.ones(coded.shape)
    cells, factors = _feedback_cells(coded, rules)
    multipliers.reshape(-1)[cells] = factors  # a view: writing a cell writes the matrix
    return multipliers


def _feedback_cells(coded: _CodedEvents, rules: RankingRules) -> tuple[np.ndarray, np.ndarray]:
    """(flat cells, their multipliers) of the cells the impression and click rules touch,
    cells unique and ascending; every other cell is 1. Events without a time are left out."""
    timed = coded.times != _NO_TIME
    pairs = coded.pairs
    touched, multipliers = [], []

    impressions = coded.of_type((IMPRESSION,)) & timed
    if rules.impression_demotion < 1 and impressions.any():
        engaged = coded.of_type(ENGAGEMENT_EVENT_TYPES) & timed
        last_engaged = _latest_time(pairs, coded.times, engaged, pairs[impressions])
        # Engagement at the very time of the impression counts as a response to it.
        unclicked = coded.times[impressions] > last_engaged
        demoted, counts = np.unique(pairs[impressions][unclicked], return_counts=True)
        extra = np.maximum(counts - rules.free_impressions, 0)
        touched.append(demoted)
        factors = np.maximum(rules.impression_demotion**extra, rules.min_impression_factor)
        multipliers.append(factors)

    clicks = coded.of_type(CLICK_EVENT_TYPES) & timed
    if rules.click_without_conversion_factor < 1 and clicks.any():
        converted = coded.of_type(CONVERSION_EVENT_TYPES) & timed
        last_converted = _latest_time(pairs, coded.times, converted, pairs[clicks])
        unconverted = np.unique(pairs[clicks][coded.times[clicks] > last_converted])
        touched.append(unconverted)
        multipliers.append(np.full(len(unconverted), rules.click_without_conversion_factor))
    if not touched:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    cells, position = np.unique(np.concatenate(touched), return_inverse=True)
    factors = np.ones(len(cells))
    np.multiply.at(factors, position, np.concatenate(multipliers))  # both rules: the product
    return cells, factors


def _latest_time(
    pairs: np.ndarray, times: np.ndarray, source: np.ndarray, queried: np.ndarray
) -> np.ndarray:
    """For each queried pair, the latest time among source events of that pair, else _NO_TIME."""
    if not source.any() or len(queried) == 0:
        return np.full(len(queried), _NO_TIME, dtype=np.int64)
    order = np.lexsort((times[source], pairs[source]))
    sorted_pairs, sorted_times = pairs[source][order], times[source][order]
    last_of_pair = np.append(sorted_pairs[1:] != sorted_pairs[:-1], True)
    known_pairs, latest = sorted_pairs[last_of_pair], sorted_times[last_of_pair]
    found = np.minimum(np.searchsorted(known_pairs, queried), len(known_pairs) - 1)
    return np.where(known_pairs[found] == queried, latest[found], _NO_TIME)


def _negative_pairs(coded: _CodedEvents, rules: RankingRules) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of items whose latest explicit feedback from the user is negative.

    Events without a time count as older than every timed one; equal times keep frame order.
    """
    rated = coded.of_type((RATE,))
    explicit = coded.of_type(EXPLICIT_FEEDBACK_EVENT_TYPES) & ~(rated & np.isnan(coded.values))
    candidates = np.flatnonzero(explicit)
    if len(candidates) == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    pairs = coded.pairs[candidates]
    # lexsort is stable, so among equal (pair, time) the later event stays later.
    candidates = candidates[np.lexsort((coded.times[candidates], pairs))]
    pairs = coded.pairs[candidates]
    latest = candidates[np.append(pairs[1:] != pairs[:-1], True)]
    latest_types = coded.types.to_numpy()[latest]
    negative = (latest_types == DISLIKE) | (
        (latest_types == RATE) & (coded.values[latest] <= rules.low_rating_threshold)
    )
    return coded.users[latest[negative]], coded.items[latest[negative]]


def _negative_feedback_penalty(
    coded: _CodedEvents, vectors: np.ndarray, rules: RankingRules
) -> np.ndarray:
    """negative_feedback_penalty on coded events and unit-length item vectors."""
    n_users, n_items = coded.shape
    rows = np.repeat(np.arange(n_users), n_items)
    columns = np.tile(np.arange(n_items), n_users)
    return _negative_feedback_at(coded, vectors.__getitem__, rules, rows, columns).reshape(
        coded.shape
    )


def _negative_feedback_at(
    coded: _CodedEvents,
    vectors_of: Callable[[np.ndarray], np.ndarray],
    rules: RankingRules,
    rows: np.ndarray,
    columns: np.ndarray,
) -> np.ndarray:
    """The negative feedback multiplier of each cell (rows[i], columns[i]); ``vectors_of``
    gives item positions' unit vectors."""
    multipliers = np.ones(len(rows))
    users, items = _negative_pairs(coded, rules)
    if rules.negative_feedback_strength == 0 or len(users) == 0 or len(rows) == 0:
        return multipliers
    order = np.argsort(users, kind="stable")
    negative_users, starts = np.unique(users[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    negative_items = items[order]
    # The cells of users with negative feedback, grouped by user.
    found = np.minimum(np.searchsorted(negative_users, rows), len(negative_users) - 1)
    affected = np.flatnonzero(negative_users[found] == rows)
    if not len(affected):
        return multipliers
    affected = affected[np.argsort(rows[affected], kind="stable")]
    cuts = np.flatnonzero(np.diff(rows[affected])) + 1
    # The vectors of the items compared only: a block's candidates reach tens of thousands.
    needed = np.unique(np.concatenate([columns[affected], negative_items]))
    vectors = vectors_of(needed)
    # One small product per user: threaded BLAS would spend more starting and waiting for its
    # threads than multiplying, many times more when anything else shares the cores.
    with threadpool_limits(limits=1, user_api="blas"):
        for group in np.split(affected, cuts):
            user = found[group[0]]
            mine = np.searchsorted(needed, negative_items[starts[user] : ends[user]])
            similarity = vectors[np.searchsorted(needed, columns[group])] @ vectors[mine].T
            # Clipped at 0 (an opposite item is not rewarded) and 1 (rounding can pass it).
            closest = np.clip(similarity.max(axis=1), 0.0, 1.0)
            multipliers[group] = 1.0 - rules.negative_feedback_strength * closest
    return multipliers


def _unit_rows(item_vectors: np.ndarray, n_items: int) -> np.ndarray:
    """Item vectors scaled to unit length (zero rows stay zero), after checking their shape."""
    vectors = np.asarray(item_vectors)
    if vectors.ndim != 2 or vectors.shape[0] != n_items:
        raise ValueError(
            f"item_vectors has shape {vectors.shape} but must be items x dim with {n_items} "
            f"rows, one per item id, in item_ids order"
        )
    if not np.issubdtype(vectors.dtype, np.floating):
        vectors = vectors.astype(float)
    if not np.isfinite(vectors).all():
        raise ValueError("item_vectors contains NaN or infinite values; re-embed those items")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def _rescale_rows(values: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """Each row mapped to [0, 1] over its allowed entries: MMR's relevance.

    Subtracts min(row minimum, 0) and divides by the span up to the row maximum: non-negative
    rows become value / max (0 stays 0), rows with negative values are min-max scaled, rows
    with no spread become 0. Values must be finite; excluded entries come back meaningless.
    """
    allowed = ~excluded
    top = np.max(values, axis=1, where=allowed, initial=-np.inf)
    bottom = np.minimum(np.min(values, axis=1, where=allowed, initial=np.inf), 0.0)
    spread = top - bottom
    spread_ok = np.isfinite(spread) & (spread > 0)
    shift = np.where(spread_ok, bottom, 0.0)
    scale = np.divide(1.0, spread, out=np.zeros_like(spread), where=spread_ok)
    return (values - shift[:, None]) * scale[:, None]


def _mmr_block(
    values: np.ndarray, vectors: np.ndarray, width: int, pool: int, lambda_: float
) -> np.ndarray:
    """mmr_rerank for one block of rows."""
    candidates = top_k_indices(values, pool)  # best first, ties to the lower column
    candidate_scores = np.take_along_axis(values, candidates, axis=1)
    pickable = ~np.isneginf(candidate_scores)
    relevance = _rescale_rows(np.where(pickable, candidate_scores, 0.0), ~pickable)
    candidate_vectors = vectors[candidates]
    similarity = candidate_vectors @ candidate_vectors.transpose(0, 2, 1)
    closest = np.zeros(relevance.shape)
    picks = np.full((len(values), width), -1, dtype=np.intp)
    rows = np.arange(len(values))
    for place in range(width):
        gain = lambda_ * relevance - (1.0 - lambda_) * closest
        gain[~pickable] = -np.inf
        best = np.argmax(gain, axis=1)  # the first maximum: the better-scored candidate
        found = pickable[rows, best]
        if not found.any():
            break
        picks[found, place] = candidates[rows[found], best[found]]
        pickable[rows, best] = False
        np.maximum(closest, similarity[rows, best], out=closest)
    return picks


def _event_weights(events: pd.DataFrame, event_weights: Mapping[str, float]) -> np.ndarray:
    """Each event's interaction weight, as the warehouse computes it; negatives become 0."""
    types = pd.Series(events[EVENT_TYPE].to_numpy(dtype=object))
    weights = types.map(dict(event_weights)).to_numpy(dtype=float)
    rated = (types == RATE).to_numpy()
    if rated.any():
        if VALUE in events.columns:
            values = pd.to_numeric(events[VALUE], errors="coerce").to_numpy(dtype=float)
        else:
            values = np.full(len(events), np.nan)
        # A rating without its value says nothing about taste: it weighs 0.
        weights[rated] *= np.nan_to_num(values[rated] / RATING_MAX, nan=0.0)
    return np.maximum(np.nan_to_num(weights, nan=0.0), 0.0)


def _decayed_weights(
    events: pd.DataFrame, half_life_days: float, event_weights: Mapping[str, float]
) -> np.ndarray:
    """Each event's weight halved per half_life_days before the newest event; 0 without time."""
    if not half_life_days > 0:
        raise ValueError(f"half_life_days must be positive, got {half_life_days!r}")
    require_columns(events, (ITEM_ID, EVENT_TYPE, OCCURRED_AT), name="events")
    times = _event_nanoseconds(events[OCCURRED_AT])
    timed = times != _NO_TIME
    decayed = np.zeros(len(events))
    if timed.any():
        age_days = (times[timed].max() - times[timed]) / pd.Timedelta(days=1).value
        decayed[timed] = _event_weights(events, event_weights)[timed] * np.exp2(
            -age_days / half_life_days
        )
    return decayed


def _event_context_values(events: pd.DataFrame, context_key: str) -> pd.Series:
    """Each event's normalised context value (None when it has none), default index."""
    found = pd.Series([None] * len(events), dtype=object)
    if CONTEXT in events.columns:
        cells = pd.Series(events[CONTEXT].to_numpy(dtype=object))
        # Contexts repeat a lot: parse each distinct one once.
        texts = cells.map(_context_text)
        codes, distinct = pd.factorize(texts)
        parsed = np.array(
            [_normalise_context_value(_context_field(text, context_key)) for text in distinct]
            + [None],
            dtype=object,
        )
        found[:] = parsed[codes]  # code -1 (no context) picks the trailing None
    missing = found.isna().to_numpy()
    if missing.any() and context_key in _TIME_CONTEXTS and OCCURRED_AT in events.columns:
        times = events[OCCURRED_AT]
        _require_datetimes(times)
        derived = getattr(times.dt, _TIME_CONTEXTS[context_key]).to_numpy(dtype=float)[missing]
        found[missing] = [None if np.isnan(value) else str(int(value)) for value in derived]
    return found


def _context_text(cell: object) -> str | None:
    """A context cell as hashable JSON text (mappings encoded), None when absent."""
    if isinstance(cell, str):
        return cell
    if isinstance(cell, Mapping):
        return json.dumps(dict(cell), sort_keys=True, default=str)
    return None


def _context_field(context: object, context_key: str) -> object:
    """The `context_key` field of a context given as JSON text or a mapping, else None.

    Text that is not a JSON object has no fields: it is treated as no context, not an error,
    because context is free-form and one bad row must not stop trending.
    """
    if isinstance(context, Mapping):
        return context.get(context_key)
    if not isinstance(context, str) or context_key not in context:
        return None
    try:
        parsed = json.loads(context)
    except ValueError:
        return None
    return parsed.get(context_key) if isinstance(parsed, dict) else None


def key_problem(text: str) -> str | None:
    """Why ``text`` cannot key a served list (the serving store's ids and context values), or
    None: longer than MAX_ID_LENGTH characters, or holding a control character. Ingestion
    quarantines ids for the same reasons, in SQL (orchestration/ingest/rules.py)."""
    if len(text) > MAX_ID_LENGTH:
        return f"is {len(text)} characters long; an id may be at most {MAX_ID_LENGTH}"
    if re.search(CONTROL_CHARACTER, text):
        return "holds a control character (such as NUL, a tab or a line break)"
    return None


def _normalise_context_value(value: object) -> str | None:
    """A context value as text: whole numbers without decimals, booleans lower case, else None.

    9, 9.0 and "09" all become "9", so a request's hour matches the events' hours. Text that
    could not key a served list (longer than an id may be, or holding a control character) is
    no context: trending for it could never be published.
    """
    if value is None or isinstance(value, Mapping | list | tuple):
        return None
    if isinstance(value, bool | np.bool_):
        return str(bool(value)).lower()
    text = str(value).strip()
    if key_problem(text) is not None:
        return None
    try:
        number = float(text)
    except ValueError:
        return text or None
    if np.isnan(number):
        return None
    return str(int(number)) if number.is_integer() else text


def display_titles(items: np.ndarray, titles: pd.Series) -> np.ndarray:
    """display_title of many items at once (one look-up, not one per item)."""
    found = titles.reindex(pd.Index(items, dtype=object)).to_numpy(dtype=object)
    usable = np.asarray(pd.notna(found), dtype=bool)
    usable[usable] = pd.Series(found[usable]).astype(str).str.strip().to_numpy() != ""
    shown = np.array([str(item) for item in items], dtype=object)
    shown[usable] = [str(title) for title in found[usable]]
    return shown


def display_title(item: Hashable, titles: Mapping[Hashable, str] | pd.Series) -> str:
    """The item's title, or its id when it has no usable title."""
    title = titles.get(item)
    if title is None or (not isinstance(title, str) and pd.isna(title)) or not str(title).strip():
        return str(item)
    return str(title)
