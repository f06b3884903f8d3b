"""Configurable ranking rules: pure functions over users x items score matrices.

Every matrix here has one row per entry of `user_ids` and one column per entry of `item_ids`, in
the caller's order. Time always means event time (`occurred_at`), never the wall clock, so a
replay or a backfill ranks exactly as live traffic did; events without a time carry no order and
are left out of the rules that need one (they still count as consumption).

`apply_rules` composes the rules:
- exclusion: items the user consumed (any event but an impression), items they purchased and
  unavailable items come back as -inf. A rebuyable item is exempt from both the purchase and the
  consumption rule (buying it again is the point); nothing is exempt from unavailability.
- feedback: an item shown more than `free_impressions` times with no engagement at or after the
  impressions is multiplied by `impression_demotion` per extra impression, never below
  `min_impression_factor`; an item clicked or viewed with no add_to_cart/purchase at or after
  the click, by `click_without_conversion_factor` (once, however many clicks).
- negative feedback: an item is multiplied by 1 - strength x (its largest cosine similarity,
  clipped at 0, to an item whose latest like/dislike/rating from the user was negative).
- blend: model and trending scores are rescaled to [0, 1] over each user's remaining items and
  blended as in ml.ranking; the multipliers apply to the blend, which is never negative, so a
  multiplier below 1 always pushes an item down.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ml.constants import (
    CONTEXT,
    DEFAULT_CLICK_WITHOUT_CONVERSION_FACTOR,
    DEFAULT_CONTEXT_KEY,
    DEFAULT_CONTEXT_MIN_EVENTS,
    DEFAULT_EVENT_WEIGHTS,
    DEFAULT_FREE_IMPRESSIONS,
    DEFAULT_HISTORY_LENGTH,
    DEFAULT_IMPRESSION_DEMOTION,
    DEFAULT_LOW_RATING_THRESHOLD,
    DEFAULT_MIN_IMPRESSION_FACTOR,
    DEFAULT_MMR_MIN_CANDIDATES,
    DEFAULT_NEGATIVE_FEEDBACK_STRENGTH,
    DEFAULT_TRENDING_BLEND,
    DEFAULT_TRENDING_HALF_LIFE_DAYS,
    EVENT_TYPE,
    ITEM_ID,
    NON_CONSUMING_EVENT_TYPES,
    OCCURRED_AT,
    RATING_MAX,
    USER_ID,
    VALUE,
)
from ml.frames import require_columns, require_positive_k
from ml.ranking import top_k_indices

REASON_TRENDING_CONTEXT = "popular at this hour"
REASON_NEW_ITEM = "new: similar to {title}"

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
Titles = Mapping[Hashable, str] | pd.Series
_NO_TIME = np.iinfo(np.int64).min  # an event time (ns) earlier than any real one
_PAIR_BLOCK = 65_536  # (row, history item) pairs whose vectors are multiplied at once
_NEGATIVE_BLOCK = 1_024  # negative (user, item) pairs scored against every item at once
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
    trending_blend: float = DEFAULT_TRENDING_BLEND
    mmr_lambda: float | None = None

    def __post_init__(self) -> None:
        for name in ("impression_demotion", "click_without_conversion_factor"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must lie in (0, 1], got {value!r}")
        for name in ("min_impression_factor", "negative_feedback_strength", "trending_blend"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
        if isinstance(self.free_impressions, bool) or not (
            isinstance(self.free_impressions, int) and self.free_impressions >= 0
        ):
            raise ValueError(
                f"free_impressions must be a non-negative integer, got {self.free_impressions!r}"
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
    coded = _code_events(events, _unique_index(user_ids, "user_ids"), item_index)
    vectors = _unit_rows(item_vectors, len(item_index))
    return _negative_feedback_penalty(coded, vectors, rules)


def apply_rules(
    scores: np.ndarray,
    user_ids: Ids,
    item_ids: Ids,
    events: pd.DataFrame,
    rules: RankingRules,
    *,
    item_vectors: np.ndarray | None = None,
    trending: np.ndarray | pd.Series | None = None,
    unavailable: Iterable[Hashable] = (),
) -> np.ndarray:
    """Adjusted users x items scores in [0, 1], excluded items -inf (see the module docstring).

    `scores` may already hold -inf for items the caller excluded; NaN is refused. `trending` is
    a vector aligned to item_ids, a users x items matrix (e.g. per-user context trending) or a
    Series indexed by item id (missing items 0); negative trending counts 0. Without trending
    the result is the rescaled model score alone; without item_vectors there is no negative
    feedback rule. MMR is separate: pass the result to mmr_rerank when rules.mmr_lambda is set.
    """
    user_index = _unique_index(user_ids, "user_ids")
    item_index = _unique_index(item_ids, "item_ids")
    model = np.asarray(scores, dtype=float)
    shape = (len(user_index), len(item_index))
    if model.shape != shape:
        raise ValueError(f"scores has shape {model.shape} but user_ids x item_ids is {shape}")
    if np.isnan(model).any():
        raise ValueError("scores contains NaN; the model output is broken (use -inf to exclude)")
    if np.isposinf(model).any():
        raise ValueError("scores contains +inf; the model output is broken")

    coded = _code_events(events, user_index, item_index)
    excluded = _excluded_mask(coded, item_index, rules, unavailable) | np.isneginf(model)
    multipliers = _feedback_multipliers(coded, rules)
    if item_vectors is not None and rules.negative_feedback_strength > 0:
        vectors = _unit_rows(item_vectors, len(item_index))
        multipliers *= _negative_feedback_penalty(coded, vectors, rules)

    # Excluded cells are zeroed first so that no infinity enters the arithmetic.
    adjusted = _rescale_rows(np.where(excluded, 0.0, model), excluded)
    trending_matrix = _trending_matrix(trending, item_index, shape)
    if trending_matrix is not None and rules.trending_blend > 0:
        adjusted *= 1.0 - rules.trending_blend
        adjusted += rules.trending_blend * _rescale_rows(trending_matrix, excluded)
    adjusted *= multipliers
    adjusted[excluded] = -np.inf
    return adjusted


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
    if candidates is None:
        candidates = max(MMR_CANDIDATES_PER_PLACE * k, DEFAULT_MMR_MIN_CANDIDATES)
    require_positive_k(candidates)
    pool = min(max(candidates, width), n_items)
    picks = np.full((n_rows, width), -1, dtype=np.intp)
    if width == 0 or n_rows == 0:
        return picks
    block = max(1, _MMR_BLOCK_FLOATS // (pool * (pool + vectors.shape[1])))
    for start in range(0, n_rows, block):
        stop = min(start + block, n_rows)
        picks[start:stop] = _mmr_block(values[start:stop], vectors, width, pool, lambda_)
    return picks


def event_trending(
    events: pd.DataFrame,
    item_ids: Ids,
    half_life_days: float = DEFAULT_TRENDING_HALF_LIFE_DAYS,
    *,
    event_weights: Mapping[str, float] = DEFAULT_EVENT_WEIGHTS,
) -> np.ndarray:
    """Global trending per item (aligned to item_ids): decayed positive event weight, >= 0.

    Each event weighs event_weights[event_type] (a rating x value / RATING_MAX, 0 without a
    value; negative weights count 0) and halves every half_life_days before the newest event.
    This is the fallback that trending_for_context uses next to context_trending.
    """
    item_index = _unique_index(item_ids, "item_ids")
    decayed = _decayed_weights(events, half_life_days, event_weights)
    columns = item_index.get_indexer(events[ITEM_ID])
    counted = (columns >= 0) & (decayed > 0)
    return np.bincount(columns[counted], weights=decayed[counted], minlength=len(item_index))


def context_trending(
    events: pd.DataFrame,
    item_ids: Ids,
    context_key: str = DEFAULT_CONTEXT_KEY,
    half_life_days: float = DEFAULT_TRENDING_HALF_LIFE_DAYS,
    *,
    min_events: int = DEFAULT_CONTEXT_MIN_EVENTS,
    event_weights: Mapping[str, float] = DEFAULT_EVENT_WEIGHTS,
) -> dict[str, np.ndarray]:
    """Trending per context value: {value: scores aligned to item_ids}, as event_trending.

    An event's context value is its context JSON's `context_key` field, else (for "hour" and
    "weekday", Monday 0) read off occurred_at; values are text, whole numbers without a
    decimal point ("9", not "9.0"). Decay runs from the newest event of the whole frame, so
    contexts compare. A value with fewer than `min_events` events of positive weight on known
    items is left out: trending_for_context then falls back to global trending.
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


