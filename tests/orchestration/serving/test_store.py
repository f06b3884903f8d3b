from __future__ import annotations

import threading
from datetime import datetime

import pandas as pd
import pytest
import sqlalchemy as sa

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


def test_users_listing_finds_the_served_lists_that_hold_items(serving_url: str) -> None:
    store = ServingStore(serving_url)
    store.publish(make_lists(["u1", "u2"], 3, "v1"))
    store.publish(make_lists(["u3"], 2, "v2"), users=["u3"])
    assert store.users_listing(["v1-3"]) == ["u1", "u2"]
    assert store.users_listing(["v2-1", "nowhere"]) == ["u3"]
    assert store.users_listing(["v1-1", "v2-2"]) == ["u1", "u2", "u3"]
    store.publish(make_lists(["u9"], 1, "v3"))  # a full publish: the older lists are gone
    assert store.users_listing(["v1-1"]) == []
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
    for version in range(1, 101):
        writer.publish(make_lists(["u1", "u2"], k, f"v{version}"))
    done.set()
    thread.join()
    assert seen_sizes and set(seen_sizes) == {k}
    assert set(seen_versions) == {1}
    writer.dispose()
    reader.dispose()


def make_trending(k: int, version: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "rank": list(range(1, k + 1)),
            "item_id": [f"{version}-hot-{rank}" for rank in range(1, k + 1)],
            "score": [1.0 / rank for rank in range(1, k + 1)],
            "reason": ["trending now"] * k,
            "model_version": [version] * k,
            "generated_at": [datetime(2026, 1, 1, 12, 0, 0)] * k,
        }
    )


def test_trending_is_replaced_with_the_lists(serving_url: str) -> None:
    store = ServingStore(serving_url)
    assert store.trending().empty
    store.publish(make_lists(["u1"], 3, "v1"), trending=make_trending(3, "v1"))
    store.publish(make_lists(["u1"], 3, "v2"), trending=make_trending(2, "v2"))
    trending = store.trending()
    assert trending["item_id"].tolist() == ["v2-hot-1", "v2-hot-2"]
    assert trending["rank"].tolist() == [1, 2]
    assert store.trending(k=1)["item_id"].tolist() == ["v2-hot-1"]
    assert store.summary()["trending"] == 2
    store.dispose()


def test_publish_without_trending_keeps_it_and_an_empty_one_clears_it(serving_url: str) -> None:
    store = ServingStore(serving_url)
    store.publish(make_lists(["u1"], 2, "v1"), trending=make_trending(2, "v1"))
    store.publish(make_lists(["u1"], 2, "v2"), users=["u1"])
    assert store.trending()["model_version"].unique().tolist() == ["v1"]
    store.publish(make_lists(["u1"], 2, "v3"), trending=make_trending(0, "v3"))
    assert store.trending().empty
    store.dispose()


def test_trending_times_are_stored_as_naive_utc(serving_url: str) -> None:
    store = ServingStore(serving_url)
    trending = make_trending(1, "v1")
    trending["generated_at"] = [pd.Timestamp("2026-01-01T13:00:00+01:00")]
    store.publish(make_lists(["u1"], 1, "v1"), trending=trending)
    assert store.trending()["generated_at"].tolist() == [pd.Timestamp("2026-01-01 12:00:00")]
    store.dispose()


@pytest.mark.parametrize("broken", ["lists", "trending"])
def test_failed_publish_leaves_lists_and_trending(serving_url: str, broken: str) -> None:
    store = ServingStore(serving_url)
    store.publish(make_lists(["u1"], 3, "v1"), trending=make_trending(3, "v1"))
    lists, trending = make_lists(["u1"], 2, "v2"), make_trending(2, "v2")
    # A duplicate key breaks the insert only once the transaction is under way.
    if broken == "lists":
        lists = pd.concat([lists, lists], ignore_index=True)
    else:
        trending = pd.concat([trending, trending], ignore_index=True)
    with pytest.raises(Exception):  # noqa: B017 - the backend's own integrity error
        store.publish(lists, trending=trending)
    assert store.all_lists()["model_version"].unique().tolist() == ["v1"]
    assert store.trending()["model_version"].unique().tolist() == ["v1"]
    assert store.summary()["trending"] == 3
    store.dispose()


