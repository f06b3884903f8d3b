"""Snapshot and Behaviour: what is known at a moment, and what the ranked users did."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml.constants import ITEM_ID, OCCURRED_AT, USER_ID
from ml.pipeline.snapshot import Behaviour, Snapshot
from tests.ml.pipeline.tiny import events, pairs, shop_snapshot

EVENTS = events(
    [
        ("a", "i1", "view", "2024-01-01 09:00"),
        ("a", "i2", "impression", "2024-01-02 09:00"),
        ("b", "i2", "view", "2024-01-03 12:00"),  # exactly at the cut used below
        ("b", "i3", "purchase", "2024-01-04 08:00"),
    ]
)
PAIRS = pairs(
    [
        ("i1", "i2", "2024-01-02", 1.0),
        ("i2", "i1", "2024-01-02", 0.5),
        ("i2", "i3", "2024-01-03", 1.0),  # the cut's own day: not complete at the cut
        ("i3", "i2", "2024-01-04", 0.5),
    ]
)
ITEMS = pd.DataFrame({ITEM_ID: ["i1", "i2", "i4"], "available": [True, None, False]})


def test_ids_become_text_and_as_of_defaults_to_just_after_the_newest_event() -> None:
    numeric = EVENTS.assign(**{USER_ID: [1, 1, 2, 2], ITEM_ID: [10, 20, 20, 30]})
    snapshot = Snapshot(numeric, pd.DataFrame({ITEM_ID: [10, 40]}))
    assert snapshot.interactions[USER_ID].tolist() == ["1", "1", "2", "2"]
    assert snapshot.as_of == pd.Timestamp("2024-01-04 08:00") + pd.Timedelta(microseconds=1)
    assert snapshot.item_ids.tolist() == ["10", "20", "30", "40"]  # catalog and interacted
    assert snapshot.titles.to_dict() == {"10": "10", "40": "40"}  # title defaults to the id
    assert snapshot.covisitation.empty


def test_an_empty_snapshot_still_has_a_moment() -> None:
    snapshot = Snapshot(EVENTS.iloc[:0], ITEMS)
    assert snapshot.as_of == pd.Timestamp("1970-01-01")
    assert snapshot.positive.empty


def test_positive_events_and_unavailable_items() -> None:
    snapshot = Snapshot(EVENTS, ITEMS)
    assert snapshot.positive[ITEM_ID].tolist() == ["i1", "i2", "i3"]  # not the impression
    assert snapshot.unavailable == frozenset({"i4"})  # a missing flag means available
    assert Snapshot(EVENTS, ITEMS.drop(columns="available")).unavailable == frozenset()


def test_before_keeps_earlier_events_and_pairs_from_before_the_cut_date() -> None:
    snapshot = Snapshot(EVENTS, ITEMS, covisitation=PAIRS)
    cut = pd.Timestamp("2024-01-03 12:00")
    before = snapshot.before(cut)
    assert before.as_of == cut
    assert before.interactions[OCCURRED_AT].tolist() == [
        pd.Timestamp("2024-01-01 09:00"),
        pd.Timestamp("2024-01-02 09:00"),
    ]
    kept = before.covisitation[["item_id", "related_item_id"]].to_numpy().tolist()
    assert kept == [["i1", "i2"], ["i2", "i1"]]
    assert before.items.equals(snapshot.items)
    # The full snapshot is untouched.
    assert len(snapshot.interactions) == 4 and len(snapshot.covisitation) == 4


def test_before_midnight_keeps_the_previous_day_of_pairs() -> None:
    snapshot = Snapshot(EVENTS, ITEMS, covisitation=PAIRS)
    before = snapshot.before(pd.Timestamp("2024-01-04"))
    assert before.covisitation["pair_date"].astype(str).tolist() == [
        "2024-01-02",
        "2024-01-02",
        "2024-01-03",
    ]
    assert len(before.interactions) == 3


def test_empty_vectors_count_as_none_and_ids_become_text() -> None:
    assert Snapshot(EVENTS, ITEMS, vectors=pd.DataFrame()).vectors is None
    vectors = pd.DataFrame([[1.0, 0.0]], index=[7])
    assert Snapshot(EVENTS, ITEMS, vectors=vectors).vectors.index.tolist() == ["7"]


def test_recent_items_are_the_latest_distinct_positive_items_newest_first() -> None:
    behaviour = Behaviour(
        events(
            [
                ("u", "i1", "view", "2024-01-01"),
                ("u", "i2", "view", "2024-01-02"),
                ("u", "i1", "click", "2024-01-03"),  # i1 again: its newest event counts
                ("u", "i3", "impression", "2024-01-04"),  # no weight: not interest
                ("u", "i4", "view", "2024-01-05"),
                ("v", "i2", "view", "2024-01-01"),
            ]
        )
    )
    recent = behaviour.recent_items(2)
    mine = recent[recent[USER_ID] == "u"]
    assert mine[ITEM_ID].tolist() == ["i4", "i1"]
    assert mine["recency"].tolist() == [0, 1]
    assert recent.loc[recent[USER_ID] == "v", ITEM_ID].tolist() == ["i2"]
    assert len(behaviour.recent_items(10).query("user_id == 'u'")) == 3


def test_consumed_leaves_out_impressions_and_listed_users_need_no_events() -> None:
    behaviour = Behaviour(EVENTS, users=np.array(["c"], dtype=object))
    assert behaviour.users.tolist() == ["a", "b", "c"]
    consumed = set(map(tuple, behaviour.consumed().to_numpy().tolist()))
    assert consumed == {("a", "i1"), ("b", "i2"), ("b", "i3")}
    chosen = behaviour.for_users(np.array(["b", "c"], dtype=object))
    assert chosen.users.tolist() == ["b", "c"]
    assert set(chosen.events[USER_ID]) == {"b"}


def test_a_summary_holds_no_event_or_pair_in_memory() -> None:
    """A fitted pipeline keeps its snapshot's summary; an empty slice of the events would be a
    view holding every event for as long as the pipeline lives."""

    def held_bytes(array) -> int:
        while getattr(array, "base", None) is not None:
            array = array.base
        return getattr(array, "nbytes", 0)

    snapshot = shop_snapshot()
    assert len(snapshot.interactions) and len(snapshot.covisitation)
    summary = snapshot.summary()
    for frame in (summary.interactions, summary.covisitation):
        assert frame.empty
        assert all(held_bytes(block.values) == 0 for block in frame._mgr.blocks)
    assert list(summary.interactions.columns) == list(snapshot.interactions.columns)


def test_times_with_a_zone_become_the_same_instants_in_naive_utc() -> None:
    zoned = EVENTS.assign(
        **{OCCURRED_AT: EVENTS[OCCURRED_AT].dt.tz_localize("UTC").dt.tz_convert("Europe/Berlin")}
    )
    behaviour = Behaviour(zoned)
    assert behaviour.events[OCCURRED_AT].dt.tz is None
    assert behaviour.events[OCCURRED_AT].tolist() == EVENTS[OCCURRED_AT].tolist()
    # And text with an offset ("+01:00") reads as the same instants.
    text = zoned.assign(**{OCCURRED_AT: zoned[OCCURRED_AT].map(lambda time: time.isoformat())})
    assert Behaviour(text).events[OCCURRED_AT].tolist() == EVENTS[OCCURRED_AT].tolist()
