"""The ranking pipeline on the tiny shop (see tiny.py): candidates, order, rules, slots, reasons."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from ml.constants import ITEM_ID, RANK, REASON, SCORE, USER_ID
from ml.pipeline.pipeline import (
    LIST_COLUMNS,
    RANKER,
    REASON_POPULAR,
    PipelineConfig,
    RankingPipeline,
)
from ml.pipeline.ranker import Ranker
from ml.pipeline.snapshot import Behaviour, Snapshot
from ml.rules import RankingRules
from tests.ml.pipeline.tiny import (
    NEW_ITEM,
    SHOP_AS_OF,
    SHOP_VECTORS,
    events,
    shop_events,
    shop_items,
    shop_snapshot,
    shopper,
    vectors,
)

# x viewed i2 then i1; y viewed i3 only.
SHOPPERS_ROWS = [("y", "i3", "view", "2024-02-28 12:00")]


def shoppers(*extra: tuple) -> Behaviour:
    return shopper(*SHOPPERS_ROWS, *extra)


def pipeline(
    ordering: str = "covisitation", snapshot: Snapshot | None = None, **config
) -> RankingPipeline:
    settings = {"k": 4, "new_item_slots": 0, **config}
    return RankingPipeline(PipelineConfig(**settings), ordering=ordering).fit_sources(
        snapshot or shop_snapshot()
    )


def items_of(lists: pd.DataFrame, user: str = "x") -> list[str]:
    return lists.loc[lists[USER_ID] == user, ITEM_ID].tolist()


def test_lists_never_hold_consumed_or_unavailable_items() -> None:
    items = shop_items().assign(available=[True, True, False, True, True, True, True])  # not i4
    snapshot = shop_snapshot(items=items)
    behaviour = shoppers(
        ("x", "i3", "impression", "2024-02-28 11:00"),  # seen, not consumed: may be listed
        ("w", "i6", "purchase", "2024-02-28 09:00"),
    )
    for ordering in ("covisitation", "popularity_all", "text", "item_knn"):
        lists = pipeline(ordering, snapshot, k=10, new_item_slots=1).recommend(behaviour)
        assert not {"i1", "i2", "i4"} & set(items_of(lists, "x")), ordering
        assert "i3" in items_of(lists, "x")
        assert not {"i3", "i4"} & set(items_of(lists, "y"))
        assert not {"i4", "i6"} & set(items_of(lists, "w"))
    frame = pipeline("covisitation", snapshot).candidate_features(behaviour)
    assert not {"i1", "i2", "i4"} & set(frame.loc[frame[USER_ID] == "x", ITEM_ID])


def test_every_user_gets_k_items_when_there_are_enough_candidates() -> None:
    lists = pipeline(k=3).recommend(shoppers())
    assert list(lists.columns) == list(LIST_COLUMNS)
    for user in ("x", "y"):
        mine = lists[lists[USER_ID] == user]
        assert mine[RANK].tolist() == [1, 2, 3]
        assert mine[ITEM_ID].is_unique


def test_a_single_source_orders_by_its_score_and_popularity_breaks_ties() -> None:
    # x's co-visitation: i3 (3 from i1) and i4 (1 from i1 + 4 / 2 from i2) tie; i4 is more
    # popular (4 against 3), so it leads although i3 has the lower id. i5 and i6 have no
    # co-visitation and follow by popularity.
    lists = pipeline("covisitation").recommend(shoppers())
    assert items_of(lists) == ["i4", "i3", "i5", "i6"]
    scores = lists.loc[lists[USER_ID] == "x", SCORE].to_numpy()
    assert scores[0] == pytest.approx(1.0) and scores[1] < scores[0]
    assert scores[1] > 0.99 > 0.2 > scores[2] > scores[3]
    # Only what followed the newest item (i1): i3 3, i4 1.
    assert items_of(pipeline("covisitation_last").recommend(shoppers())) == [
        "i3",
        "i4",
        "i5",
        "i6",
    ]
    # Text: i9 (cosine 0.75 to the query) and i3 (0.21); then popularity among the rest.
    assert items_of(pipeline("text").recommend(shoppers())) == [NEW_ITEM, "i3", "i4", "i5"]
    # y knows nothing co-visited: pure popularity.
    assert items_of(pipeline("covisitation").recommend(shoppers()), "y") == [
        "i2",
        "i1",
        "i4",
        "i5",
    ]


def test_a_new_item_slot_replaces_the_last_established_item() -> None:
    without = pipeline("covisitation", new_item_slots=0).recommend(shoppers())
    with_slot = pipeline("covisitation", new_item_slots=1).recommend(shoppers())
    assert NEW_ITEM not in set(without[ITEM_ID])
    for user in ("x", "y"):
        assert items_of(with_slot, user) == [*items_of(without, user)[:3], NEW_ITEM]
    assert items_of(with_slot) == ["i4", "i3", "i5", NEW_ITEM]
    # Already listed on its merits, the new item takes no extra place.
    by_text = pipeline("text", new_item_slots=1).recommend(shoppers())
    assert items_of(by_text) == [NEW_ITEM, "i3", "i4", "i5"]


def test_a_baselines_new_item_slot_takes_the_new_item_most_like_the_users_recent_items() -> None:
    # i10 is new too and its id sorts before i9's, but its vector is less like what x and y
    # viewed than i9's (cosine about 0.2 and 0.1 against 0.75 and 0.8): no source scores
    # either, so text decides.
    items = pd.concat(
        [shop_items(), pd.DataFrame({ITEM_ID: ["i10"], "title": ["Item 10"]})], ignore_index=True
    )
    text = vectors({**SHOP_VECTORS, "i10": [0.2, 0.1, 0.8, 0.55]})
    snapshot = shop_snapshot(items=items, vectors=text)
    for ordering in ("covisitation", "popularity_all", "item_knn"):
        lists = pipeline(ordering, snapshot, new_item_slots=1).recommend(shoppers())
        for user in ("x", "y"):
            assert items_of(lists, user)[-1] == NEW_ITEM, (ordering, user)
            assert "i10" not in items_of(lists, user)
    frame = pipeline("covisitation", snapshot).candidate_features(shoppers())
    assert {NEW_ITEM, "i10"} <= set(frame.loc[frame[USER_ID] == "x", ITEM_ID])


def test_reasons_name_the_recent_item_behind_each_candidate() -> None:
    lists = pipeline("covisitation", new_item_slots=1).recommend(shoppers())
    reasons = dict(
        zip(zip(lists[USER_ID], lists[ITEM_ID], strict=True), lists[REASON], strict=True)
    )
    assert reasons == {
        # i4 is co-visited more through i2 (4 / 2) than through the newer i1 (1).
        ("x", "i4"): "because you viewed Item 2",
        ("x", "i3"): "because you viewed Item 1",
        ("x", "i5"): REASON_POPULAR,
        ("x", NEW_ITEM): "new: similar to Item 2",  # cosine 0.96 to i2, 0.6 to i1
        ("y", "i2"): "similar to Item 3",  # cosine 0.6
        ("y", "i1"): REASON_POPULAR,  # cosine 0 to i3
        ("y", "i4"): REASON_POPULAR,
        ("y", NEW_ITEM): "new: similar to Item 3",
    }


@pytest.mark.parametrize("ordering", ["covisitation", "popularity_all", "text", "ease", "trending"])
def test_scores_descend_and_every_row_has_a_reason(ordering: str) -> None:
    lists = pipeline(ordering, k=6, new_item_slots=1).recommend(shoppers())
    assert len(lists) == 11  # x has 5 unconsumed items (7 minus i1, i2), y 6 (minus i3)
    assert lists[REASON].map(lambda reason: isinstance(reason, str) and bool(reason)).all()
    for _, mine in lists.groupby(USER_ID):
        assert (np.diff(mine[SCORE].to_numpy()) <= 0).all()
        assert mine[RANK].tolist() == list(range(1, len(mine) + 1))
        assert ((mine[SCORE] > 0) & (mine[SCORE] <= 1)).all()


def test_a_click_without_conversion_demotes_the_item() -> None:
    # a and b are equally popular (two views each), z less so.
    snapshot = Snapshot(
        events(
            [
                (f"p{n}", item, "view", f"2024-02-{10 + n:02d}")
                for n, item in enumerate(["a", "a", "b", "b", "z"])
            ]
        ),
        pd.DataFrame({ITEM_ID: ["a", "b", "z"]}),
    )
    behaviour = Behaviour(
        events(
            [
                ("clicked", "a", "click", "2024-02-20 10:00"),
                ("bought", "a", "click", "2024-02-20 10:00"),
                ("bought", "a", "add_to_cart", "2024-02-20 10:05"),
            ]
        ),
        users=np.array(["nobody"], dtype=object),
    )
    rules = RankingRules(exclude_consumed=False)  # a stays listable after the click
    lists = pipeline(
        "popularity_all", snapshot, sources=("popularity",), rules=rules, k=3
    ).recommend(behaviour)
    scores = {
        user: dict(zip(mine[ITEM_ID], mine[SCORE], strict=True))
        for user, mine in lists.groupby(USER_ID)
    }
    assert items_of(lists, "nobody") == ["a", "b", "z"]  # the tie goes to the lower id
    assert items_of(lists, "bought") == ["a", "b", "z"]  # the click converted
    assert items_of(lists, "clicked") == ["b", "a", "z"]
    assert scores["clicked"]["a"] == pytest.approx(0.9 * scores["clicked"]["b"])
    assert scores["bought"]["a"] == pytest.approx(scores["bought"]["b"])


def test_the_cold_start_list_is_the_popularity_order() -> None:
    for ordering in ("covisitation", "popularity_all", "item_knn"):
        cold = pipeline(ordering, k=6, new_item_slots=1).cold_start_list()
        assert cold[USER_ID].unique().tolist() == ["*"]
        assert cold[ITEM_ID].tolist() == ["i2", "i1", "i4", "i3", "i5", "i6"]
        assert (cold[REASON] == REASON_POPULAR).all()


def test_refreshed_counts_new_behaviour_and_keeps_the_ranker() -> None:
    original = pipeline("popularity_all")
    original.ranker = Ranker()
    later = pd.Timestamp("2024-03-02")
    burst = events([(f"q{n}", "i6", "view", "2024-03-01 12:00") for n in range(10)])
    newer = shop_snapshot(
        interactions=pd.concat([shop_events(), burst], ignore_index=True), as_of=later
    )
    refreshed = original.refreshed(newer)
    assert refreshed.ranker is original.ranker
    assert refreshed.ordering == "popularity_all" and refreshed.as_of == later
    assert refreshed.cold_start_list()[ITEM_ID].tolist() == ["i6", "i2", "i1", "i4"]
    assert refreshed.sources["popularity"].item_scores.loc["i6", "popularity_1d"] == 10
    assert original.cold_start_list()[ITEM_ID].tolist() == ["i2", "i1", "i4", "i3"]
    assert original.as_of == SHOP_AS_OF


def test_a_pickled_pipeline_rebuilds_its_text_index_and_lists_the_same() -> None:
    fitted = pipeline("text", new_item_slots=1)
    restored = pickle.loads(pickle.dumps(fitted))
    text = restored.sources["text"]
    assert text.index is not None and text.index.ntotal == 7
    pd.testing.assert_frame_equal(restored.recommend(shoppers()), fitted.recommend(shoppers()))
    # The restored index answers searches itself, not only the stored vectors.
    behaviour = shopper()
    assert items_of(text.scores(behaviour, behaviour.recent_items(10)))[:2] == ["i1", "i2"]


def test_a_saved_pipeline_keeps_no_events_yet_knows_its_state() -> None:
    fitted = pipeline("covisitation", new_item_slots=1)
    restored = pickle.loads(pickle.dumps(fitted))
    assert restored.snapshot.interactions.empty and restored.snapshot.covisitation.empty
    assert not fitted.snapshot.interactions.empty  # the pipeline in memory keeps its snapshot
    pd.testing.assert_frame_equal(restored.recommend(shoppers()), fitted.recommend(shoppers()))
    pd.testing.assert_frame_equal(restored.related_items(3), fitted.related_items(3))
    # Same marts: nothing to refit. One more event: the counting sources refit.
    assert restored.refreshed(shop_snapshot()) is restored
    newer = events([("z", "i1", "view", "2024-02-29 08:00")])
    later = shop_snapshot(interactions=pd.concat([shop_events(), newer]))
    assert restored.refreshed(later) is not restored


def test_orderings_that_cannot_be_ranked_say_why() -> None:
    fitted = pipeline("covisitation")
    frame = fitted.candidate_features(shoppers())
    with pytest.raises(ValueError, match="no score column 'nonsense'"):
        fitted.with_ordering("nonsense").rank(frame, shoppers())
    with pytest.raises(RuntimeError, match="not trained"):
        fitted.with_ordering(RANKER).rank(frame, shoppers())
    with pytest.raises(ValueError, match="unknown candidate sources"):
        PipelineConfig(sources=("popularity", "magic"))
    with pytest.raises(ValueError, match="popularity source is required"):
        PipelineConfig(sources=("covisitation",))
    with pytest.raises(RuntimeError, match="fit_sources"):
        _ = RankingPipeline().snapshot


def test_mmr_lets_a_dissimilar_item_pass_one_like_an_item_already_listed() -> None:
    plain = pipeline("popularity_all").recommend(shoppers())
    assert items_of(plain) == ["i4", "i3", "i5", "i6"]
    # i5 has cosine 0.6 to the listed i4; i6 none to i4 or i3.
    diverse = pipeline("popularity_all", rules=RankingRules(mmr_lambda=0.5)).recommend(shoppers())
    assert items_of(diverse) == ["i4", "i3", "i6", "i5"]
    for _, mine in diverse.groupby(USER_ID):
        assert (np.diff(mine[SCORE].to_numpy()) <= 0).all()
    relevance_only = pipeline("popularity_all", rules=RankingRules(mmr_lambda=1.0))
    pd.testing.assert_frame_equal(relevance_only.recommend(shoppers()), plain)


def test_refreshing_on_the_same_state_reuses_the_fitted_sources() -> None:
    from tests.ml.pipeline.tiny import shop_snapshot

    pipeline = RankingPipeline(PipelineConfig(k=3)).fit_sources(shop_snapshot())
    assert pipeline.refreshed(shop_snapshot()) is pipeline
    newer = shop_snapshot()
    newer.vectors.iloc[0, 0] += 0.5  # an item's text changed: its vector must be re-indexed
    assert pipeline.refreshed(newer) is not pipeline


def test_candidates_extend_the_lists_with_reasons_for_every_row() -> None:
    ranked = pipeline(k=2)
    lists, candidates = ranked.recommend_with_candidates(shoppers(), candidates=4)
    pd.testing.assert_frame_equal(lists, ranked.recommend(shoppers()))
    assert list(candidates.columns) == list(LIST_COLUMNS)
    for user in ("x", "y"):
        mine = candidates[candidates[USER_ID] == user]
        assert mine[RANK].tolist() == list(range(1, len(mine) + 1))
        assert 2 < len(mine) <= 4
        assert mine[SCORE].is_monotonic_decreasing
        # With no slots or MMR, the list is the head of the candidates, reasons included.
        listed = lists[lists[USER_ID] == user]
        head = mine.head(len(listed))
        assert head[ITEM_ID].tolist() == listed[ITEM_ID].tolist()
        assert head[REASON].tolist() == listed[REASON].tolist()
    assert candidates[REASON].map(bool).all()
    with pytest.raises(ValueError, match="candidates"):
        ranked.recommend_with_candidates(shoppers(), candidates=0)


def test_a_users_list_does_not_depend_on_who_else_is_ranked_with_them() -> None:
    # x disliked i3 (so i3 is never x's candidate); i9's text is close to i3's. Ranked alone or
    # beside y, for whom i3 is a candidate, x's dislike must demote the same items.
    fitted = pipeline(k=6)
    disliking = ("x", "i3", "dislike", "2024-02-28 11:00")
    alone = fitted.recommend(shopper(disliking))
    together = fitted.recommend(shopper(disliking, ("y", "i4", "view", "2024-02-28 12:00")))
    pd.testing.assert_frame_equal(alone, together[together[USER_ID] == "x"])


def test_ranking_a_block_at_a_time_gives_what_ranking_everyone_at_once_gives() -> None:
    behaviour = shoppers(
        ("w", "i6", "view", "2024-02-28 09:00"), ("v", "i1", "click", "2024-02-28 10:00")
    )
    one_block = pipeline(k=3, new_item_slots=1, users_per_block=1_000)
    per_user = pipeline(k=3, new_item_slots=1, users_per_block=1)
    for left, right in zip(
        one_block.recommend_with_candidates(behaviour, candidates=5),
        per_user.recommend_with_candidates(behaviour, candidates=5),
        strict=True,
    ):
        pd.testing.assert_frame_equal(left, right)
    pd.testing.assert_frame_equal(one_block.recommend(behaviour), per_user.recommend(behaviour))
    assert set(per_user.recommend(behaviour)[USER_ID]) == {"v", "w", "x", "y"}


def test_blocks_split_users_with_all_their_events() -> None:
    behaviour = shoppers(
        ("w", "i6", "view", "2024-02-28 09:00"), ("w", "i1", "view", "2024-02-28 10:00")
    )
    blocks = list(behaviour.blocks(2))
    assert [list(block.users) for block in blocks] == [["w", "x"], ["y"]]
    for block in blocks:
        # What a Behaviour of the block's users built from scratch holds (a block is not
        # checked and converted again): the same events, grouped by user in their order.
        built = behaviour.for_users(block.users)
        by_user = built.events.sort_values(USER_ID, kind="stable").reset_index(drop=True)
        pd.testing.assert_frame_equal(block.events, by_user)
        assert list(block.users) == list(built.users)
    with pytest.raises(ValueError, match="block size"):
        next(behaviour.blocks(0))


def test_shares_split_consecutive_users_by_what_they_cost_to_rank() -> None:
    heavy = [("a", f"i{n % 7}", "view", f"2024-02-{n + 1:02d} 09:00") for n in range(20)]
    light = [(user, "i1", "view", "2024-02-28 10:00") for user in "bcdef"]
    behaviour = Behaviour(events([*heavy, *light]))
    # a: 20 events + 2 = 22; b..f: 1 + 2 = 3 each (15): a alone is more than half the cost.
    parts = list(behaviour.shares(2, events_per_user=2.0))
    assert [list(part.users) for part in parts] == [["a"], ["b", "c", "d", "e", "f"]]
    # Users alone decide when events are free of cost: three and three.
    parts = list(behaviour.shares(2, events_per_user=1e9))
    assert [list(part.users) for part in parts] == [["a", "b", "c"], ["d", "e", "f"]]
    for part in parts:
        expected = behaviour.events[behaviour.events[USER_ID].isin(part.users)]
        assert len(part.events) == len(expected)
    # Never more parts than users, never an empty part.
    parts = list(behaviour.shares(10, events_per_user=2.0))
    assert [list(part.users) for part in parts] == [[user] for user in "abcdef"]
    assert list(Behaviour(events([])).shares(2, 1.0)) == []
    with pytest.raises(ValueError, match="parts"):
        next(behaviour.shares(0, 1.0))
