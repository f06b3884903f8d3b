"""Context trending as scoring builds it from warehouse events and publishing serves it."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime

import duckdb
import pandas as pd
import pytest
import sqlalchemy as sa

from ml.constants import GENERATED_AT, MODEL_VERSION
from ml.ranking import TRENDING_NOW
from ml.rules import REASON_TRENDING_CONTEXT
from orchestration.compute import ComputeResource
from orchestration.serving import assets as serving_assets
from orchestration.serving.assets import publish_staged, score_everyone, stage_lists
from orchestration.serving.scoring import (
    ListSpool,
    ScoredLists,
    _write_shard,
    build_context_trending,
)
from orchestration.serving.store import ServingStore
from orchestration.settings import Settings

DAY = pd.Timestamp("2026-03-02")
GENERATED = datetime(2026, 3, 3, 8, 0, 0)
ITEMS = pd.DataFrame(
    {
        "item_id": ["coffee", "film", "gone", "news", "steady"],
        "title": ["Coffee", "Film", "Gone", "News", "Steady"],
        "available": [True, True, False, True, True],
        "interaction_count": [1, 1, 1, 1, 1],
    }
)
# The mart's global trending: "gone" tops it but is unavailable, so it is never listed.
GLOBAL_TRENDING = pd.Series(
    {"gone": 20.0, "film": 10.0, "coffee": 8.0, "steady": 5.0, "news": 1.0}, name="decayed_score"
)
WEIGHTS = {"impression": 0.0, "view": 1.0, "click": 2.0, "purchase": 5.0}


def event_rows(item_id: str, event_type: str, count: int, at: str, hour: int | None) -> list:
    """`count` events on one item at DAY + `at`; `hour` goes into the context JSON if given."""
    context = None if hour is None else json.dumps({"hour": hour, "device": "tv"})
    return [
        (f"u{number}", item_id, event_type, DAY + pd.Timedelta(at), context, WEIGHTS[event_type])
        for number in range(count)
    ]


def morning_and_evening_events() -> list:
    """Hour 9 (from the JSON, at 15:00) wants coffee then news; hour 21 (from the time) film."""
    return (
        event_rows("coffee", "click", 25, "15h", 9)  # 50 at hour 9, none at hour 15
        + event_rows("news", "view", 20, "15h", 9)  # 20 at hour 9
        + event_rows("gone", "purchase", 30, "15h", 9)  # the most, but unavailable
        + event_rows("film", "click", 25, "21h", None)  # hour 21 read off the time
        + event_rows("steady", "click", 5, "3h", None)  # hour 3: too few events for a list
        + event_rows("coffee", "impression", 40, "22h", None)  # weight 0: moves no list
    )


def write_interactions(settings: Settings, rows: list) -> None:
    frame = pd.DataFrame(
        rows, columns=["user_id", "item_id", "event_type", "occurred_at", "context", "weight"]
    )
    frame["value"] = None
    with duckdb.connect(str(settings.warehouse_path)) as connection:
        connection.execute("create schema if not exists marts")
        connection.register("rows", frame)
        connection.execute(
            "create or replace table marts.interactions as select user_id, item_id, event_type, "
            "occurred_at, cast(value as double) as value, context, weight from rows"
        )


def context_lists(settings: Settings) -> pd.DataFrame:
    """build_context_trending over the warehouse's interactions, as score_users calls it."""
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as connection:
        # score_users passes the snapshot's positive events: only those can make an item trend.
        events = connection.sql(
            "select item_id, event_type, occurred_at, value, context from marts.interactions "
            "where weight > 0"
        ).df()
    unavailable = ITEMS.loc[~ITEMS["available"], "item_id"].tolist()
    return build_context_trending(settings, events, ITEMS, GLOBAL_TRENDING, unavailable)


@pytest.fixture
def three_item_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, top_k=3, event_weights=WEIGHTS)


def of_hour(lists: pd.DataFrame, hour: str) -> pd.DataFrame:
    return lists[lists["context_value"] == hour].sort_values("rank")


