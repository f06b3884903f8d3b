"""From marts to ranked lists: fit a recommender, score users from their histories, rank."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from ml.constants import AVAILABLE, DEFAULT_TRENDING_BLEND, ITEM_ID, TITLE, USER_ID
from ml.models.baselines import ItemKNNRecommender
from ml.ranking import rank_lists

FIRST_RANKING_VERSION = "baseline:itemknn+trending"
USERS_PER_CHUNK = 2000  # bounds the dense users x items score matrix


class HistoryScorer(Protocol):
    """Anything that scores users from their histories (baselines and the sequential model)."""

    @property
    def item_ids(self) -> np.ndarray: ...

    def score(self, histories: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class RankedLists:
    """Lists (user_id, rank, item_id, score, reason), the version that made them, and fallbacks."""

    lists: pd.DataFrame
    model_version: str
    fallback_users: int


def unavailable_items(items: pd.DataFrame) -> pd.Series:
    """Ids of catalog items marked unavailable (a missing flag means available)."""
    if AVAILABLE not in items:
        return pd.Series([], dtype=object)
    flags = items[AVAILABLE].astype("boolean").fillna(True)
    return items.loc[~flags.to_numpy(dtype=bool), ITEM_ID]


def rank_users(
    scorer: HistoryScorer,
    histories: pd.DataFrame,
    consumed: pd.DataFrame,
    trending: pd.Series,
    items: pd.DataFrame,
    user_ids: Iterable[str],
    k: int,
    trending_blend: float = DEFAULT_TRENDING_BLEND,
    similarity=None,
) -> tuple[pd.DataFrame, int]:
    """Rank every user in ``user_ids``; users with no usable history get trending lists.

    Returns the lists and how many users fell back to trending.
    """
    users = pd.Index(sorted({str(user) for user in user_ids}))
    item_ids = scorer.item_ids
    unavailable = unavailable_items(items)
    titles = items.set_index(ITEM_ID)[TITLE] if TITLE in items else None
    chunks, fallback = [], 0
    for start in range(0, len(users), USERS_PER_CHUNK):
        chunk_users = users[start : start + USERS_PER_CHUNK]
        chunk_histories = histories[histories[USER_ID].isin(chunk_users)]
        scores = np.zeros((len(chunk_users), len(item_ids)))
        if not chunk_histories.empty:
            scored_users, scored = scorer.score(chunk_histories)
            rows = chunk_users.get_indexer(pd.Index(scored_users))
            scores[rows[rows >= 0]] = scored[rows >= 0]
        fallback += int((~scores.any(axis=1)).sum())
        chunks.append(
            rank_lists(
                scores,
                chunk_users,
                item_ids,
                consumed[consumed[USER_ID].isin(chunk_users)],
                trending,
                k,
                trending_blend=trending_blend,
                unavailable=unavailable.tolist(),
                titles=titles,
                similarity=similarity,
            )
        )
    return pd.concat(chunks, ignore_index=True), fallback


def first_ranking(
    interactions: pd.DataFrame,
    histories: pd.DataFrame,
    consumed: pd.DataFrame,
    trending: pd.DataFrame,
    items: pd.DataFrame,
    user_ids: Iterable[str],
    k: int,
    trending_blend: float = DEFAULT_TRENDING_BLEND,
) -> RankedLists:
    """Item-kNN over each user's recent history blended with trending; trending alone otherwise."""
    model = ItemKNNRecommender().fit(interactions, catalog_item_ids=items[ITEM_ID])
    trending_scores = trending.set_index(ITEM_ID)["decayed_score"]
    lists, fallback = rank_users(
        model,
        histories,
        consumed,
        trending_scores,
        items,
        user_ids,
        k,
        trending_blend=trending_blend,
        similarity=model.similarity,
    )
    return RankedLists(lists=lists, model_version=FIRST_RANKING_VERSION, fallback_users=fallback)
