"""Full publishes as versions: written in chunks, switched in one transaction, old rows deleted.

On SQLite and PostgreSQL. Small chunks make a publish of a few hundred users many transactions,
so a reader polling meanwhile would see a mix if the switch did not keep it from one.
"""

from __future__ import annotations

import threading
from datetime import datetime

import pandas as pd
import pytest
import sqlalchemy as sa

from orchestration.serving.store import ServingStore
from orchestration.serving.versions import StaleVersion
from tests.orchestration.serving.test_store import (
    SERVED_LISTS,
    make_context_trending,
    make_lists,
    make_related,
    make_trending,
)

CHUNK = 7  # rows per transaction: a 200-user publish takes hundreds of them


def titles_of(items: list[str], version: str) -> pd.DataFrame:
    return pd.DataFrame({"item_id": items, "title": [f"{version} {item}" for item in items]})


def users(count: int) -> list[str]:
    return [f"u{number:03d}" for number in range(count)]


def full_publish(store: ServingStore, version: str, user_count: int = 40) -> None:
    """Lists, candidates, related items, titles and trending, all named after ``version``."""
    store.publish(
        make_lists(users(user_count), 3, version),
        candidates=make_lists(users(user_count), 6, version),
        related=make_related(["i1", "i2"], 3, version),
        titles=titles_of(["i1", "i2"], version),
        trending=make_trending(2, version),
        context_trending=make_context_trending(["9"], 2, version),
    )


def raw_count(store: ServingStore, table: str) -> int:
    """Rows of every version, served or not."""
    with store.engine.connect() as connection:
        return connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def everything_read(store: ServingStore) -> dict[str, object]:
    """What readers get, through every reading method of the store."""
    candidates, related, found = store.personalisation_inputs("u001", ["i1", "i2", "x"], 2)
    return {
        "lists": store.all_lists(),
        "one_list": store.list_rows("u001"),
        "candidates": candidates,
        "related_of": related,
        "titles": found,
        "related": store.related("i1"),
        "summary": store.summary(),
        "trending": store.trending(),
        "context": store.context_trending("hour", "9"),
        "candidate_table": store.served_table("candidate_pools"),
    }


def assert_same_reads(first: dict[str, object], second: dict[str, object]) -> None:
    assert first.keys() == second.keys()
    for name, value in first.items():
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(value, second[name], obj=name)
        else:
            assert value == second[name], name


def test_a_chunked_publish_reads_as_a_single_chunk_one(serving_url: str) -> None:
    chunked = ServingStore(serving_url, chunk_rows=CHUNK)
    full_publish(chunked, "v1")
    full_publish(chunked, "v2")
    reads = everything_read(chunked)
    assert reads["summary"]["rows"] == 120 and len(reads["candidates"]) == 6
    assert reads["titles"] == {"i1": "v2 i1", "i2": "v2 i2"}
    whole = ServingStore(serving_url, chunk_rows=1_000_000)
    full_publish(whole, "v2")
    assert_same_reads(reads, everything_read(whole))
    chunked.dispose()
    whole.dispose()


def test_a_switch_leaves_only_the_served_version(serving_url: str) -> None:
    store = ServingStore(serving_url, chunk_rows=CHUNK)
    full_publish(store, "v1")
    full_publish(store, "v2", user_count=30)
    for table, rows in (
        ("recommendations", 90),
        ("candidate_pools", 30),
        ("related_items", 6),
        ("item_titles", 2),
    ):
        assert raw_count(store, table) == rows, table
    assert set(store.all_lists()["model_version"]) == {"v2"}
    store.dispose()


def test_readers_see_the_whole_old_or_the_whole_new_publish(serving_url: str) -> None:
    writer = ServingStore(serving_url, chunk_rows=CHUNK)
    reader = ServingStore(serving_url)
    sizes = {"v00": 150, "v01": 200, "v02": 170, "v03": 200}
    writer.publish(make_lists(users(sizes["v00"]), 5, "v00"), trending=make_trending(2, "v00"))
    # One statement: the served lists' versions and user count, and the trending version.
    query = sa.text(
        f"SELECT (SELECT MIN(model_version) FROM {SERVED_LISTS}), "
        f"(SELECT MAX(model_version) FROM {SERVED_LISTS}), "
        f"(SELECT COUNT(DISTINCT user_id) FROM {SERVED_LISTS}), "
        "(SELECT MIN(model_version) FROM trending_items)"
    )
    seen: list[tuple] = []
    lists_seen: list[list[dict]] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            with reader.engine.connect() as connection:
                seen.append(tuple(connection.execute(query).one()))
            lists_seen.append(reader.list_rows("u120"))

    thread = threading.Thread(target=poll)
    thread.start()
    for version in ("v01", "v02", "v03"):
        lists = make_lists(users(sizes[version]), 5, version)
        writer.publish(lists, candidates=lists, trending=make_trending(2, version))
    done.set()
    thread.join()
    assert seen and lists_seen
    mixed = [row for row in seen if len(set(row[:2] + row[3:])) != 1 or sizes[row[0]] != row[2]]
    assert not mixed, mixed[:3]
    # u120 has a list in every publish: always five rows of one version.
    assert all(
        len(rows) == 5 and len({row["model_version"] for row in rows}) == 1 for rows in lists_seen
    )
    writer.dispose()
    reader.dispose()


