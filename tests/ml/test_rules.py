from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.constants import CONTEXT, EVENT_TYPE, ITEM_ID, OCCURRED_AT, USER_ID, VALUE
from ml.ranking import TRENDING_NOW, top_k_indices
from ml.rules import (
    REASON_TRENDING_CONTEXT,
    RankingRules,
    context_trending,
    context_trending_lists,
    context_value,
    display_title,
    display_titles,
    excluded_at,
    excluded_mask,
    feedback_multipliers,
    feedback_multipliers_at,
    mmr_rerank,
    negative_feedback_penalty,
    one_user_excluded,
    one_user_feedback,
)

USERS = ["u1", "u2"]
ITEMS = ["a", "b", "c", "d"]
START = pd.Timestamp("2024-03-04 09:00")
# a, b (cosine 0.8 to a), c (orthogonal to a) and d (opposite to a).
VECTORS = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
NO_CLICK_RULE = RankingRules(click_without_conversion_factor=1.0)


def events_frame(rows: list[tuple]) -> pd.DataFrame:
    """Events from (user, item, event_type, hours after START[, value[, context]]) tuples."""
    padded = [(*row, None, None)[:6] for row in rows]
    frame = pd.DataFrame(padded, columns=[USER_ID, ITEM_ID, EVENT_TYPE, "hours", VALUE, CONTEXT])
    frame[OCCURRED_AT] = START + pd.to_timedelta(frame.pop("hours"), unit="h")
    frame[VALUE] = frame[VALUE].astype(float)
    return frame


def cell(matrix: np.ndarray, user: str, item: str, items: list[str] = ITEMS) -> float:
    """The matrix entry of one user and item."""
    return matrix[USERS.index(user), items.index(item)]


def test_rules_validate_and_freeze_their_settings() -> None:
    rules = RankingRules(rebuyable_item_ids={"a"})  # type: ignore[arg-type]
    assert rules.rebuyable_item_ids == frozenset({"a"})
    hash(rules)
    with pytest.raises(ValueError, match="impression_demotion"):
        RankingRules(impression_demotion=0.0)
    with pytest.raises(ValueError, match="free_impressions"):
        RankingRules(free_impressions=-1)
    with pytest.raises(ValueError, match="mmr_lambda"):
        RankingRules(mmr_lambda=1.5)


def test_three_unclicked_impressions_demote_one_step_and_more_are_floored() -> None:
    events = events_frame(
        [("u1", "a", "impression", hour) for hour in range(3)]
        + [("u1", "b", "impression", hour) for hour in range(5)]
        + [("u1", "c", "impression", hour) for hour in range(2)]
        + [("u2", "a", "impression", hour) for hour in range(30)]
    )
    multipliers = feedback_multipliers(events, USERS, ITEMS, RankingRules())
    assert cell(multipliers, "u1", "a") == pytest.approx(0.85)  # one beyond the two free ones
    assert cell(multipliers, "u1", "b") == pytest.approx(0.85**3)
    assert cell(multipliers, "u1", "c") == 1.0
    assert cell(multipliers, "u1", "d") == 1.0
    assert cell(multipliers, "u2", "a") == pytest.approx(0.3)  # the floor
    assert cell(multipliers, "u2", "b") == 1.0


def test_a_later_click_cancels_the_demotion_of_earlier_impressions_only() -> None:
    events = events_frame(
        [("u1", "a", "impression", hour) for hour in range(3)]
        + [("u1", "a", "click", 3)]
        + [("u1", "b", "impression", hour) for hour in range(3)]
        + [("u1", "b", "like", 1)]  # after the first impression only
        + [("u2", "a", "impression", hour) for hour in range(3)]
        + [("u2", "a", "rate", 2, 4.0)]  # at the time of the last impression: a response
        + [("u2", "b", "impression", hour) for hour in range(3)]
        + [("u2", "b", "view", 5)]  # a view is no engagement
    )
    multipliers = feedback_multipliers(events, USERS, ITEMS, NO_CLICK_RULE)
    assert cell(multipliers, "u1", "a") == 1.0
    assert cell(multipliers, "u1", "b") == 1.0  # two unclicked impressions remain: both free
    assert cell(multipliers, "u2", "a") == 1.0
    assert cell(multipliers, "u2", "b") == pytest.approx(0.85)

    shown_again = pd.concat(
        [events, events_frame([("u1", "a", "impression", hour) for hour in range(4, 7)])]
    )
    multipliers = feedback_multipliers(shown_again, USERS, ITEMS, NO_CLICK_RULE)
    assert cell(multipliers, "u1", "a") == pytest.approx(0.85)