def test_hour_9_and_hour_21_get_their_own_lists(three_item_settings: Settings) -> None:
    write_interactions(three_item_settings, morning_and_evening_events())
    lists = context_lists(three_item_settings)
    assert sorted(lists["context_value"].unique()) == ["21", "9"]  # no 3 (too few), no 15
    assert set(lists["context_key"]) == {"hour"}
    morning, evening = of_hour(lists, "9"), of_hour(lists, "21")
    # Coffee (25 clicks) beats news (20 views); film, the best available global item, fills in.
    assert morning["item_id"].tolist() == ["coffee", "news", "film"]
    assert morning["reason"].tolist() == [REASON_TRENDING_CONTEXT] * 2 + [TRENDING_NOW]
    assert morning["score"].tolist() == pytest.approx([1.0, 20.0 / 50.0, 0.0])
    assert evening["item_id"].tolist() == ["film", "coffee", "steady"]
    assert evening["reason"].tolist() == [REASON_TRENDING_CONTEXT] + [TRENDING_NOW] * 2
    assert morning["rank"].tolist() == evening["rank"].tolist() == [1, 2, 3]


def test_the_context_key_follows_the_settings(three_item_settings: Settings) -> None:
    write_interactions(three_item_settings, morning_and_evening_events())
    lists = context_lists(dataclasses.replace(three_item_settings, context_key="device"))
    assert set(lists["context_key"]) == {"device"}
    # Only the hour-9 events say their device; the other events have no device context.
    assert lists["context_value"].unique().tolist() == ["tv"]
    assert lists.sort_values("rank")["item_id"].tolist() == ["coffee", "news", "film"]


def one_user_list(user_id: str, item_id: str, version: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [user_id],
            "rank": [1],
            "item_id": [item_id],
            "score": [1.0],
            "reason": ["because you watched Film"],
            MODEL_VERSION: [version],
            GENERATED_AT: [GENERATED],
        }
    )


def scored(
    settings: Settings, lists: pd.DataFrame, related: pd.DataFrame | None = None
) -> ScoredLists:
    trending = pd.DataFrame(
        {
            "rank": [1],
            "item_id": ["film"],
            "score": [1.0],
            "reason": [TRENDING_NOW],
            MODEL_VERSION: ["trending"],
            GENERATED_AT: [GENERATED],
        }
    )
    by_context = context_lists(settings)
    by_context[MODEL_VERSION] = "trending"
    by_context[GENERATED_AT] = GENERATED
    return ScoredLists(
        lists=lists,
        trending=trending,
        model_version=lists[MODEL_VERSION].iloc[0],
        fallback_users=0,
        context_trending=by_context,
        related=related,
    )


def test_full_and_refresh_publishes_replace_the_context_lists(
    three_item_settings: Settings,
) -> None:
    settings = three_item_settings
    write_interactions(settings, morning_and_evening_events())
    everyone = pd.concat([one_user_list("u1", "news", "v1"), one_user_list("u2", "film", "v1")])
    stage_lists(settings, scored(settings, everyone), None, GENERATED)
    publish_staged(settings)
    store = ServingStore(settings.serving_url)
    try:
        assert store.context_trending("hour", "9")["item_id"].tolist() == [
            "coffee",
            "news",
            "film",
        ]
        assert store.context_trending("hour", "21", k=1)["item_id"].tolist() == ["film"]
        assert store.context_trending("hour", "3").empty

        # A refresh batch: hour 9 buys news now, and only u1 is rescored.
        write_interactions(
            settings,
            morning_and_evening_events() + event_rows("news", "purchase", 30, "23h", 9),
        )
        stage_lists(settings, scored(settings, one_user_list("u1", "steady", "v2")), ["u1"], DAY)
        publish_staged(settings)
        morning = store.context_trending("hour", "9")
        assert morning["item_id"].tolist()[:2] == ["news", "coffee"]
        assert set(morning["reason"].iloc[:2]) == {REASON_TRENDING_CONTEXT}
        assert store.recommendations("u1")["item_id"].tolist() == ["steady"]
        assert store.recommendations("u2")["item_id"].tolist() == ["film"]  # not in scope
    finally:
        store.dispose()