def test_a_publish_failing_midway_leaves_the_old_lists_and_no_rows(serving_url: str) -> None:
    store = ServingStore(serving_url, chunk_rows=CHUNK)
    full_publish(store, "v1")
    before = everything_read(store)
    lists = make_lists(users(40), 3, "v2")
    broken = pd.concat([lists, lists.tail(1)], ignore_index=True)  # a duplicate in the last chunk
    with pytest.raises(sa.exc.IntegrityError):
        store.publish(broken, candidates=lists, related=make_related(["i1"], 1, "v2"))
    assert_same_reads(before, everything_read(store))
    assert raw_count(store, "recommendations") == 120  # the written chunks were deleted again
    store.dispose()


def test_rows_of_a_killed_publish_are_never_served_and_the_next_switch_deletes_them(
    serving_url: str,
) -> None:
    store = ServingStore(serving_url, chunk_rows=CHUNK)
    full_publish(store, "v1")
    killed = store.begin_version()
    killed.write(make_lists(users(40), 3, "killed"))  # then the process died: no abort
    assert set(store.all_lists()["model_version"]) == {"v1"}
    assert store.summary()["rows"] == 120
    full_publish(store, "v2")
    assert raw_count(store, "recommendations") == 120
    assert set(store.all_lists()["model_version"]) == {"v2"}
    killed.abort()  # what a restarted scoring would do: never serve it
    with pytest.raises(ValueError, match="discarded"):
        killed.commit()
    store.dispose()


def test_shards_written_in_turn_are_served_together(serving_url: str) -> None:
    store = ServingStore(serving_url, chunk_rows=CHUNK)
    full_publish(store, "v1")
    with store.begin_version() as version:
        for shard in (users(40)[:15], users(40)[15:]):
            version.write(make_lists(shard, 3, "v2"), make_lists(shard, 4, "v2"))
            assert set(store.all_lists()["model_version"]) == {"v1"}  # not served yet
        version.commit(trending=make_trending(1, "v2"))
    pd.testing.assert_frame_equal(store.all_lists(), _as_read(make_lists(users(40), 3, "v2")))
    assert len(store.served_table("candidate_pools")) == 40
    assert store.trending()["model_version"].tolist() == ["v2"]
    # Not replaced by this version: the related items and titles of v1 stay served.
    assert store.related("i1")["model_version"].unique().tolist() == ["v1"]
    assert store.personalisation_inputs("u001", ["i1"], 1)[2] == {"i1": "v1 i1"}
    store.dispose()


def _as_read(lists: pd.DataFrame) -> pd.DataFrame:
    """make_lists' frame as all_lists returns it (ordered by user and rank)."""
    return lists.sort_values(["user_id", "rank"]).reset_index(drop=True)


def test_another_process_commits_a_version_by_its_number(serving_url: str) -> None:
    scorer = ServingStore(serving_url, chunk_rows=CHUNK)
    full_publish(scorer, "v1")
    version = scorer.begin_version(related=True, titles=True)
    version.write(make_lists(users(10), 3, "v2"))
    version.write_related(make_related(["i9"], 2, "v2"))
    scorer.dispose()
    publisher = ServingStore(serving_url)
    resumed = publisher.resume_version(version.number)
    assert resumed.replaces_related
    resumed.commit()
    assert publisher.summary()["users"] == 10
    assert publisher.related("i1").empty and len(publisher.related("i9")) == 2
    assert publisher.personalisation_inputs("u001", ["i1"], 1)[2] == {}  # no titles written
    with pytest.raises(ValueError, match="no version 999"):
        publisher.resume_version(999)
    publisher.dispose()


def test_an_older_version_never_replaces_a_newer_one(serving_url: str) -> None:
    store = ServingStore(serving_url, chunk_rows=CHUNK)
    older, newer = store.begin_version(), store.begin_version()
    older.write(make_lists(users(5), 2, "older"))
    newer.write(make_lists(users(5), 2, "newer"))
    newer.commit()
    with pytest.raises(StaleVersion, match="newer version of recommendations"):
        older.commit()
    assert set(store.all_lists()["model_version"]) == {"newer"}
    store.dispose()


