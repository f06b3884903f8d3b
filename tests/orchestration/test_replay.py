from __future__ import annotations

import numpy as np
import pandas as pd

from orchestration.replay import _served, summarise


def test_users_without_a_list_are_shown_the_trending_list() -> None:
    lists = pd.DataFrame({"user_id": ["u1", "u1"], "item_id": ["a", "b"], "rank": [1, 2]})
    trending = pd.DataFrame({"item_id": ["t1", "t2", "t3"], "rank": [1, 2, 3]})
    shown = _served(lists, trending, ["u1", "new"], k=2)
    by_user = shown.sort_values("rank").groupby("user_id")["item_id"].apply(list).to_dict()
    assert by_user == {"u1": ["a", "b"], "new": ["t1", "t2"]}


def test_summary_weights_batches_by_users_and_skips_the_first() -> None:
    rows = []
    for batch, (users, stale, fresh) in enumerate([(10, 0.9, 0.9), (10, 0.1, 0.3), (30, 0.1, 0.2)]):
        rows.append(
            {
                "batch": batch + 1,
                "segment": "all users",
                "users": users,
                "stale_ndcg@10": stale,
                "refreshed_ndcg@10": fresh,
                "stale_recall@10": stale,
                "refreshed_recall@10": fresh,
                "refresh_seconds": 2.0 + batch,
            }
        )
    summary = summarise(pd.DataFrame(rows)).iloc[0]
    assert summary["user-batches"] == 40
    assert np.isclose(summary["stale_ndcg@10"], 0.1)
    assert np.isclose(summary["refreshed_ndcg@10"], (10 * 0.3 + 30 * 0.2) / 40)
    assert np.isclose(summary["ndcg_lift"], summary["refreshed_ndcg@10"] / 0.1)
    assert summary["median_refresh_seconds"] == 3.0