def test_a_click_without_conversion_mildly_demotes() -> None:
    events = events_frame(
        [
            ("u1", "a", "click", 0),
            ("u1", "a", "click", 1),  # once per item, however many clicks
            ("u1", "b", "click", 0),
            ("u1", "b", "purchase", 1),
            ("u1", "c", "view", 0),
            ("u1", "c", "add_to_cart", 0),  # at the same time: converted
            ("u2", "a", "purchase", 0),
            ("u2", "a", "click", 1),  # a click after the purchase did not convert
            ("u2", "b", "view", 0),
        ]
    )
    multipliers = feedback_multipliers(events, USERS, ITEMS, RankingRules())
    np.testing.assert_allclose(multipliers, [[0.9, 1.0, 1.0, 1.0], [0.9, 0.9, 1.0, 1.0]])
    assert (feedback_multipliers(events, USERS, ITEMS, NO_CLICK_RULE) == 1.0).all()


def test_events_without_a_time_or_of_unknown_ids_are_ignored_by_feedback() -> None:
    events = events_frame(
        [("u1", "a", "impression", hour) for hour in range(3)]
        + [("u9", "a", "click", 0), ("u1", "z", "click", 0)]
    )
    events.loc[0, OCCURRED_AT] = pd.NaT
    multipliers = feedback_multipliers(events, USERS, ITEMS, RankingRules())
    assert (multipliers == 1.0).all()


def test_time_zone_aware_times_are_compared_in_utc() -> None:
    events = events_frame([("u1", "a", "impression", hour) for hour in range(3)])
    events = pd.concat([events, events_frame([("u1", "a", "click", 1.5)])], ignore_index=True)
    aware = events.assign(
        **{OCCURRED_AT: events[OCCURRED_AT].dt.tz_localize("UTC").dt.tz_convert("Asia/Tokyo")}
    )
    np.testing.assert_array_equal(
        feedback_multipliers(events, USERS, ITEMS, RankingRules()),
        feedback_multipliers(aware, USERS, ITEMS, RankingRules()),
    )


def test_purchased_and_consumed_items_are_excluded_but_rebuyable_ones_are_not() -> None:
    events = events_frame(
        [
            ("u1", "a", "purchase", 0),
            ("u1", "b", "purchase", 0),
            ("u1", "c", "impression", 0),  # seen is not consumed
            ("u2", "c", "view", 0),
            ("u2", "d", "view", 0),
        ]
    )
    rules = RankingRules(rebuyable_item_ids=frozenset({"b", "d"}))
    np.testing.assert_array_equal(
        excluded_mask(events, USERS, ITEMS, rules),
        [[True, False, False, False], [False, False, True, False]],
    )
    # Without the consumption rule, only purchases of items that are not rebuyable remain.
    only_purchases = RankingRules(exclude_consumed=False, rebuyable_item_ids=frozenset({"b"}))
    np.testing.assert_array_equal(
        excluded_mask(events, USERS, ITEMS, only_purchases),
        [[True, False, False, False], [False, False, False, False]],
    )
    # Without the purchase rule, a purchase is still a consumption.
    only_consumption = RankingRules(exclude_purchased=False)
    assert excluded_mask(events, USERS, ITEMS, only_consumption)[0, 0]


def test_unavailable_items_are_excluded_for_everyone_even_when_rebuyable() -> None:
    events = events_frame([("u1", "a", "purchase", 0)])
    rules = RankingRules(
        exclude_consumed=False, exclude_purchased=False, rebuyable_item_ids=frozenset({"d"})
    )
    mask = excluded_mask(events, USERS, ITEMS, rules, unavailable=["d", "not-an-item"])
    np.testing.assert_array_equal(mask, [[False, False, False, True], [False, False, False, True]])