def test_trending_missing_column_is_a_clear_error_and_writes_nothing(serving_url: str) -> None:
    store = ServingStore(serving_url)
    store.publish(make_lists(["u1"], 1, "v1"))
    with pytest.raises(ValueError, match="trending rows .*score"):
        store.publish(
            make_lists(["u1"], 1, "v2"), trending=make_trending(1, "v2").drop(columns="score")
        )
    assert store.all_lists()["model_version"].tolist() == ["v1"]
    store.dispose()


# The lists readers get: the served version's rows (a full publish writes the next beside them).
SERVED_LISTS = (
    "(SELECT * FROM recommendations WHERE version = "
    "(SELECT version FROM serving_versions WHERE table_name = 'recommendations')) AS served"
)


def read_while_publishing(
    reader: ServingStore, query: sa.TextClause, publish, publishes: int
) -> list[tuple]:
    """Rows of ``query`` read over and over by another thread while ``publish(version)`` runs
    for versions v01, v02, ...; at least one read is guaranteed."""
    seen: list[tuple] = []
    done = threading.Event()

    def poll() -> None:
        with reader.engine.connect() as connection:
            while not done.is_set():
                seen.append(tuple(connection.execute(query).one()))
                connection.rollback()

    thread = threading.Thread(target=poll)
    thread.start()
    for version in range(1, publishes + 1):
        publish(f"v{version:02d}")
    done.set()
    thread.join()
    assert seen
    return seen


def test_reader_sees_lists_and_trending_from_the_same_publish(serving_url: str) -> None:
    writer = ServingStore(serving_url)
    reader = ServingStore(serving_url)
    writer.publish(make_lists(["u1", "u2"], 5, "v0"), trending=make_trending(5, "v0"))
    # One statement reads one snapshot of both tables.
    both = sa.text(
        f"SELECT (SELECT MIN(model_version) FROM {SERVED_LISTS}), "
        f"(SELECT MAX(model_version) FROM {SERVED_LISTS}), "
        "(SELECT MIN(model_version) FROM trending_items), "
        "(SELECT MAX(model_version) FROM trending_items)"
    )
    seen = read_while_publishing(
        reader,
        both,
        lambda version: writer.publish(
            make_lists(["u1", "u2"], 5, version), trending=make_trending(5, version)
        ),
        publishes=100,
    )
    assert all(len(set(versions)) == 1 for versions in seen), [
        versions for versions in seen if len(set(versions)) != 1
    ][:3]
    writer.dispose()
    reader.dispose()


def make_context_trending(values: list[str], k: int, version: str) -> pd.DataFrame:
    """k rows per hour value; item ids name the version, the hour and the rank."""
    frames = [
        make_trending(k, version).assign(
            context_key="hour",
            context_value=hour,
            item_id=[f"{version}-{hour}h-{rank}" for rank in range(1, k + 1)],
            reason="popular at this hour",
        )
        for hour in values
    ]
    if not frames:
        return make_trending(0, version).assign(context_key=[], context_value=[])
    return pd.concat(frames, ignore_index=True)


def test_context_trending_round_trip(serving_url: str) -> None:
    store = ServingStore(serving_url)
    assert store.context_trending("hour", "9").empty
    store.publish(
        make_lists(["u1"], 2, "v1"),
        trending=make_trending(2, "v1"),
        context_trending=make_context_trending(["9", "21"], 3, "v1"),
    )
    nine = store.context_trending("hour", "9")
    assert nine["item_id"].tolist() == ["v1-9h-1", "v1-9h-2", "v1-9h-3"]
    assert nine["rank"].tolist() == [1, 2, 3]
    assert set(nine["reason"]) == {"popular at this hour"}
    assert set(nine["context_key"]) == {"hour"} and set(nine["context_value"]) == {"9"}
    assert nine["generated_at"].tolist() == [pd.Timestamp("2026-01-01 12:00:00")] * 3
    assert store.context_trending("hour", "21", k=2)["item_id"].tolist() == ["v1-21h-1", "v1-21h-2"]
    assert store.context_trending("hour", "3").empty
    assert store.context_trending("weekday", "9").empty
    assert store.context_trending("hour", "09").empty  # the store compares normalised text
    assert store.trending()["item_id"].tolist() == ["v1-hot-1", "v1-hot-2"]
    store.dispose()


