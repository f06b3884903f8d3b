from __future__ import annotations

import threading
from datetime import datetime

import pandas as pd
import pytest

from orchestration.serving.store import ServingStore


def make_lists(users: list[str], k: int, version: str) -> pd.DataFrame:
    rows = []
    for user in users:
        for rank in range(1, k + 1):
            rows.append(
                {
                    "user_id": user,
                    "rank": rank,
                    "item_id": f"{version}-{rank}",
                    "score": 1.0 / rank,
                    "reason": "trending now",
                    "model_version": version,
                    "generated_at": datetime(2026, 1, 1, 12, 0, 0),
                }
            )
    return pd.DataFrame(rows)


def test_publish_all_replaces_every_list(serving_url: str) -> None:
    store = ServingStore(serving_url)
    store.publish(make_lists(["u1", "u2"], 3, "v1"))
    written = store.publish(make_lists(["u3"], 2, "v2"))
    assert written == 2
    lists = store.all_lists()
    assert set(lists["user_id"]) == {"u3"}
    assert store.summary()["rows"] == 2
    store.dispose()


def test_publish_for_users_keeps_other_users(serving_url: str) -> None:
    store = ServingStore(serving_url)
    store.publish(make_lists(["u1", "u2"], 3, "v1"))
    store.publish(make_lists(["u2"], 2, "v2"), users=["u2", "gone"])
    lists = store.all_lists()
    assert lists.groupby("user_id")["model_version"].first().to_dict() == {"u1": "v1", "u2": "v2"}
    assert len(store.recommendations("u2")) == 2
    assert store.recommendations("u1", k=2)["rank"].tolist() == [1, 2]
    assert store.recommendations("nobody").empty
    store.dispose()


def test_ids_are_strings(serving_url: str) -> None:
    store = ServingStore(serving_url)
    lists = make_lists(["007", "7"], 1, "v1")
    store.publish(lists)
    assert store.recommendations("007")["user_id"].tolist() == ["007"]
    assert store.recommendations("7")["user_id"].tolist() == ["7"]
    store.dispose()


def test_failed_publish_leaves_previous_lists(serving_url: str) -> None:
    store = ServingStore(serving_url)
    store.publish(make_lists(["u1"], 3, "v1"))
    broken = make_lists(["u1", "u1"], 2, "v2")  # duplicate (user_id, rank): violates the key
    with pytest.raises(Exception):  # noqa: B017 - the backend's own integrity error
        store.publish(broken)
    assert store.recommendations("u1")["model_version"].unique().tolist() == ["v1"]
    store.dispose()


def test_missing_column_is_a_clear_error(serving_url: str) -> None:
    store = ServingStore(serving_url)
    with pytest.raises(ValueError, match="reason"):
        store.publish(make_lists(["u1"], 1, "v1").drop(columns=["reason"]))
    store.dispose()


def test_reader_never_sees_a_partial_list(serving_url: str) -> None:
    writer = ServingStore(serving_url)
    reader = ServingStore(serving_url)
    k = 10
    writer.publish(make_lists(["u1", "u2"], k, "v0"))
    seen_sizes: list[int] = []
    seen_versions: list[int] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            rows = reader.recommendations("u1")
            seen_sizes.append(len(rows))
            seen_versions.append(rows["model_version"].nunique())

    thread = threading.Thread(target=poll)
    thread.start()
    for version in range(1, 31):
        writer.publish(make_lists(["u1", "u2"], k, f"v{version}"))
    done.set()
    thread.join()
    assert seen_sizes and set(seen_sizes) == {k}
    assert set(seen_versions) == {1}
    writer.dispose()
    reader.dispose()