def related_rows(item_id: str, related_item_id: str, version: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [item_id],
            "rank": [1],
            "related_item_id": [related_item_id],
            "score": [1.0],
            "reason": ["often viewed together"],
            MODEL_VERSION: [version],
            GENERATED_AT: [GENERATED],
        }
    )


def test_a_refresh_keeps_the_published_related_items(three_item_settings: Settings) -> None:
    settings = three_item_settings
    write_interactions(settings, morning_and_evening_events())
    everyone = pd.concat([one_user_list("u1", "news", "v1"), one_user_list("u2", "film", "v1")])
    related = related_rows("news", "coffee", "v1")
    stage_lists(settings, scored(settings, everyone, related), None, GENERATED)
    figures = publish_staged(settings)
    assert figures["related_items_replaced"] is True
    store = ServingStore(settings.serving_url)
    try:
        assert store.related("news")["related_item_id"].tolist() == ["coffee"]
        # A refresh stages no related items: the published ones stay.
        stage_lists(settings, scored(settings, one_user_list("u1", "steady", "v2")), ["u1"], DAY)
        assert publish_staged(settings)["related_items_replaced"] is False
        assert store.related("news")["model_version"].tolist() == ["v1"]
        assert store.recommendations("u1")["item_id"].tolist() == ["steady"]
        # The next full build replaces them.
        related = related_rows("film", "news", "v3")
        stage_lists(settings, scored(settings, everyone, related), None, GENERATED)
        publish_staged(settings)
        assert store.related("news").empty
        assert store.related("film")["related_item_id"].tolist() == ["news"]
    finally:
        store.dispose()


def test_a_publish_carries_candidates_and_titles_and_drops_the_events_it_reflects(
    three_item_settings: Settings,
) -> None:
    settings = three_item_settings
    write_interactions(settings, morning_and_evening_events())
    everyone = pd.concat([one_user_list("u1", "news", "v1"), one_user_list("u2", "film", "v1")])
    candidates = pd.concat(
        [everyone, one_user_list("u1", "coffee", "v1").assign(rank=2, score=0.5)]
    )
    titles = pd.DataFrame({"item_id": ["news", "film"], "title": ["News", "Film"]})
    full = dataclasses.replace(scored(settings, everyone), candidates=candidates, titles=titles)
    store = ServingStore(settings.serving_url)
    try:
        recent = {
            "user_id": "u1",
            "item_id": "coffee",
            "event_type": "click",
            "value": None,
            "occurred_at": GENERATED,
            "received_at": GENERATED,
        }
        store.append_recent_events(
            [{**recent, "source_file": "a.jsonl"}, {**recent, "source_file": "b.jsonl"}], 10
        )
        store.mark_loaded({"a.jsonl": DAY, "b.jsonl": DAY + pd.Timedelta("2D")})
        stage_lists(settings, full, None, DAY + pd.Timedelta("1D"))  # through: a's load only
        publish_staged(settings)
        candidates, _related, found = store.personalisation_inputs("u1", ["news", "x"], 5)
        assert [row["item_id"] for row in candidates] == ["news", "coffee"]
        assert found == {"news": "News"}
        assert [event["source_file"] for event in store.recent_events("u1")] == ["b.jsonl"]
    finally:
        store.dispose()