def test_context_trending_is_replaced_whole_kept_without_it_and_cleared_by_empty(
    serving_url: str,
) -> None:
    store = ServingStore(serving_url)
    store.publish(
        make_lists(["u1"], 2, "v1"), context_trending=make_context_trending(["9", "21"], 3, "v1")
    )
    store.publish(
        make_lists(["u1"], 2, "v2"), context_trending=make_context_trending(["21"], 2, "v2")
    )
    assert store.context_trending("hour", "9").empty  # a value gone from the publish is gone
    assert store.context_trending("hour", "21")["item_id"].tolist() == ["v2-21h-1", "v2-21h-2"]
    store.publish(make_lists(["u1"], 2, "v3"), users=["u1"], trending=make_trending(1, "v3"))
    assert store.context_trending("hour", "21")["model_version"].unique().tolist() == ["v2"]
    store.publish(make_lists(["u1"], 2, "v4"), context_trending=make_context_trending([], 0, "v4"))
    assert store.context_trending("hour", "21").empty
    store.dispose()


def test_failed_context_trending_publish_leaves_everything(serving_url: str) -> None:
    store = ServingStore(serving_url)
    store.publish(
        make_lists(["u1"], 3, "v1"),
        trending=make_trending(3, "v1"),
        context_trending=make_context_trending(["9"], 3, "v1"),
    )
    broken = make_context_trending(["9"], 2, "v2")
    # A duplicate (context_key, context_value, rank) breaks the last insert of the transaction.
    with pytest.raises(Exception):  # noqa: B017 - the backend's own integrity error
        store.publish(
            make_lists(["u1"], 2, "v2"),
            trending=make_trending(2, "v2"),
            context_trending=pd.concat([broken, broken], ignore_index=True),
        )
    assert store.all_lists()["model_version"].unique().tolist() == ["v1"]
    assert store.trending()["model_version"].unique().tolist() == ["v1"]
    assert store.context_trending("hour", "9")["item_id"].tolist() == [
        "v1-9h-1",
        "v1-9h-2",
        "v1-9h-3",
    ]
    store.dispose()


def test_context_trending_missing_column_is_a_clear_error_and_writes_nothing(
    serving_url: str,
) -> None:
    store = ServingStore(serving_url)
    store.publish(make_lists(["u1"], 1, "v1"))
    with pytest.raises(ValueError, match="context trending rows .*context_value"):
        store.publish(
            make_lists(["u1"], 1, "v2"),
            context_trending=make_context_trending(["9"], 1, "v2").drop(columns="context_value"),
        )
    assert store.all_lists()["model_version"].tolist() == ["v1"]
    store.dispose()


def test_reader_sees_lists_and_context_trending_from_the_same_publish(serving_url: str) -> None:
    writer = ServingStore(serving_url)
    reader = ServingStore(serving_url)
    writer.publish(
        make_lists(["u1"], 5, "v0"), context_trending=make_context_trending(["9", "21"], 5, "v0")
    )
    # One statement reads one snapshot of both tables; counts catch a half-written table.
    both = sa.text(
        f"SELECT (SELECT MIN(model_version) FROM {SERVED_LISTS}), "
        "(SELECT MAX(model_version) FROM context_trending_items), "
        "(SELECT MIN(model_version) FROM context_trending_items), "
        "(SELECT COUNT(*) FROM context_trending_items)"
    )
    seen = read_while_publishing(
        reader,
        both,
        lambda version: writer.publish(
            make_lists(["u1"], 5, version),
            context_trending=make_context_trending(["9", "21"], 5, version),
        ),
        publishes=60,
    )
    broken = [row for row in seen if len(set(row[:3])) != 1 or row[3] != 10]
    assert not broken, broken[:3]
    writer.dispose()
    reader.dispose()


def make_related(items: list[str], k: int, version: str) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "item_id": item,
                "rank": rank,
                "related_item_id": f"{version}-{item}-{rank}",
                "score": 1.0 - rank / 10,
                "reason": "often viewed together" if rank == 1 else "similar text",
                "model_version": version,
                "generated_at": datetime(2026, 1, 1, 12, 0, 0),
            }
            for item in items
            for rank in range(1, k + 1)
        ]
    )


