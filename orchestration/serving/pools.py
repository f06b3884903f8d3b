"""Candidate pools as the serving store keeps them: one row a user, the pool packed in it.

Request-time personalisation re-ranks a user's pool (their best-scored candidates, more than
the list holds; orchestration.serving.personalise). It always reads a user's whole pool, so
the store keeps each pool as one JSON text, ``[[item ids], [scores], [reasons]]`` best first,
rather than a row a candidate: a full publish of a million users writes a million rows where
it wrote fifty million, and a request reads one row where it read fifty.

Pools are packed where the users are ranked (a worker process, a Ray task), so that only the
packed text travels back to the process that writes the store.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ml.constants import ITEM_ID, RANK, REASON, SCORE, USER_ID

if TYPE_CHECKING:
    from ml.pipeline.pipeline import RankingPipeline
    from ml.pipeline.snapshot import Behaviour

POOL = "pool"
POOL_COLUMNS = (USER_ID, POOL)


def pack_pools(candidates: pd.DataFrame) -> pd.DataFrame:
    """One row a user (user_id, pool) from candidate rows (user_id, rank, item_id, score,
    reason), each user's pool in rank order."""
    if candidates.empty:
        return pd.DataFrame({USER_ID: pd.Series(dtype=object), POOL: pd.Series(dtype=object)})
    ordered = candidates.sort_values([USER_ID, RANK], kind="stable")
    users = ordered[USER_ID].astype(str).to_numpy()
    items = ordered[ITEM_ID].astype(str).tolist()
    scores = ordered[SCORE].astype(float).tolist()
    reasons = ordered[REASON].astype(str).tolist()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    pools = [
        json.dumps([items[start:end], scores[start:end], reasons[start:end]])
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True)
    ]
    return pd.DataFrame({USER_ID: users[starts], POOL: pools})


def unpack_pool(text: str | None) -> list[dict[str, Any]]:
    """A packed pool's candidates as rows (item_id, score, reason), best first."""
    if not text:
        return []
    items, scores, reasons = json.loads(text)
    return [
        {ITEM_ID: item, SCORE: score, REASON: reason}
        for item, score, reason in zip(items, scores, reasons, strict=True)
    ]


def rank_for_serving(
    pipeline: RankingPipeline, behaviour: Behaviour, candidates: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the users' lists, their packed pools of ``candidates`` candidates): what a publish
    writes, ranked by the pipeline that evaluation and the MLflow model use."""
    lists, pool = pipeline.recommend_with_candidates(behaviour, candidates=candidates)
    return lists, pack_pools(pool)
