"""The ranker fused with a baseline: ranks within users, reciprocal-rank fusion (known answers),
and a fused pipeline's name, order and life (refresh, pickling)."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from ml.constants import ITEM_ID, USER_ID
from ml.pipeline.features import ranks_within
from ml.pipeline.pipeline import (
    RANKER,
    PipelineConfig,
    RankingPipeline,
    fused_scores,
    parse_name,
)
from tests.ml.pipeline.tiny import shop_snapshot, shopper


class FixedRanker:
    """A trained ranker's interface with scores chosen by the test: the item's position in
    ``preferred`` (first is best), so the fusion's inputs are known exactly."""

    fitted = True

    def __init__(self, preferred: list[str]) -> None:
        self.preferred = preferred

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        place = {item: len(self.preferred) - n for n, item in enumerate(self.preferred)}
        return frame[ITEM_ID].map(place).fillna(0).to_numpy(dtype=float)


def test_ranks_within_count_per_user_and_break_ties_by_row() -> None:
    values = np.array([0.3, 0.9, 0.9, 0.1, 0.5])
    users = np.array([0, 0, 0, 1, 1])
    np.testing.assert_array_equal(ranks_within(values, users), [3, 1, 2, 2, 1])
    # Users need not be contiguous.
    scattered = ranks_within(np.array([1.0, 5.0, 2.0]), np.array([0, 1, 0]))
    np.testing.assert_array_equal(scattered, [2, 1, 1])


def test_fusion_adds_reciprocal_ranks_with_the_partner_at_half_weight() -> None:
    ranker = np.array([3.0, 2.0, 1.0])  # ranks 1, 2, 3
    partner = np.array([0.1, 0.9, 0.5])  # ranks 3, 1, 2
    fused = fused_scores(ranker, partner, np.zeros(3, dtype=int))
    np.testing.assert_allclose(fused, [1 / 61 + 0.5 / 63, 1 / 62 + 0.5 / 61, 1 / 63 + 0.5 / 62])
    # Second by the ranker and first by the partner beats first by the ranker and last by the
    # partner, which still beats last by the ranker and ninth by the partner.
    ranker = np.arange(10, 0, -1, dtype=float)  # candidate 0 first ... 9 last
    partner = np.array([1.0, 10.0, *np.arange(9, 1, -1)])  # candidate 1 first, 0 last
    order = np.argsort(-fused_scores(ranker, partner, np.zeros(10, dtype=int)), kind="stable")
    assert order[0] == 1 and list(order).index(0) < list(order).index(9)


def test_a_pipeline_name_says_what_orders_it() -> None:
    assert parse_name("ranker+covisitation_all") == (RANKER, "covisitation_all")
    assert parse_name("ranker") == (RANKER, None)
    assert parse_name("popularity_7d") == ("popularity_7d", None)
    assert RankingPipeline(ordering=RANKER, partner="item_knn").name == "ranker+item_knn"
    assert RankingPipeline(ordering="item_knn").name == "item_knn"
    with pytest.raises(ValueError, match="only the ranker is fused"):
        RankingPipeline(ordering="item_knn", partner="covisitation")


def fused_pipeline(preferred: list[str]) -> RankingPipeline:
    config = PipelineConfig(sources=("popularity", "covisitation"), k=4, new_item_slots=0)
    fitted = RankingPipeline(config, "covisitation").fit_sources(shop_snapshot())
    return fitted.with_ordering(RANKER, FixedRanker(preferred), partner="popularity_all")


def test_a_fused_pipeline_orders_by_the_fusion_of_its_ranker_and_partner() -> None:
    behaviour = shopper()
    fused = fused_pipeline(["i5", "i6", "i4", "i3", "i2", "i1"])
    frame = fused.candidate_features(behaviour)
    scores = fused.order_scores(frame)
    users = pd.factorize(frame[USER_ID])[0]
    ranker_ranks = ranks_within(fused.ranker.predict(frame), users)
    popularity = fused.with_ordering("popularity_all").order_scores(frame)
    expected = 1 / (60 + ranker_ranks) + 0.5 / (60 + ranks_within(popularity, users))
    # The same order within each user as the hand-made fusion (scores are rescaled per user).
    for user in np.unique(users):
        mine = users == user
        np.testing.assert_array_equal(
            ranks_within(scores[mine], users[mine]), ranks_within(expected[mine], users[mine])
        )
    # Fused lists differ from the ranker's own where the partner disagrees with it.
    alone = fused.with_ordering(RANKER, fused.ranker)
    fused_items = fused.recommend(behaviour)[ITEM_ID].tolist()
    assert fused_items != alone.recommend(behaviour)[ITEM_ID].tolist()


def test_a_fused_pipeline_keeps_its_partner_when_refreshed_or_saved() -> None:
    fused = fused_pipeline(["i5", "i6", "i4", "i3", "i2", "i1"])
    newer = shop_snapshot(as_of=pd.Timestamp("2024-03-05"))
    refreshed = fused.refreshed(newer)
    assert refreshed.partner == "popularity_all" and refreshed.name == "ranker+popularity_all"
    restored = pickle.loads(pickle.dumps(fused))
    assert restored.name == fused.name
    pd.testing.assert_frame_equal(restored.recommend(shopper()), fused.recommend(shopper()))
    # A pipeline saved before fusion existed has no partner attribute of its own.
    old = RankingPipeline(ordering="covisitation")
    del old.__dict__["partner"]
    assert old.partner is None and old.name == "covisitation"
