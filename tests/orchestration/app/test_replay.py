from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from orchestration.app.replay import _served, summarise


def test_users_without_a_list_are_shown_the_trending_list() -> None:
    lists = pd.DataFrame({"user_id": ["u1", "u1"], "item_id": ["a", "b"], "rank": [1, 2]})
    trending = pd.DataFrame({"item_id": ["t1", "t2", "t3"], "rank": [1, 2, 3]})
    shown = _served(lists, trending, ["u1", "new"], k=2)
    by_user = shown.sort_values("rank").groupby("user_id")["item_id"].apply(list).to_dict()
    assert by_user == {"u1": ["a", "b"], "new": ["t1", "t2"]}


def test_summary_weights_steps_by_users() -> None:
    rows = []
    for batch, (users, stale, fresh) in enumerate([(10, 0.9, 0.9), (10, 0.1, 0.3), (30, 0.1, 0.2)]):
        rows.append(
            {
                "batch": batch + 1,
                "segment": "all users",
                "users": users,
                "stale_ndcg@10": stale,
                "refreshed_ndcg@10": fresh,
                "request_time_ndcg@10": fresh / 2,
                "stale_recall@10": stale,
                "refreshed_recall@10": fresh,
                "request_time_recall@10": fresh / 2,
                "refresh_seconds": 2.0 + batch,
            }
        )
    summary = summarise(pd.DataFrame(rows)).iloc[0]
    assert summary["user-batches"] == 50
    assert np.isclose(summary["stale_ndcg@10"], (10 * 0.9 + 10 * 0.1 + 30 * 0.1) / 50)
    assert np.isclose(summary["refreshed_ndcg@10"], (10 * 0.9 + 10 * 0.3 + 30 * 0.2) / 50)
    assert np.isclose(summary["request_time_ndcg@10"], (10 * 0.9 + 10 * 0.3 + 30 * 0.2) / 100)
    assert np.isclose(summary["ndcg_lift"], 18 / 13)
    assert np.isclose(summary["request_time_ndcg_lift"], 9 / 13)
    assert summary["median_refresh_seconds"] == 3.0


def _events(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def test_sessions_are_cut_across_each_refresh() -> None:
    from orchestration.app.replay import session_steps

    # Two slices of four events. In slice 1, u1 has three events (one opens its session) and u2
    # one (cold); in slice 2, u1 has two events and u3 two.
    stream = _events(
        [
            ("u1", "a", 1),
            ("u2", "x", 2),
            ("u1", "b", 3),
            ("u1", "c", 4),
            ("u3", "p", 5),
            ("u1", "d", 6),
            ("u3", "q", 7),
            ("u1", "e", 8),
        ]
    )
    steps = session_steps(stream, batches=2, reveal_fraction=0.5)
    assert len(steps) == 2
    pairs = [
        (
            sorted(zip(landed["user_id"], landed["item_id"], strict=True)),
            sorted(zip(evaluated["user_id"], evaluated["item_id"], strict=True)),
        )
        for landed, evaluated in steps
    ]
    assert pairs[0] == ([("u1", "a")], [("u1", "b"), ("u1", "c"), ("u2", "x")])
    # Step 2 lands slice 1's continuations and slice 2's openings.
    assert pairs[1] == (
        [("u1", "b"), ("u1", "c"), ("u1", "d"), ("u2", "x"), ("u3", "p")],
        [("u1", "e"), ("u3", "q")],
    )
    # Every event lands once, except the last continuations, which nothing comes after.
    landed_total = sum(len(landed) for landed, _ in steps)
    assert landed_total == len(stream) - len(steps[-1][1])


def test_session_steps_refuses_zero_batches() -> None:
    import pytest

    from orchestration.app.replay import session_steps

    with pytest.raises(ValueError, match="batches"):
        session_steps(_events([("u1", "a", 1)]), batches=0)


def test_the_replay_reuses_the_demo_item_vectors(settings, tmp_path) -> None:
    import dataclasses

    import duckdb

    from orchestration.app.replay import reuse_item_embeddings

    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(settings.warehouse_path)) as connection:
        connection.execute("create schema ml")
        connection.execute(
            "create table ml.item_embeddings as select * from (values "
            "('a', [1.0, 0.0, 0.0]::float[3], 'h1'), ('b', [0.0, 1.0, 0.0]::float[3], 'h2')) "
            "as rows(item_id, vector, content_hash)"
        )
    target = dataclasses.replace(settings, warehouse_path=tmp_path / "replay" / "warehouse.duckdb")
    target.warehouse_path.parent.mkdir(parents=True)
    assert reuse_item_embeddings(settings, target) == 2
    with duckdb.connect(str(target.warehouse_path), read_only=True) as connection:
        copied = connection.sql("select item_id, vector from ml.item_embeddings order by 1")
        assert copied.types[1] == "FLOAT[3]"
        assert copied.fetchall()[1][0] == "b"
    # Nothing to reuse: a deployment without vectors, or the same warehouse.
    assert reuse_item_embeddings(settings, settings) == 0


def test_request_time_applies_the_landed_events_to_the_stale_lists(settings) -> None:
    from orchestration.app.replay import _as_recent_events, _personalised
    from orchestration.serving.pools import pack_pools

    lists = pd.DataFrame(
        {
            "user_id": ["u1"] * 3,
            "rank": [1, 2, 3],
            "item_id": ["a", "b", "c"],
            "score": [0.9, 0.8, 0.7],
            "reason": ["x"] * 3,
        }
    )
    candidates = pd.concat(
        [lists, lists.head(1).assign(rank=4, item_id="d", score=0.6)], ignore_index=True
    )
    related = pd.DataFrame(
        {"item_id": ["z"], "rank": [1], "related_item_id": ["r"], "score": [0.9], "reason": ["t"]}
    )
    trending = pd.DataFrame(
        {"rank": [1, 2, 3], "item_id": ["t1", "t2", "t3"], "score": [3.0, 2.0, 1.0]}
    ).assign(reason="popular")
    landed = pd.DataFrame(
        {
            "user_id": ["u1", "new", "new"],
            "item_id": ["a", "z", "t1"],
            "event_type": ["rate", "rate", "rate"],
            "timestamp": [100, 100, 200],
            "value": [4.0, 5.0, 1.0],
        }
    )
    events = _as_recent_events(landed)
    assert events["occurred_at"].iloc[0] == pd.Timestamp("1970-01-01 00:01:40")
    four = dataclasses.replace(settings, top_k=4)
    pools = dict(pack_pools(candidates).to_numpy().tolist())
    shown = _personalised(lists, pools, related, trending, events, ["u1", "new", "o"], four)
    by_user = shown.sort_values("rank").groupby("user_id")["item_id"].apply(list).to_dict()
    # u1 rated a: it leaves, d moves in, trending fills up; the new user's good rating of z
    # brings r, then trending without t1 (rated); a user without events sees trending.
    assert by_user == {
        "u1": ["b", "c", "d", "t1"],
        "new": ["r", "t2", "t3"],
        "o": ["t1", "t2", "t3"],
    }