def test_related_items_round_trip(serving_url: str) -> None:
    store = ServingStore(serving_url)
    assert store.related("i1").empty
    store.publish(make_lists(["u1"], 1, "v1"), related=make_related(["i1", "007"], 3, "v1"))
    related = store.related("i1")
    assert related["related_item_id"].tolist() == ["v1-i1-1", "v1-i1-2", "v1-i1-3"]
    assert related["rank"].tolist() == [1, 2, 3]
    assert related["reason"].tolist() == ["often viewed together", "similar text", "similar text"]
    assert related["score"].tolist() == pytest.approx([0.9, 0.8, 0.7])
    assert related["model_version"].iloc[0] == "v1"
    assert related["generated_at"].iloc[0] == pd.Timestamp("2026-01-01 12:00:00")
    assert store.related("i1", k=2)["related_item_id"].tolist() == ["v1-i1-1", "v1-i1-2"]
    assert store.related("007")["item_id"].tolist() == ["007"] * 3
    assert store.related("7").empty
    store.dispose()


def test_a_refresh_keeps_the_related_items_and_a_full_publish_replaces_them(
    serving_url: str,
) -> None:
    store = ServingStore(serving_url)
    store.publish(make_lists(["u1", "u2"], 2, "v1"), related=make_related(["i1", "i2"], 2, "v1"))
    store.publish(make_lists(["u1"], 2, "v2"), users=["u1"], related=None)
    assert store.related("i1")["model_version"].tolist() == ["v1", "v1"]
    assert store.recommendations("u1")["model_version"].iloc[0] == "v2"
    store.publish(make_lists(["u1", "u2"], 2, "v3"), related=make_related(["i2"], 1, "v3"))
    assert store.related("i1").empty
    assert store.related("i2")["related_item_id"].tolist() == ["v3-i2-1"]
    store.publish(make_lists(["u1", "u2"], 2, "v4"), related=make_related(["i9"], 1, "v4").iloc[:0])
    assert store.related("i2").empty
    store.dispose()


def test_a_refresh_takes_withdrawn_items_out_of_every_items_related_items(
    serving_url: str,
) -> None:
    store = ServingStore(serving_url)
    store.publish(make_lists(["u1", "u2"], 2, "v1"), related=make_related(["i1", "i2"], 3, "v1"))
    store.publish(
        make_lists(["u1"], 2, "v2"), users=["u1"], withdrawn=["v1-i1-2", "v1-i2-1", "elsewhere"]
    )
    assert store.related("i1")["related_item_id"].tolist() == ["v1-i1-1", "v1-i1-3"]
    assert store.related("i2")["related_item_id"].tolist() == ["v1-i2-2", "v1-i2-3"]
    store.dispose()


def test_items_withdrawn_by_a_refresh_leave_every_pool_until_a_full_publish_ranks_anew(
    serving_url: str,
) -> None:
    # Ids LIKE or JSON would treat specially, and one that differs from another only in case.
    items = ["50%_off", 'say "hi"', "naïve", "ABC", "abc", "plain"]

    def pools(rows: list[tuple[str, str]], version: str) -> pd.DataFrame:
        frame = pd.DataFrame(rows, columns=["user_id", "item_id"])
        return frame.assign(
            rank=frame.groupby("user_id").cumcount() + 1,
            score=1.0,
            reason="trending now",
            model_version=version,
            generated_at=datetime(2026, 1, 1),
        )

    def pool(user: str) -> list[str]:
        return [row["item_id"] for row in store.personalisation_inputs(user, [], 1)[0]]

    store = ServingStore(serving_url)
    first = pools([("u1", item) for item in items] + [("u2", "plain"), ("u2", "ABC")], "v1")
    store.publish(make_lists(["u1", "u2", "u3"], 1, "v1"), candidates=first)
    withdrawn = ["50%_off", 'say "hi"', "naïve", "abc", "plain", "nowhere", "plain"]
    rescored = pools([("u3", "plain"), ("u3", "kept")], "v2")  # ranked before the withdrawal
    store.publish(
        make_lists(["u3"], 1, "v2"), users=["u3"], candidates=rescored, withdrawn=withdrawn
    )
    assert pool("u1") == ["ABC"]
    assert pool("u2") == ["ABC"]
    assert pool("u3") == ["kept"]
    store.publish(make_lists(["u3"], 1, "v3"), users=["u3"], withdrawn=["ABC"])  # once more
    assert pool("u1") == []
    # A full publish ranked every pool with the catalog of its day: what it holds is served.
    store.publish(make_lists(["u1"], 1, "v4"), candidates=pools([("u1", "plain")], "v4"))
    assert pool("u1") == ["plain"]
    assert store.recommendations("u1")["model_version"].tolist() == ["v4"]
    store.dispose()