def test_excluded_at_cells_equals_the_mask_there() -> None:
    # The cell form ranking uses must say what the matrix says, rules and exemptions included.
    rng = np.random.default_rng(5)
    users = [f"u{n}" for n in range(6)]
    items = [f"i{n}" for n in range(9)]
    kinds = ["view", "purchase", "impression", "click", "add_to_cart"]
    events = events_frame(
        [
            (rng.choice(users), rng.choice(items), rng.choice(kinds), int(rng.integers(0, 5)))
            for _ in range(40)
        ]
    )
    rows = rng.integers(0, len(users), 80)
    columns = rng.integers(0, len(items), 80)
    for rules in (
        RankingRules(),
        RankingRules(rebuyable_item_ids=frozenset({"i1", "i2"})),
        RankingRules(exclude_consumed=False),
        RankingRules(exclude_consumed=False, exclude_purchased=False),
    ):
        for unavailable in ((), ("i2", "i7", "not-an-item")):
            mask = excluded_mask(events, users, items, rules, unavailable)
            at = excluded_at(events, users, items, rows, columns, rules, unavailable)
            np.testing.assert_array_equal(at, mask[rows, columns])


def test_excluded_mask_needs_no_event_time() -> None:
    events = events_frame([("u1", "a", "purchase", 0)]).drop(columns=[OCCURRED_AT])
    assert excluded_mask(events, USERS, ITEMS, RankingRules())[0, 0]


