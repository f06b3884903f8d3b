from __future__ import annotations

import pandas as pd

from ml.evaluation.protocol import build_task, sample_users, segment_metrics


def frame(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [row[0] for row in rows],
            "item_id": [row[1] for row in rows],
            "occurred_at": pd.to_datetime([row[2] for row in rows], unit="D"),
            "weight": 1.0,
        }
    )


TRAIN = frame([("old", "a", 1), ("old", "b", 2), ("x", "c", 3)])
HOLDOUT = frame(
    [
        ("old", "c", 10),
        ("old", "d", 11),
        ("new", "a", 12),
        ("new", "e", 13),
        ("new", "f", 14),
        ("new", "g", 15),
        ("solo", "b", 16),
    ]
)


def test_first_half_of_each_holdout_user_is_revealed() -> None:
    task = build_task(TRAIN, HOLDOUT, reveal_fraction=0.5)
    truth = set(zip(task.truth["user_id"], task.truth["item_id"], strict=True))
    # old: 2 holdout events, 1 revealed (c), truth d; new: 4 events, 2 revealed, truth f, g;
    # solo: 1 event, none revealed, truth b (scored cold).
    assert truth == {("old", "d"), ("new", "f"), ("new", "g"), ("solo", "b")}
    known = set(zip(task.histories["user_id"], task.histories["item_id"], strict=True))
    assert {("old", "a"), ("old", "b"), ("old", "c"), ("new", "a"), ("new", "e")} == known
    segments = dict(zip(task.segments["user_id"], task.segments["segment"], strict=True))
    assert segments == {"old": "returning_user", "new": "new_user", "solo": "new_user"}
    assert task.new_items == frozenset({"d", "e", "f", "g"})


def test_metrics_by_segment_known_answer() -> None:
    task = build_task(TRAIN, HOLDOUT, reveal_fraction=0.5)
    recommendations = pd.DataFrame(
        {
            "user_id": ["new", "new", "old", "old", "solo", "solo"],
            "item_id": ["b", "f", "d", "e", "a", "c"],
            "rank": [1, 2, 1, 2, 1, 2],
        }
    )
    table = segment_metrics(
        recommendations,
        task,
        2,
        catalog_size=7,
        item_popularity=pd.Series({"a": 2, "b": 1, "c": 1}),
    ).set_index("segment")
    assert table.loc["returning_user", "hit_rate@2"] == 1.0  # old: d at rank 1
    assert table.loc["returning_user", "ndcg@2"] == 1.0
    # new: f at rank 2 of truth {f, g}: DCG 1/log2(3), ideal 1 + 1/log2(3); solo: miss.
    new_user = (1 / 1.5849625007211562) / (1 + 1 / 1.5849625007211562) / 2
    assert abs(table.loc["new_user", "ndcg@2"] - new_user) < 1e-12
    assert table.loc["new_item_targets", "users"] == 2  # old (d) and new (f, g)
    assert table.loc["new_item_targets", "hit_rate@2"] == 1.0


def test_simultaneous_events_split_the_same_whatever_the_row_order() -> None:
    # A session rated at one second (as MovieLens often is): which half is revealed must not
    # depend on the order a database happened to return the rows in.
    holdout = frame([("new", item, 20) for item in "edcba"])
    tasks = [
        build_task(TRAIN, holdout.sample(frac=1.0, random_state=seed), reveal_fraction=0.5)
        for seed in range(5)
    ]
    truths = {tuple(sorted(task.truth["item_id"])) for task in tasks}
    assert truths == {("c", "d", "e")}  # ties broken by item id: a, b revealed


def test_sampled_task_keeps_whole_users_chosen_independently_of_order() -> None:
    holdout = frame([(f"u{n}", item, 20 + n) for n in range(40) for item in "abcd"])
    task = build_task(TRAIN, holdout, reveal_fraction=0.5)
    sampled = sample_users(task, 7)
    assert len(sampled.users) == 7
    for part in (sampled.truth, sampled.histories, sampled.segments):
        assert set(part["user_id"]) == set(sampled.users)
    # A chosen user keeps all their truth and history rows.
    chosen = sampled.users[0]
    assert len(sampled.truth[sampled.truth["user_id"] == chosen]) == len(
        task.truth[task.truth["user_id"] == chosen]
    )
    shuffled = build_task(TRAIN, holdout.sample(frac=1.0, random_state=3), reveal_fraction=0.5)
    assert list(sample_users(shuffled, 7).users) == list(sampled.users)
    assert sample_users(task, 40) is task