def test_items_made_available_again_come_back_to_the_pools_that_hold_them(
    serving_url: str,
) -> None:
    pools = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", "u2"],
            "rank": [1, 2, 3, 1],
            "item_id": ["back", "gone", "kept", "back"],
            "score": 1.0,
            "reason": "trending now",
            "model_version": "v1",
            "generated_at": datetime(2026, 1, 1),
        }
    )

    def pool(user: str) -> list[str]:
        return [row["item_id"] for row in store.personalisation_inputs(user, [], 1)[0]]

    store = ServingStore(serving_url)
    store.publish(make_lists(["u1", "u2", "u3"], 1, "v1"), candidates=pools)
    store.publish(make_lists(["u3"], 1, "v2"), users=["u3"], withdrawn=["back", "gone"])
    assert pool("u1") == ["kept"] and pool("u2") == []
    assert store.withdrawn_items() == ["back", "gone"]
    # Restored in a later refresh; one that is withdrawn in the same publish stays withdrawn.
    store.publish(
        make_lists(["u3"], 1, "v3"),
        users=["u3"],
        withdrawn=["gone"],
        restored=["back", "gone", "never-withdrawn"],
    )
    assert pool("u1") == ["back", "kept"] and pool("u2") == ["back"]
    assert store.withdrawn_items() == ["gone"]
    store.dispose()


def test_a_purge_of_many_items_leaves_the_pools_as_a_few_do(serving_url: str) -> None:
    # Beyond the withdrawn items a read takes whole, it asks about the pool's own.
    purged = [f"old{number:03d}" for number in range(120)]
    pools = pd.DataFrame(
        {
            "user_id": "u1",
            "rank": [1, 2, 3],
            "item_id": ["old007", "fresh", "old119"],
            "score": 1.0,
            "reason": "trending now",
            "model_version": "v1",
            "generated_at": datetime(2026, 1, 1),
        }
    )
    store = ServingStore(serving_url)
    store.publish(make_lists(["u1", "u2"], 1, "v1"), candidates=pools)
    store.publish(make_lists(["u2"], 1, "v2"), users=["u2"], withdrawn=purged)
    candidates = store.personalisation_inputs("u1", [], 1)[0]
    assert [row["item_id"] for row in candidates] == ["fresh"]
    assert store.personalisation_inputs("u2", [], 1)[0] == []  # no pool: nothing asked
    store.dispose()


def test_related_items_without_a_column_are_refused(serving_url: str) -> None:
    store = ServingStore(serving_url)
    store.publish(make_lists(["u1"], 1, "v1"), related=make_related(["i1"], 1, "v1"))
    with pytest.raises(ValueError, match="related items to publish lack column"):
        store.publish(
            make_lists(["u1"], 1, "v2"),
            related=make_related(["i1"], 1, "v2").drop(columns=["related_item_id"]),
        )
    # Nothing changed: the refused publish wrote neither lists nor related items.
    assert store.related("i1")["model_version"].tolist() == ["v1"]
    assert store.recommendations("u1")["model_version"].tolist() == ["v1"]
    store.dispose()


# ---------------------------------------------------------------------------------------------
# What request-time personalisation reads: candidates, titles, recent events


def recent(user: str, item: str, minute: int, source_file: str = "api-1.jsonl") -> dict:
    return {
        "user_id": user,
        "item_id": item,
        "event_type": "click",
        "value": None,
        "occurred_at": datetime(2026, 1, 2, 9, minute),
        "received_at": datetime(2026, 1, 2, 9, minute, 30),
        "source_file": source_file,
    }