def test_a_refresh_after_a_versioned_publish_replaces_its_users_in_place(
    serving_url: str,
) -> None:
    store = ServingStore(serving_url, chunk_rows=CHUNK)
    full_publish(store, "v1")
    refreshed = make_lists(["u001", "new"], 2, "v2")
    store.publish(refreshed, users=["u001", "u002", "new"], candidates=refreshed)
    by_user = store.all_lists().groupby("user_id")["model_version"].agg(["first", "count"])
    assert by_user.loc["u001"].tolist() == ["v2", 2] and by_user.loc["new"].tolist() == ["v2", 2]
    assert "u002" not in by_user.index and by_user.loc["u003"].tolist() == ["v1", 3]
    candidates, _related, _titles = store.personalisation_inputs("u001", [], 1)
    assert [row["item_id"] for row in candidates] == ["v2-1", "v2-2"]
    full_publish(store, "v3")
    assert set(store.all_lists()["model_version"]) == {"v3"}
    assert raw_count(store, "recommendations") == 120
    store.dispose()


def test_a_chunk_size_below_one_is_refused(serving_url: str) -> None:
    store = ServingStore(serving_url, chunk_rows=0)
    with pytest.raises(ValueError, match="at least one row"):
        store.publish(make_lists(["u1"], 1, "v1"))
    store.dispose()


# ---------------------------------------------------------------------------------------------
# A serving database made before versions

_OLD = sa.MetaData()
_OLD_KEYED = {
    "recommendations": ("user_id", "rank"),
    "candidates": ("user_id", "rank"),
    "related_items": ("item_id", "rank"),
}
for _name, (_key, _rank) in _OLD_KEYED.items():
    sa.Table(
        _name,
        _OLD,
        sa.Column(_key, sa.String(255), primary_key=True),
        sa.Column(_rank, sa.Integer, primary_key=True),
        *(
            [sa.Column("related_item_id", sa.String(255), nullable=False)]
            if _name == "related_items"
            else [sa.Column("item_id", sa.String(255), nullable=False)]
        ),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("model_version", sa.String(255), nullable=False),
        sa.Column("generated_at", sa.DateTime, nullable=False),
    )
sa.Table(
    "item_titles",
    _OLD,
    sa.Column("item_id", sa.String(255), primary_key=True),
    sa.Column("title", sa.String(1000), nullable=False),
)


def test_a_store_made_before_versions_is_upgraded_and_keeps_serving(serving_url: str) -> None:
    engine = sa.create_engine(serving_url)
    _OLD.create_all(engine)
    old = make_lists(["u1", "u2"], 3, "old")
    with engine.begin() as connection:
        connection.execute(_OLD.tables["recommendations"].insert(), old.to_dict("records"))
        connection.execute(_OLD.tables["candidates"].insert(), old.to_dict("records"))
        connection.execute(
            _OLD.tables["related_items"].insert(), make_related(["i1"], 2, "old").to_dict("records")
        )
        connection.execute(_OLD.tables["item_titles"].insert(), [{"item_id": "i1", "title": "T"}])
    store = ServingStore(serving_url, chunk_rows=CHUNK)
    pd.testing.assert_frame_equal(store.all_lists(), _as_read(old))
    candidates, related, found = store.personalisation_inputs("u1", ["i1"], 5)
    # Candidates a row each are gone (the next publish writes packed pools); the rest stays.
    assert candidates == [] and len(related) == 2 and found == {"i1": "T"}
    assert "candidates" not in sa.inspect(engine).get_table_names()
    ServingStore(serving_url).dispose()  # a second opening finds nothing to upgrade
    store.publish(make_lists(["u1"], 2, "new"), users=["u1"])
    assert store.all_lists().groupby("user_id")["model_version"].first().to_dict() == {
        "u1": "new",
        "u2": "old",
    }
    full_publish(store, "v2")
    assert raw_count(store, "recommendations") == 120
    tables = set(sa.inspect(engine).get_table_names())
    assert not any(name.endswith("_unversioned") for name in tables), tables
    store.dispose()
    engine.dispose()


def test_lists_keep_their_times_through_the_upgrade(serving_url: str) -> None:
    engine = sa.create_engine(serving_url)
    _OLD.create_all(engine)
    row = make_lists(["u1"], 1, "old").assign(generated_at=datetime(2025, 5, 6, 7, 8, 9))
    with engine.begin() as connection:
        connection.execute(_OLD.tables["recommendations"].insert(), row.to_dict("records"))
    store = ServingStore(serving_url)
    assert store.summary()["generated_at"] == datetime(2025, 5, 6, 7, 8, 9)
    store.dispose()
    engine.dispose()