def test_a_full_scoring_is_published_by_switching_to_the_version_it_wrote(
    three_item_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = three_item_settings
    write_interactions(settings, morning_and_evening_events())
    everyone = pd.concat([one_user_list("u1", "news", "v1"), one_user_list("u2", "film", "v1")])
    titles = pd.DataFrame({"item_id": ["news"], "title": ["News"]})
    full = scored(settings, everyone, related_rows("news", "coffee", "v1"))

    def scoring_into(settings, user_ids, compute, into):
        """What score_users does for everyone: every shard, then the per-item rows."""
        into.write(everyone.iloc[:1], everyone.iloc[:1])
        into.write(everyone.iloc[1:], everyone.iloc[1:])
        into.write_related(full.related)
        into.write_titles(titles)
        return full

    monkeypatch.setattr(serving_assets, "score_users", scoring_into)
    result, serving_version = score_everyone(settings, ComputeResource())
    stage_lists(settings, result, None, GENERATED, serving_version)
    store = ServingStore(settings.serving_url)
    try:
        assert store.all_lists().empty  # written, but served only by the publish
        figures = publish_staged(settings)
        assert figures["related_items_replaced"] is True and figures["rows_published"] == 2
        assert store.recommendations("u2")["item_id"].tolist() == ["film"]
        candidates, related, found = store.personalisation_inputs("u1", ["news"], 1)
        assert [row["item_id"] for row in candidates] == ["news"]
        assert [row["related_item_id"] for row in related] == ["coffee"] and found == {
            "news": "News"
        }
        assert store.context_trending("hour", "9")["item_id"].tolist()[0] == "coffee"
    finally:
        store.dispose()
    # The version holds the candidates: the warehouse does not stage them a second time.
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as connection:
        staged = {row[0] for row in connection.execute("show tables from ml").fetchall()}
    assert "recommendation_candidates" not in staged and "recommendation_lists" in staged


def test_a_written_shard_goes_to_the_version_and_the_spool_and_is_not_kept(tmp_path) -> None:
    written = []

    class Version:
        def write(self, lists: pd.DataFrame, candidates: pd.DataFrame) -> None:
            written.append((lists, candidates))

    lists = one_user_list("u1", "news", "ignored").drop(columns=[MODEL_VERSION, GENERATED_AT])
    candidates = pd.concat([lists, lists.assign(item_id="film", rank=2)], ignore_index=True)
    spool = ListSpool.begin(tmp_path / "spool")
    kept_lists, kept_candidates = _write_shard(
        Version(), spool, "v9", GENERATED, (lists, candidates)
    )
    ((served_lists, served_candidates),) = written
    assert served_candidates["item_id"].tolist() == ["news", "film"]
    assert set(served_lists[MODEL_VERSION]) == {"v9"}
    assert set(served_candidates[GENERATED_AT]) == {GENERATED}
    # The checks read the lists from the spool, stamped as served.
    (spooled,) = [pd.read_parquet(path) for path in spool.files]
    pd.testing.assert_frame_equal(spooled, served_lists)
    assert (spool.rows, spool.users) == (1, 1)
    for kept, shard in ((kept_lists, lists), (kept_candidates, candidates)):
        assert kept.empty and list(kept.columns) == list(shard.columns)


def test_a_failed_full_scoring_leaves_nothing_in_the_serving_store(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def scoring_fails_midway(settings, user_ids, compute, into):
        into.write(one_user_list("u1", "news", "v1"))
        raise RuntimeError("the second shard failed")

    monkeypatch.setattr(serving_assets, "score_users", scoring_fails_midway)
    with pytest.raises(RuntimeError, match="second shard"):
        score_everyone(settings, ComputeResource())
    engine = sa.create_engine(settings.serving_url)
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT count(*) FROM recommendations")).scalar_one()
    engine.dispose()
    assert rows == 0


def test_what_a_written_shard_keeps_holds_none_of_its_rows(tmp_path) -> None:
    """An empty slice of a frame is a view of its arrays: kept for every shard of a full
    scoring, it held every list and candidate row until the scoring ended."""

    class Version:
        def write(self, lists: pd.DataFrame, candidates: pd.DataFrame) -> None:
            pass

    lists = one_user_list("u1", "news", "ignored").drop(columns=[MODEL_VERSION, GENERATED_AT])
    candidates = pd.concat([lists] * 1_000, ignore_index=True)
    spool = ListSpool.begin(tmp_path / "spool")
    kept = _write_shard(Version(), spool, "v9", GENERATED, (lists, candidates))

    def held_bytes(array) -> int:
        """The bytes of the array that finally owns ``array``'s memory."""
        while getattr(array, "base", None) is not None:
            array = array.base
        return getattr(array, "nbytes", 0)

    for frame in kept:
        assert frame.empty
        assert all(held_bytes(block.values) == 0 for block in frame._mgr.blocks)
    # What the test tells apart: the empty slice holds the shard.
    assert any(held_bytes(block.values) > 0 for block in candidates.iloc[:0]._mgr.blocks)