def test_recent_events_keep_each_users_newest(serving_url: str) -> None:
    store = ServingStore(serving_url)
    store.append_recent_events([recent("u1", f"i{n}", n) for n in range(3)], per_user=3)
    store.append_recent_events([recent("u1", "i3", 3), recent("u2", "j", 0)], per_user=3)
    assert [event["item_id"] for event in store.recent_events("u1")] == ["i1", "i2", "i3"]
    assert [event["item_id"] for event in store.recent_events("u2")] == ["j"]
    assert store.recent_events("u1")[0]["occurred_at"] == datetime(2026, 1, 2, 9, 1)
    with pytest.raises(ValueError, match="per_user"):
        store.append_recent_events([recent("u1", "x", 0)], per_user=0)
    store.dispose()


def test_candidates_follow_their_users_lists(serving_url: str) -> None:
    store = ServingStore(serving_url)
    store.publish(make_lists(["u1", "u2"], 2, "v1"), candidates=make_lists(["u1", "u2"], 4, "v1"))
    store.publish(make_lists(["u1"], 2, "v2"), users=["u1"], candidates=make_lists(["u1"], 3, "v2"))

    def candidate_items(user: str) -> list[str]:
        candidates, _related, _titles = store.personalisation_inputs(user, [], 1)
        return [row["item_id"] for row in candidates]

    assert candidate_items("u1") == ["v2-1", "v2-2", "v2-3"]
    assert len(candidate_items("u2")) == 4
    store.publish(make_lists(["u3"], 1, "v3"))  # a full publish without candidates clears them
    assert candidate_items("u2") == []
    store.dispose()


def test_a_publish_deletes_the_loaded_events_it_reflects(serving_url: str) -> None:
    store = ServingStore(serving_url)
    store.append_recent_events(
        [recent("u1", "a", 0, "f1"), recent("u1", "b", 1, "f2"), recent("u2", "c", 2, "f1")],
        per_user=10,
    )
    marked = store.mark_loaded(
        {"f1": datetime(2026, 1, 3), "f2": datetime(2026, 1, 5), "f3": datetime(2026, 1, 6)}
    )
    assert marked == {"f1": 2, "f2": 1}
    store.publish(
        make_lists(["u1"], 1, "v1"), users=["u1"], events_loaded_through=datetime(2026, 1, 4)
    )
    assert [event["item_id"] for event in store.recent_events("u1")] == ["b"]  # loaded later
    assert [event["item_id"] for event in store.recent_events("u2")] == ["c"]  # not replaced
    store.dispose()


def test_titles_and_related_items_are_read_together(serving_url: str) -> None:
    store = ServingStore(serving_url)
    titles = pd.DataFrame({"item_id": ["a", "b"], "title": ["Alpha", "Beta"]})
    related = pd.DataFrame(
        {
            "item_id": ["a", "a", "b"],
            "rank": [1, 2, 1],
            "related_item_id": ["b", "c", "a"],
            "score": [0.9, 0.4, 0.8],
            "reason": ["often viewed together", "similar text", "often viewed together"],
            "model_version": "v1",
            "generated_at": datetime(2026, 1, 1),
        }
    )
    store.publish(
        make_lists(["u1"], 2, "v1"),
        related=related,
        titles=titles,
        candidates=make_lists(["u1"], 3, "v1"),
    )
    candidates, rows, found = store.personalisation_inputs("u1", ["a", "z"], related_per_item=1)
    assert [row["item_id"] for row in candidates] == ["v1-1", "v1-2", "v1-3"]
    assert [(row["item_id"], row["related_item_id"]) for row in rows] == [("a", "b")]
    assert found == {"a": "Alpha"}
    with pytest.raises(ValueError, match="title"):
        store.publish(make_lists(["u1"], 1, "v1"), titles=titles.drop(columns=["title"]))
    store.dispose()


