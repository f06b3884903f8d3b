"""From a scorer and each user's behaviour to ranked lists: scores, rules, trending, reasons."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from ml.constants import AVAILABLE, ITEM_ID, RANK, REASON, SCORE, TITLE, USER_ID
from ml.ranking import rank_lists
from ml.rules import (
    RankingRules,
    excluded_mask,
    feedback_multipliers,
    mmr_rerank,
    negative_feedback_penalty,
    new_item_reasons,
)

FIRST_RANKING_VERSION = "baseline:itemknn+trending"
USERS_PER_BLOCK = 2000  # bounds the dense users x items score matrix


class HistoryScorer(Protocol):
    """Anything that scores users from their histories (baselines and the sequential model)."""

    @property
    def item_ids(self) -> np.ndarray: ...

    def score(self, histories: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class UserBehaviour:
    """What ranking needs to know about the users being ranked."""

    histories: pd.DataFrame  # user_id, item_id, weight, occurred_at: recent positive events
    consumed: pd.DataFrame  # user_id, item_id pairs never to recommend back
    events: pd.DataFrame  # user_id, item_id, event_type, occurred_at, value, context


def unavailable_items(items: pd.DataFrame) -> pd.Series:
    """Ids of catalog items marked unavailable (a missing flag means available)."""
    if AVAILABLE not in items:
        return pd.Series([], dtype=object)
    flags = items[AVAILABLE].astype("boolean").fillna(True)
    return items.loc[~flags.to_numpy(dtype=bool), ITEM_ID]


def empty_lists() -> pd.DataFrame:
    return pd.DataFrame(
        {
            USER_ID: pd.Series(dtype=str),
            RANK: pd.Series(dtype="int64"),
            ITEM_ID: pd.Series(dtype=str),
            SCORE: pd.Series(dtype=float),
            REASON: pd.Series(dtype=str),
        }
    )


def rank_users(
    scorer: HistoryScorer,
    users: Sequence[str],
    behaviour: UserBehaviour,
    trending: pd.Series,
    items: pd.DataFrame,
    k: int,
    *,
    trending_blend: float,
    rules: RankingRules | None = None,
    item_vectors: pd.DataFrame | None = None,
    similarity=None,
    new_item_ids: frozenset[str] = frozenset(),
) -> tuple[pd.DataFrame, int]:
    """Lists for ``users`` and how many of them had no usable history (trending only).

    Model scores are blended with trending, the feedback rules demote and exclude, consumed and
    unavailable items are removed, and every row gets a reason.
    """
    rules = rules or RankingRules()
    user_index = pd.Index(sorted({str(user) for user in users}))
    item_ids = np.asarray(scorer.item_ids)
    vectors = (
        item_vectors.reindex(pd.Index(item_ids)).fillna(0.0).to_numpy(dtype=np.float32)
        if item_vectors is not None and not item_vectors.empty
        else None
    )
    unavailable = unavailable_items(items).tolist()
    titles = items.set_index(ITEM_ID)[TITLE] if TITLE in items else None
    consumed = behaviour.consumed[~behaviour.consumed[ITEM_ID].isin(rules.rebuyable_item_ids)]
    is_new = np.isin(item_ids, list(new_item_ids)) if new_item_ids else None
    parts, fallback = [], 0
    for start in range(0, len(user_index), USERS_PER_BLOCK):
        block = user_index[start : start + USERS_PER_BLOCK]
        histories = behaviour.histories[behaviour.histories[USER_ID].isin(block)]
        events = behaviour.events[behaviour.events[USER_ID].isin(block)]
        scores = np.zeros((len(block), len(item_ids)))
        if not histories.empty:
            scored_users, scored = scorer.score(histories)
            rows = block.get_indexer(pd.Index(scored_users))
            scores[rows[rows >= 0]] = scored[rows >= 0]
        fallback += int((~scores.any(axis=1)).sum())
        multipliers = feedback_multipliers(events, block, item_ids, rules)
        if vectors is not None:
            multipliers = multipliers * negative_feedback_penalty(
                events, block, item_ids, vectors, rules
            )
        diversify = rules.mmr_lambda is not None and vectors is not None
        lists = rank_lists(
            scores,
            block,
            item_ids,
            consumed[consumed[USER_ID].isin(block)],
            trending,
            max(5 * k, 50) if diversify else k,
            trending_blend=trending_blend,
            unavailable=unavailable,
            titles=titles,
            similarity=similarity,
            multipliers=multipliers,
            excluded=excluded_mask(events, block, item_ids, rules, unavailable),
            is_new=is_new,
            new_item_slots=rules.new_item_slots,
        )
        if diversify:
            lists = _diversify(lists, block, item_ids, vectors, k, rules.mmr_lambda)
        if vectors is not None and new_item_ids:
            lists = _explain_new_items(lists, histories, item_ids, vectors, titles, new_item_ids)
        parts.append(lists)
    lists = pd.concat(parts, ignore_index=True) if parts else empty_lists()
    return lists, fallback


def _diversify(
    lists: pd.DataFrame,
    users: pd.Index,
    item_ids: np.ndarray,
    vectors: np.ndarray,
    k: int,
    mmr_lambda: float,
) -> pd.DataFrame:
    """Re-pick each user's k items from their candidates by maximal marginal relevance.

    Scores stay the candidates' relevance, capped so they never rise down the list.
    """
    item_index = pd.Index(item_ids)
    rows = users.get_indexer(lists[USER_ID])
    columns = item_index.get_indexer(lists[ITEM_ID])
    candidate_scores = np.full((len(users), len(item_ids)), -np.inf)
    candidate_scores[rows, columns] = lists[SCORE].to_numpy()
    picks = mmr_rerank(candidate_scores, vectors, k, mmr_lambda)
    by_pair = lists.set_index([USER_ID, ITEM_ID])[REASON]
    chosen = []
    for row, user in enumerate(users):
        picked = [column for column in picks[row] if column >= 0]
        scores = np.minimum.accumulate(candidate_scores[row, picked]) if picked else []
        for rank, (column, score) in enumerate(zip(picked, scores, strict=True), start=1):
            item = item_ids[column]
            chosen.append((user, rank, item, float(score), by_pair[(user, item)]))
    if not chosen:
        return empty_lists()
    return pd.DataFrame(chosen, columns=[USER_ID, RANK, ITEM_ID, SCORE, REASON])


def _explain_new_items(
    lists: pd.DataFrame,
    histories: pd.DataFrame,
    item_ids: np.ndarray,
    vectors: np.ndarray,
    titles: pd.Series | None,
    new_item_ids: frozenset[str],
) -> pd.DataFrame:
    """Items nobody has touched yet say which of the user's items they resemble."""
    is_new = lists[ITEM_ID].isin(new_item_ids)
    if not is_new.any():
        return lists
    history_events = histories.assign(event_type="view")
    reasons = new_item_reasons(lists[is_new], history_events, item_ids, vectors, titles)
    lists.loc[reasons.dropna().index, REASON] = reasons.dropna()
    return lists