def test_a_dislike_penalises_items_by_their_similarity_to_it() -> None:
    events = events_frame([("u1", "a", "dislike", 0), ("u2", "a", "like", 0)])
    penalty = negative_feedback_penalty(events, USERS, ITEMS, VECTORS, RankingRules())
    # 1 - 0.5 x max(0, cosine): a itself 1, b 0.8, c 0, d -1 (clipped to 0).
    np.testing.assert_allclose(penalty, [[0.5, 0.6, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])


def test_the_closest_negative_item_sets_the_penalty() -> None:
    events = events_frame([("u1", "a", "dislike", 0), ("u1", "c", "dislike", 0)])
    penalty = negative_feedback_penalty(events, USERS, ITEMS, VECTORS, RankingRules())
    # b: cosine 0.8 to a and 0.6 to c; d: opposite a, orthogonal to c.
    np.testing.assert_allclose(penalty[0], [0.5, 0.6, 0.5, 1.0])


def test_low_ratings_count_as_negative_and_later_feedback_overrides_earlier() -> None:
    items = ["a", "b", "c", "d", "e"]
    vectors = np.eye(5)  # each item similar only to itself
    events = events_frame(
        [
            ("u1", "a", "rate", 0, 1.5),
            ("u1", "b", "rate", 0, 2.0),  # at the threshold: negative
            ("u1", "c", "rate", 0, 4.0),
            ("u1", "d", "dislike", 0),
            ("u1", "d", "like", 1),  # changed their mind
            ("u1", "e", "rate", 0),  # no value: says nothing
            ("u2", "a", "like", 0),
            ("u2", "a", "rate", 1, 0.5),
        ]
    )
    penalty = negative_feedback_penalty(events, USERS, items, vectors, RankingRules())
    np.testing.assert_allclose(penalty, [[0.5, 0.5, 1.0, 1.0, 1.0], [0.5, 1.0, 1.0, 1.0, 1.0]])
    strict = RankingRules(low_rating_threshold=1.0, negative_feedback_strength=0.2)
    penalty = negative_feedback_penalty(events, USERS, items, vectors, strict)
    np.testing.assert_allclose(penalty[0], [1.0, 1.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(penalty[1], [0.8, 1.0, 1.0, 1.0, 1.0])


def test_zero_vectors_are_similar_to_nothing() -> None:
    vectors = VECTORS.copy()
    vectors[1] = 0.0
    events = events_frame([("u1", "a", "dislike", 0)])
    penalty = negative_feedback_penalty(events, USERS, ITEMS, vectors, RankingRules())
    np.testing.assert_allclose(penalty[0], [0.5, 1.0, 1.0, 1.0])


def test_item_vectors_of_the_wrong_shape_are_refused() -> None:
    events = events_frame([("u1", "a", "dislike", 0)])
    with pytest.raises(ValueError, match="item_ids order"):
        negative_feedback_penalty(events, USERS, ITEMS, VECTORS[:3], RankingRules())


def test_the_pipelines_rules_push_the_item_most_like_a_dislike_below_a_less_similar_one() -> None:
    scores = np.array([[0.0, 1.0, 0.9, 0.1], [0.0, 1.0, 0.9, 0.1]])
    events = events_frame([("u1", "a", "dislike", 0)])
    rows, columns = np.divmod(np.arange(scores.size), scores.shape[1])
    rules = RankingRules()
    excluded = excluded_at(events, USERS, ITEMS, rows, columns, rules).reshape(scores.shape)
    multipliers = feedback_multipliers_at(
        events, USERS, ITEMS, rows, columns, rules, item_vectors=VECTORS
    ).reshape(scores.shape)
    adjusted = np.where(excluded, -np.inf, scores * multipliers)
    assert adjusted[0, 0] == -np.inf  # a disliked item was consumed
    np.testing.assert_allclose(adjusted[0, 1:], [0.6, 0.9, 0.1])
    np.testing.assert_allclose(adjusted[1], [0.0, 1.0, 0.9, 0.1])  # u2 untouched
    assert top_k_indices(adjusted, 1)[0, 0] == ITEMS.index("c")


def test_the_rules_refuse_repeated_ids_and_untyped_times() -> None:
    events = events_frame([])
    with pytest.raises(ValueError, match="unique"):
        feedback_multipliers(events, USERS, ["a", "a", "b", "c"], RankingRules())
    with pytest.raises(ValueError, match="to_datetime"):
        feedback_multipliers(
            events.assign(**{OCCURRED_AT: events[OCCURRED_AT].astype(str)}),
            USERS,
            ITEMS,
            RankingRules(),
        )


def test_mmr_picks_a_diverse_item_over_a_near_duplicate() -> None:
    # a, a near duplicate of a, and b.
    vectors = np.array([[1.0, 0.0], [0.99, np.sqrt(1 - 0.99**2)], [0.0, 1.0]])
    scores = np.array([[1.0, 0.95, 0.7]])
    np.testing.assert_array_equal(top_k_indices(scores, 2), [[0, 1]])
    # Second pick: a-again gains 0.5 x 0.95 - 0.5 x 0.99 < 0, b gains 0.5 x 0.7.
    np.testing.assert_array_equal(mmr_rerank(scores, vectors, 2, 0.5), [[0, 2]])
    np.testing.assert_array_equal(mmr_rerank(scores, vectors, 3, 0.5), [[0, 2, 1]])


def test_mmr_with_lambda_one_is_plain_top_k() -> None:
    generator = np.random.default_rng(7)
    scores = generator.random((6, 40))
    scores[:, :5] = 0.5  # ties go to the lower column in both
    vectors = generator.normal(size=(40, 8))
    np.testing.assert_array_equal(mmr_rerank(scores, vectors, 10, 1.0), top_k_indices(scores, 10))


def test_mmr_never_picks_excluded_items() -> None:
    scores = np.array([[5.0, -np.inf, 1.0, -np.inf], [-np.inf] * 4])
    picks = mmr_rerank(scores, VECTORS, 3, 0.3)
    np.testing.assert_array_equal(picks, [[0, 2, -1], [-1, -1, -1]])


def test_mmr_looks_only_at_the_best_candidates() -> None:
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    scores = np.array([[1.0, 0.9, 0.8, 0.1]])
    assert mmr_rerank(scores, vectors, 2, 0.5)[0, 1] == 3
    np.testing.assert_array_equal(mmr_rerank(scores, vectors, 2, 0.5, candidates=3), [[0, 1]])


def context_events() -> pd.DataFrame:
    """25 clicks on a at 9:00 (context JSON), 25 on b at 21:00 (from the time), 2 on c at 3:00."""
    rows = [("u1", "a", "click", 0, None, '{"hour": 9, "device": "tv"}')] * 25
    rows += [("u2", "b", "click", 12)] * 25
    rows += [("u1", "c", "click", 18)] * 2
    return events_frame(rows)


def test_context_trending_picks_the_items_of_the_hour() -> None:
    by_hour = context_trending(context_events(), ITEMS)
    assert sorted(by_hour) == ["21", "9"]  # hour 3 has too few events
    assert by_hour["9"].argmax() == ITEMS.index("a")
    assert by_hour["21"].argmax() == ITEMS.index("b")
    assert by_hour["9"][ITEMS.index("b")] == 0.0
    assert sorted(context_trending(context_events(), ITEMS, min_events=2)) == ["21", "3", "9"]


def test_context_values_are_normalised_alike_for_events_and_requests() -> None:
    assert context_value('{"hour": "09"}') == "9"
    assert context_value({"hour": 21.0}) == "21"
    assert context_value("not json", pd.Timestamp("2024-01-01 13:45")) == "13"
    assert context_value(None, pd.Timestamp("2024-01-01 13:45"), "weekday") == "0"
    assert context_value('{"device": "tv"}', None, "device") == "tv"
    assert context_value(None) is None
    # Text no served list could be keyed by is no context.
    assert context_value({"device": "t" * 255}, None, "device") == "t" * 255
    assert context_value({"device": "t" * 256}, None, "device") is None
    assert context_value({"device": "t\x00v"}, None, "device") is None
    events = events_frame([("u1", "a", "click", hour, None, '{"hour": "09"}') for hour in range(3)])
    assert sorted(context_trending(events, ITEMS, min_events=1)) == ["9"]


def test_context_trending_lists_rank_the_context_then_fill_from_global_trending() -> None:
    items = ["a", "b", "c", "d", "e"]
    by_hour = {"9": np.array([0.0, 3.0, 1.0, 0.0, 0.0]), "21": np.array([0.0, 0.0, 0.0, 0.0, 2.0])}
    overall = np.array([5.0, 1.0, 1.0, 4.0, 0.0])
    lists = context_trending_lists(by_hour, items, 3, global_trending=overall, exclude=["a"])
    nine = lists[lists["context_value"] == "9"]
    assert nine["item_id"].tolist() == ["b", "c", "d"]  # "a" trends most but is excluded
    assert nine["rank"].tolist() == [1, 2, 3]
    np.testing.assert_allclose(nine["score"], [1.0, 1.0 / 3.0, 0.0])
    assert nine["reason"].tolist() == [REASON_TRENDING_CONTEXT] * 2 + [TRENDING_NOW]
    evening = lists[lists["context_value"] == "21"]
    # b and c tie in global trending: the earlier item fills first.
    assert evening["item_id"].tolist() == ["e", "d", "b"]
    np.testing.assert_allclose(evening["score"], [1.0, 0.0, 0.0])
    assert evening["reason"].tolist() == [REASON_TRENDING_CONTEXT] + [TRENDING_NOW] * 2


def test_context_trending_lists_break_context_ties_by_global_trending() -> None:
    lists = context_trending_lists(
        {"9": np.array([2.0, 2.0, 2.0])}, ["a", "b", "c"], 2, global_trending=[0.0, 1.0, 0.5]
    )
    assert lists["item_id"].tolist() == ["b", "c"]
    assert list(context_trending_lists({}, ["a"], 2).columns) == [
        "context_value",
        "rank",
        "item_id",
        "score",
        "reason",
    ]
    with pytest.raises(ValueError, match="context '9' has shape"):
        context_trending_lists({"9": np.ones(2)}, ["a", "b", "c"], 2)


def test_event_time_only_shifting_every_timestamp_changes_nothing() -> None:
    events = pd.concat(
        [
            context_events(),
            events_frame(
                [("u1", "d", "impression", hour) for hour in range(4)]
                + [("u2", "a", "click", 1), ("u2", "c", "dislike", 30), ("u2", "b", "purchase", 2)]
            ),
        ],
        ignore_index=True,
    )
    shifted = events.assign(**{OCCURRED_AT: events[OCCURRED_AT] + pd.Timedelta(days=3653)})
    rules = RankingRules(exclude_consumed=False)
    for function in (
        lambda frame: feedback_multipliers(frame, USERS, ITEMS, rules),
        lambda frame: excluded_mask(frame, USERS, ITEMS, rules),
        lambda frame: negative_feedback_penalty(frame, USERS, ITEMS, VECTORS, rules),
    ):
        np.testing.assert_array_equal(function(events), function(shifted))
    before, after = context_trending(events, ITEMS), context_trending(shifted, ITEMS)
    assert before.keys() == after.keys()
    for hour in before:
        np.testing.assert_array_equal(before[hour], after[hour])


def test_rules_run_on_a_thousand_users_and_ten_thousand_items() -> None:
    generator = np.random.default_rng(0)
    n_users, n_items, n_events = 1_000, 10_000, 100_000
    users = [f"u{number}" for number in range(n_users)]
    items = [f"i{number}" for number in range(n_items)]
    event_types = np.array(
        ["impression", "view", "click", "add_to_cart", "purchase", "rate", "like", "dislike"]
    )
    events = pd.DataFrame(
        {
            USER_ID: np.array(users)[generator.integers(0, n_users, n_events)],
            ITEM_ID: np.array(items)[generator.integers(0, n_items, n_events)],
            EVENT_TYPE: event_types[generator.integers(0, len(event_types), n_events)],
            OCCURRED_AT: START + pd.to_timedelta(generator.integers(0, 10**6, n_events), "s"),
            VALUE: generator.uniform(0.5, 5.0, n_events),
            CONTEXT: None,
        }
    )
    vectors = generator.normal(size=(n_items, 32)).astype(np.float32)
    scores = generator.random((n_users, n_items))
    by_hour = context_trending(events, items)
    assert set(by_hour) <= {str(hour) for hour in range(24)}
    rules = RankingRules(rebuyable_item_ids=frozenset(items[:10]))
    excluded = excluded_mask(events, users, items, rules, unavailable=items[-10:])
    multipliers = feedback_multipliers(events, users, items, rules)
    multipliers *= negative_feedback_penalty(events, users, items, vectors, rules)
    adjusted = np.where(excluded, -np.inf, scores * multipliers)
    assert adjusted.shape == (n_users, n_items)
    assert not np.isnan(adjusted).any()
    assert np.isneginf(adjusted[:, -10:]).all()
    finite = adjusted[np.isfinite(adjusted)]
    assert finite.min() >= 0.0 and finite.max() <= 1.0
    picks = mmr_rerank(adjusted, vectors, 10, 0.7)
    assert picks.shape == (n_users, 10)
    assert np.isfinite(np.take_along_axis(adjusted, picks, axis=1)).all()


def test_new_item_slots_must_be_a_non_negative_integer() -> None:
    assert RankingRules(new_item_slots=2).new_item_slots == 2
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="new_item_slots"):
            RankingRules(new_item_slots=bad)


# ---------------------------------------------------------------------------------------------
# The one-user forms the request path uses agree with the matrix forms


@pytest.mark.parametrize(
    "rules",
    [
        RankingRules(),
        RankingRules(exclude_consumed=False),
        RankingRules(exclude_consumed=False, exclude_purchased=False, free_impressions=0),
        RankingRules(exclude_consumed=False, rebuyable_item_ids=frozenset({"a"})),
    ],
    ids=["defaults", "keep-consumed", "keep-all", "rebuyable"],
)
def test_one_user_rules_agree_with_the_matrix_rules(rules: RankingRules) -> None:
    rng = np.random.default_rng(7)
    kinds = ["impression", "view", "click", "add_to_cart", "purchase", "rate", "like", "dislike"]
    for _ in range(200):
        count = int(rng.integers(1, 12))
        rows = [
            ("u1", str(rng.choice(ITEMS)), str(rng.choice(kinds)), int(rng.integers(0, 6)), 3.0)
            for _ in range(count)
        ]
        events = events_frame(rows)
        if rng.random() < 0.2:  # some events without a time
            events.loc[events.index[0], OCCURRED_AT] = pd.NaT
        records = [
            {**row, OCCURRED_AT: None if pd.isna(row[OCCURRED_AT]) else row[OCCURRED_AT]}
            for row in events.to_dict("records")
        ]
        excluded = excluded_mask(events, ["u1"], ITEMS, rules)[0]
        assert one_user_excluded(records, rules) == {
            item for item, out in zip(ITEMS, excluded, strict=True) if out
        }
        multipliers = feedback_multipliers(events, ["u1"], ITEMS, rules)[0]
        found = one_user_feedback(records, rules)
        assert [found.get(item, 1.0) for item in ITEMS] == pytest.approx(list(multipliers))


def test_one_user_rules_known_answers() -> None:
    rules = RankingRules(exclude_consumed=False)
    events = [
        {ITEM_ID: "a", EVENT_TYPE: "click", OCCURRED_AT: START},
        {ITEM_ID: "b", EVENT_TYPE: "click", OCCURRED_AT: START},
        {ITEM_ID: "b", EVENT_TYPE: "purchase", OCCURRED_AT: START + pd.Timedelta(hours=1)},
        *({ITEM_ID: "c", EVENT_TYPE: "impression", OCCURRED_AT: START} for _ in range(4)),
    ]
    assert one_user_excluded(events, rules) == {"b"}  # purchased; clicks are kept
    # a: a click without conversion; c: 4 unclicked impressions, 2 free -> 0.85 ** 2.
    assert one_user_feedback(events, rules) == pytest.approx({"a": 0.9, "c": 0.85**2})
    assert one_user_excluded(events, RankingRules()) == {"a", "b"}  # a click is consumption


def test_feedback_multipliers_at_cells_are_the_matrices_product_there() -> None:
    """Ranking asks for its candidates' cells only: the same numbers as the two matrices."""
    events = events_frame(
        [
            ("u1", "a", "dislike", 0),
            ("u1", "b", "impression", 1),
            ("u1", "b", "impression", 2),
            ("u1", "b", "impression", 3),
            ("u1", "c", "click", 4),
            ("u2", "d", "rate", 0, 1.0),
            ("u2", "c", "impression", 5),
        ]
    )
    rules = RankingRules(free_impressions=1)
    rows = np.array([0, 0, 0, 1, 1, 1, 0])
    columns = np.array([1, 2, 3, 0, 2, 3, 1])  # a repeated cell, any order
    at_cells = feedback_multipliers_at(events, USERS, ITEMS, rows, columns, rules, VECTORS)
    product = feedback_multipliers(events, USERS, ITEMS, rules) * negative_feedback_penalty(
        events, USERS, ITEMS, VECTORS, rules
    )
    np.testing.assert_allclose(at_cells, product[rows, columns])
    # u1's b: two impressions past the free one (impression_demotion ** 2) and 0.8 similar to the
    # disliked a (1 - 0.5 x 0.8); u2's a: opposite the low-rated d, so untouched.
    assert at_cells[0] == pytest.approx(rules.impression_demotion**2 * 0.6)
    assert at_cells[3] == 1.0
    without_vectors = feedback_multipliers_at(events, USERS, ITEMS, rows, columns, rules)
    np.testing.assert_allclose(
        without_vectors, feedback_multipliers(events, USERS, ITEMS, rules)[rows, columns]
    )
    # Vectors asked for by id: only the items negative feedback compares are looked up (the
    # candidates of users with negative feedback and what they disliked), with the same result.
    asked = []

    def vectors_of(ids: pd.Index) -> np.ndarray:
        asked.extend(ids)
        return VECTORS[pd.Index(ITEMS).get_indexer(ids)]

    looked_up = feedback_multipliers_at(events, USERS, ITEMS, rows, columns, rules, vectors_of)
    np.testing.assert_array_equal(looked_up, at_cells)
    assert sorted(asked) == ["a", "b", "c", "d"]  # u1's candidates and a; u2's d
    asked.clear()
    only_u2 = rows == 1  # without u2's low rating, u2 has no negative feedback to compare
    feedback_multipliers_at(
        events[events[EVENT_TYPE] != "rate"],
        USERS,
        ITEMS,
        rows[only_u2],
        columns[only_u2],
        rules,
        vectors_of,
    )
    assert asked == []


def test_display_titles_fall_back_to_the_id_without_a_usable_title() -> None:
    titles = pd.Series({"a": "Alpha", "b": None, "c": "  ", "d": np.nan, "e": 5})
    items = np.array(["a", "b", "c", "d", "e", "unknown"], dtype=object)
    shown = display_titles(items, titles)
    assert shown.tolist() == ["Alpha", "b", "c", "d", "5", "unknown"]
    # The same as asking one item at a time.
    assert shown.tolist() == [display_title(item, titles) for item in items]