def test_long_titles_and_reasons_are_cut_to_their_columns_and_lose_nul(serving_url: str) -> None:
    """A catalog title of any length, quoted in a reason, publishes (on PostgreSQL a value over
    its VARCHAR, or a NUL, would refuse the whole publish)."""
    from orchestration.serving.store import REASON_LENGTH, TITLE_LENGTH

    store = ServingStore(serving_url)
    long_title = "A" * 1_500
    lists = make_lists(["u1"], 2, "v1")
    lists["reason"] = [f"because you viewed {long_title}", "similar to Al\x00pha"]
    titles = pd.DataFrame({"item_id": ["a", "b"], "title": [long_title, "Be\x00ta"]})
    store.publish(lists, titles=titles)

    reasons = store.recommendations("u1")["reason"].tolist()
    assert len(reasons[0]) == REASON_LENGTH
    assert reasons[0] == f"because you viewed {long_title}"[: REASON_LENGTH - 1] + "\u2026"
    assert reasons[1] == "similar to Alpha"
    _, _, found = store.personalisation_inputs("u1", ["a", "b"], related_per_item=1)
    assert found == {"a": "A" * (TITLE_LENGTH - 1) + "\u2026", "b": "Beta"}
    store.dispose()


def test_fitted_text_known_answers() -> None:
    from orchestration.serving.store import fitted_text

    assert fitted_text("abc", 3) == "abc"
    assert fitted_text("abcd", 3) == "ab\u2026"
    assert fitted_text("a\x00bc", 3) == "abc"  # the NUL goes before the length is judged
    assert fitted_text("", 3) == ""


def test_rows_carry_each_columns_stored_type() -> None:
    from orchestration.serving.store import SERVING_COLUMNS, _to_columns

    frame = pd.DataFrame(
        {
            "user_id": [7, 7],  # ids become text
            "rank": [1.0, 2.0],  # ranks whole numbers
            "item_id": ["a", 3],
            "score": [1, 0.5],
            "reason": ["popular now", "popular now"],
            "model_version": ["m/1", "m/1"],
            # Times become naive UTC; a missing one stays missing.
            "generated_at": [pd.Timestamp("2026-12-02 13:00", tz="Europe/Paris"), pd.NaT],
        }
    )
    columns = _to_columns(frame, SERVING_COLUMNS)
    records = [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]
    assert records[0] == {
        "user_id": "7",
        "rank": 1,
        "item_id": "a",
        "score": 1.0,
        "reason": "popular now",
        "model_version": "m/1",
        "generated_at": datetime(2026, 12, 2, 12, 0),
    }
    assert type(records[0]["rank"]) is int and isinstance(records[0]["generated_at"], datetime)
    assert records[0]["generated_at"].tzinfo is None
    assert records[1]["item_id"] == "3" and records[1]["generated_at"] is None


def _counted(store: ServingStore) -> dict[str, object]:
    """The summary's list figures counted from the served rows themselves."""
    lists = store.all_lists()
    newest = lists["generated_at"].max() if len(lists) else None
    return {
        "rows": len(lists),
        "users": lists["user_id"].nunique(),
        "generated_at": None if newest is None else pd.Timestamp(newest).to_pydatetime(),
    }


def _figures(store: ServingStore) -> dict[str, object]:
    summary = store.summary()
    return {key: summary[key] for key in ("rows", "users", "generated_at")}


def test_the_summary_is_kept_by_every_publish_without_counting_the_lists(serving_url) -> None:
    store = ServingStore(serving_url)
    assert _figures(store) == {"rows": 0, "users": 0, "generated_at": None}
    store.publish(make_lists(["u1", "u2", "u3"], 3, "v1"))
    assert (
        _figures(store)
        == _counted(store)
        == {
            "rows": 9,
            "users": 3,
            "generated_at": datetime(2026, 1, 1, 12, 0, 0),
        }
    )
    later = make_lists(["u2", "u4"], 2, "v2").assign(generated_at=datetime(2026, 1, 2, 8, 0, 0))
    # u2 shrinks to 2 rows, u4 is new, u3's list goes (asked, no rows), "gone" never had one.
    store.publish(later, users=["u2", "u3", "u4", "gone"])
    assert (
        _figures(store)
        == _counted(store)
        == {
            "rows": 3 + 2 + 2,
            "users": 3,
            "generated_at": datetime(2026, 1, 2, 8, 0, 0),
        }
    )
    # The figures come from the kept row: a change behind the store's back is not counted.
    engine = sa.create_engine(serving_url)
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM recommendations WHERE user_id = 'u1'"))
    assert store.summary()["rows"] == 7
    # Without a kept row (a store from before it), the lists are counted; the next scoped
    # publish keeps the counted figures from then on.
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM serving_summary"))
    assert (
        _figures(store)
        == _counted(store)
        == {
            "rows": 4,
            "users": 2,
            "generated_at": datetime(2026, 1, 2, 8, 0, 0),
        }
    )
    store.publish(make_lists(["u5"], 1, "v3"), users=["u5"])
    assert _figures(store) == _counted(store)
    with engine.connect() as connection:
        kept = connection.execute(sa.text("SELECT list_rows FROM serving_summary")).scalars().all()
    assert kept == [5]
    # A full publish keeps only its own version's row; emptied lists have no newest time.
    store.publish(make_lists(["u6"], 4, "v4"))
    assert _figures(store) == _counted(store)
    store.publish(make_lists(["u6"], 1, "v5").iloc[:0], users=["u6"])
    assert _figures(store) == {"rows": 0, "users": 0, "generated_at": None}
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM serving_summary")).scalar() == 1
    engine.dispose()
    store.dispose()


