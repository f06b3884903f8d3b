from __future__ import annotations

import pandas as pd
import pytest

from ml.constants import ITEM_ID, NEW_USER, OCCURRED_AT, RETURNING_USER, SEGMENT, USER_ID
from ml.evaluation.split import new_item_targets, segment_users, temporal_split


def ten_days() -> pd.DataFrame:
    """One event a day from 2024-01-01 to 2024-01-10, in shuffled row order."""
    days = pd.date_range("2024-01-01", periods=10, freq="D")
    frame = pd.DataFrame(
        {
            USER_ID: [f"u{day % 3}" for day in range(10)],
            ITEM_ID: [f"i{day}" for day in range(10)],
            OCCURRED_AT: days,
        }
    )
    return frame.sample(frac=1.0, random_state=3)


def test_temporal_split_cuts_at_an_event_time_quantile() -> None:
    train, test, cutoff = temporal_split(ten_days(), validation_fraction=0.2)
    # The 0.8 quantile of 10 times sits at position 7.2; taken as the next event: day 9.
    assert cutoff == pd.Timestamp("2024-01-09")
    assert len(train) == 8
    assert len(test) == 2
    assert train[OCCURRED_AT].max() < cutoff <= test[OCCURRED_AT].min()
    assert set(train.columns) == set(test.columns) == {USER_ID, ITEM_ID, OCCURRED_AT}
    assert list(train.index) == list(range(8))


def test_temporal_split_keeps_simultaneous_events_together() -> None:
    frame = ten_days()
    frame.loc[frame[ITEM_ID] == "i7", OCCURRED_AT] = pd.Timestamp("2024-01-09")
    train, test, cutoff = temporal_split(frame, validation_fraction=0.2)
    assert cutoff == pd.Timestamp("2024-01-09")
    assert sorted(test[ITEM_ID]) == ["i7", "i8", "i9"]
    assert len(train) + len(test) == len(frame)


def test_temporal_split_works_on_time_zone_aware_times() -> None:
    frame = ten_days()
    frame[OCCURRED_AT] = frame[OCCURRED_AT].dt.tz_localize("UTC")
    _, test, cutoff = temporal_split(frame, validation_fraction=0.2)
    assert cutoff == pd.Timestamp("2024-01-09", tz="UTC")
    assert len(test) == 2


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_temporal_split_rejects_fractions_outside_zero_one(fraction: float) -> None:
    with pytest.raises(ValueError, match="validation_fraction"):
        temporal_split(ten_days(), fraction)


def test_temporal_split_explains_unusable_times() -> None:
    as_text = ten_days().assign(**{OCCURRED_AT: "2024-01-01"})
    with pytest.raises(ValueError, match="must hold datetimes"):
        temporal_split(as_text, 0.2)
    with_missing = ten_days()
    with_missing.loc[with_missing[ITEM_ID] == "i3", OCCURRED_AT] = pd.NaT
    with pytest.raises(ValueError, match="1 missing time"):
        temporal_split(with_missing, 0.2)
    same_time = ten_days().assign(**{OCCURRED_AT: pd.Timestamp("2024-01-01")})
    with pytest.raises(ValueError, match="no training rows"):
        temporal_split(same_time, 0.2)
    with pytest.raises(ValueError, match="empty"):
        temporal_split(ten_days().iloc[:0], 0.2)
    with pytest.raises(ValueError, match="missing column"):
        temporal_split(ten_days().drop(columns=OCCURRED_AT), 0.2)


def test_segment_users_labels_each_test_user_once() -> None:
    train = pd.DataFrame({USER_ID: ["u1", "u2"], ITEM_ID: ["a", "b"]})
    test = pd.DataFrame({USER_ID: ["u3", "u2", "u3", "u1"], ITEM_ID: ["a", "c", "d", "e"]})
    segments = segment_users(train, test)
    assert segments.to_dict("records") == [
        {USER_ID: "u3", SEGMENT: NEW_USER},
        {USER_ID: "u2", SEGMENT: RETURNING_USER},
        {USER_ID: "u1", SEGMENT: RETURNING_USER},
    ]


def test_new_item_targets_keeps_test_rows_of_unseen_items() -> None:
    train = pd.DataFrame({USER_ID: ["u1", "u2"], ITEM_ID: ["a", "b"]})
    test = pd.DataFrame({USER_ID: ["u1", "u2", "u3"], ITEM_ID: ["b", "new", "new"]})
    targets = new_item_targets(train, test)
    assert targets.to_dict("records") == [
        {USER_ID: "u2", ITEM_ID: "new"},
        {USER_ID: "u3", ITEM_ID: "new"},
    ]
    assert new_item_targets(train, test.iloc[:1]).empty