def trending_for_context(
    context_scores: Mapping[str, np.ndarray],
    context: object,
    global_trending: np.ndarray,
) -> tuple[np.ndarray, bool]:
    """The trending vector for a user's current context, and whether it is context-specific.

    `context` is a raw or normalised value (9, "9"); None, or a value context_trending left out
    for having too few events, falls back to `global_trending`. When the second element is
    True, REASON_TRENDING_CONTEXT describes the list; otherwise "trending now" does.
    """
    value = _normalise_context_value(context)
    if value is not None and value in context_scores:
        return np.asarray(context_scores[value], dtype=float), True
    return np.asarray(global_trending, dtype=float), False


def new_item_reasons(
    lists: pd.DataFrame,
    events: pd.DataFrame,
    item_ids: Ids,
    item_vectors: np.ndarray,
    titles: Titles | None = None,
    *,
    history_length: int = DEFAULT_HISTORY_LENGTH,
    event_weights: Mapping[str, float] = DEFAULT_EVENT_WEIGHTS,
) -> pd.Series:
    """REASON_NEW_ITEM for listed items nobody has interacted with; None for the other rows.

    `lists` holds (user_id, item_id) rows. An item is new when no event but an impression
    names it. Its reason names the item, among the user's `history_length` most recent items
    of positive weight, most similar by item_vectors (cosine; ties to the more recent); rows
    whose user has no history, or whose best similarity is not positive, get None. Titles come
    from `titles` (item id -> title), else the id. Aligned to lists.index.
    """
    require_columns(lists, (USER_ID, ITEM_ID), name="lists")
    require_columns(events, (USER_ID, ITEM_ID, EVENT_TYPE), name="events")
    require_positive_k(history_length)
    item_index = _unique_index(item_ids, "item_ids")
    vectors = _unit_rows(item_vectors, len(item_index))
    reasons = pd.Series(None, index=lists.index, dtype=object)

    interacted = events.loc[~events[EVENT_TYPE].isin(NON_CONSUMING_EVENT_TYPES), ITEM_ID]
    listed_columns = item_index.get_indexer(lists[ITEM_ID])
    new_rows = np.flatnonzero(
        (listed_columns >= 0) & ~lists[ITEM_ID].isin(interacted.unique()).to_numpy()
    )
    history = _recent_positive_history(events, item_index, history_length, event_weights)
    if len(new_rows) == 0 or history.empty:
        return reasons

    history_users = history[USER_ID].to_numpy()
    row_users = lists[USER_ID].to_numpy()[new_rows]
    user_codes, user_values = pd.factorize(pd.Index(history_users))
    row_codes = user_values.get_indexer(row_users)
    new_rows, row_codes = new_rows[row_codes >= 0], row_codes[row_codes >= 0]
    # history is sorted by user code of first appearance, most recent first within a user.
    order = np.argsort(user_codes, kind="stable")
    history_codes = user_codes[order]
    history_columns = history["column"].to_numpy()[order]
    history_items = history[ITEM_ID].to_numpy()[order]
    starts = np.searchsorted(history_codes, row_codes, side="left")
    counts = np.searchsorted(history_codes, row_codes, side="right") - starts
    pair_rows = np.repeat(np.arange(len(new_rows)), counts)
    pair_history = np.repeat(starts, counts) + (
        np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    )
    similarity = _pair_similarity(
        vectors, listed_columns[new_rows][pair_rows], history_columns[pair_history]
    )
    positive = similarity > 0
    pair_rows, pair_history = pair_rows[positive], pair_history[positive]
    # Within a row, the larger similarity wins, then the earlier (more recent) history item.
    best_first = np.lexsort((pair_history, -similarity[positive], pair_rows))
    explained, first = np.unique(pair_rows[best_first], return_index=True)
    title_of = dict(titles.items()) if titles is not None else {}
    names = [
        REASON_NEW_ITEM.format(title=_display_title(item, title_of))
        for item in history_items[pair_history[best_first[first]]]
    ]
    reasons.iloc[new_rows[explained]] = names
    return reasons


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