def test_request_reads_give_the_rows_sqlalchemy_gives(serving_url: str) -> None:
    """The API's reads run their prebuilt SQL on the DBAPI connection (_PreparedRead); the rows,
    types included (times come back as datetime, scores as float), are SQLAlchemy's own."""
    from orchestration.serving import store as module

    store = ServingStore(serving_url)
    store.publish(
        make_lists(["u1", "u2"], 3, "v1"),
        trending=make_lists(["u0"], 2, "v1").drop(columns=["user_id"]),
        related=make_related(["i1", "i2", "i3"], 3, "v1"),
        candidates=make_lists(["u1"], 4, "v1"),
        titles=pd.DataFrame({"item_id": ["i1", "i2"], "title": ["One", "Two"]}),
    )
    store.append_recent_events([recent("u1", "i1", 1), recent("u1", "i2", 2)], per_user=5)
    reads = [
        (module._LIST_QUERY, {"user_id": "u1"}),
        (module._LIST_QUERY, {"user_id": "nobody"}),
        (module._TRENDING_QUERY, {}),
        (module._RELATED_QUERY, {"item_id": "i1"}),
        (module._RECENT_EVENTS_QUERY, {"user_id": "u1"}),
        (module._CANDIDATE_POOL_QUERY, {"user_id": "u1"}),
        # IN lists: their SQL is expanded per call, for any length, none included.
        (module._RELATED_OF_ITEMS_QUERY, {"items": ["i1", "i3"], "per_item": 2}),
        (module._RELATED_OF_ITEMS_QUERY, {"items": ["i2"], "per_item": 3}),
        (module._RELATED_OF_ITEMS_QUERY, {"items": [], "per_item": 3}),
        (module._TITLES_QUERY, {"items": ["i1", "i2", "i9"]}),
    ]
    for query, values in reads:
        with store.engine.connect() as connection:
            expected = [dict(row) for row in connection.execute(query, values).mappings()]
        for _ in range(2):  # the first run looks the conversions up, the second reuses them
            got = store._rows(query, values)
            assert got == expected
            assert [list(map(type, row.values())) for row in got] == [
                list(map(type, row.values())) for row in expected
            ]
    assert isinstance(store.list_rows("u1")[0]["generated_at"], datetime)
    assert [event["item_id"] for event in store.recent_events("u1")] == ["i1", "i2"]
    pool, related, titles = store.personalisation_inputs("u1", ["i3", "i1", "i1"], 2)
    assert [row["item_id"] for row in pool] == ["v1-1", "v1-2", "v1-3", "v1-4"]
    assert [row["related_item_id"] for row in related] == [
        "v1-i1-1",
        "v1-i1-2",
        "v1-i3-1",
        "v1-i3-2",
    ]
    assert titles == {"i1": "One"}
    since = sa.select(module.recent_events_table).where(
        module.recent_events_table.c["occurred_at"] > sa.bindparam("since", type_=sa.DateTime)
    )
    if store.engine.dialect.name == "sqlite":  # SQLite binds times as text, PostgreSQL as they are
        with pytest.raises(ValueError, match="need conversion"):
            module._PreparedRead(since, store.engine.dialect)
    store.dispose()
