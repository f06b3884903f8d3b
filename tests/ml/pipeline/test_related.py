"""Known answers for RankingPipeline.related_items on the tiny shop (see tests/ml/pipeline/tiny.py).

Co-visited items score 0.5 + 0.5 * weight / the item's strongest weight; text neighbours
0.5 * cosine. In the shop, i1 -> i3 weighs 3 and i1 -> i4 weighs 1, so i1's related items are
i3 (1.0), i4 (0.5 + 0.5 / 3), then its text neighbours i2 (cosine 0.8) and i9 (0.6).
"""

from __future__ import annotations

import pandas as pd
import pytest

from ml.constants import ITEM_ID, RANK, REASON, SCORE
from ml.pipeline.pipeline import (
    RELATED_COLUMNS,
    RELATED_ITEM_ID,
    PipelineConfig,
    RankingPipeline,
)
from ml.pipeline.snapshot import Snapshot
from tests.ml.pipeline.tiny import NEW_ITEM, PAIR_DATE, pairs, shop_items, shop_snapshot

TOGETHER = "often viewed together"
TEXT = "similar text"


def fitted(snapshot: Snapshot, sources: tuple[str, ...] = ("popularity", "covisitation", "text")):
    return RankingPipeline(PipelineConfig(sources=sources)).fit_sources(snapshot)


def related_of(related: pd.DataFrame, item: str) -> list[tuple[str, float, str]]:
    rows = related[related[ITEM_ID] == item].sort_values(RANK)
    return [
        (other, round(score, 4), reason)
        for other, score, reason in rows[[RELATED_ITEM_ID, SCORE, REASON]].itertuples(
            index=False, name=None
        )
    ]


def test_covisited_items_come_first_then_text_neighbours() -> None:
    related = fitted(shop_snapshot()).related_items(k=3)
    assert list(related.columns) == list(RELATED_COLUMNS)
    assert related_of(related, "i1") == [
        ("i3", 1.0, TOGETHER),
        ("i4", 0.6667, TOGETHER),
        ("i2", 0.4, TEXT),
    ]
    assert related_of(related, "i2") == [
        ("i4", 1.0, TOGETHER),
        (NEW_ITEM, 0.48, TEXT),
        ("i1", 0.4, TEXT),
    ]
    # Orthogonal vectors are not related: i4 has one neighbour with a positive cosine.
    assert related_of(related, "i4") == [("i5", 0.3, TEXT)]


def test_a_brand_new_item_gets_text_neighbours() -> None:
    related = fitted(shop_snapshot()).related_items(k=3)
    assert related_of(related, NEW_ITEM) == [
        ("i2", 0.48, TEXT),
        ("i3", 0.4, TEXT),
        ("i1", 0.3, TEXT),
    ]


def test_ranks_scores_and_no_duplicates_or_self() -> None:
    related = fitted(shop_snapshot()).related_items(k=10)
    assert set(related[ITEM_ID]) == {"i1", "i2", "i3", "i4", "i5", "i6", NEW_ITEM}
    assert not related.duplicated([ITEM_ID, RELATED_ITEM_ID]).any()
    assert (related[ITEM_ID] != related[RELATED_ITEM_ID]).all()
    assert related[SCORE].between(0.0, 1.0).all()
    for _, rows in related.groupby(ITEM_ID):
        assert rows[RANK].tolist() == list(range(1, len(rows) + 1))
        assert rows[SCORE].is_monotonic_decreasing


def test_an_item_both_covisited_and_similar_is_listed_once_as_covisited() -> None:
    covisited = pairs([("i1", "i2", PAIR_DATE, 2.0), ("i1", "i3", PAIR_DATE, 4.0)])
    related = fitted(shop_snapshot(covisitation=covisited)).related_items(k=3)
    assert related_of(related, "i1") == [
        ("i3", 1.0, TOGETHER),
        ("i2", 0.75, TOGETHER),
        (NEW_ITEM, 0.3, TEXT),
    ]


def test_unavailable_items_are_never_listed() -> None:
    items = shop_items().assign(available=lambda frame: frame[ITEM_ID] != "i3")
    related = fitted(shop_snapshot(items=items)).related_items(k=3)
    assert "i3" not in set(related[RELATED_ITEM_ID])
    # i4 is now i1's strongest listed co-visited item.
    assert related_of(related, "i1") == [
        ("i4", 1.0, TOGETHER),
        ("i2", 0.4, TEXT),
        (NEW_ITEM, 0.3, TEXT),
    ]
    assert related_of(related, NEW_ITEM) == [("i2", 0.48, TEXT), ("i1", 0.3, TEXT)]


def test_without_vectors_only_covisitation_is_used() -> None:
    related = fitted(shop_snapshot(vectors=None)).related_items(k=5)
    assert set(related[REASON]) == {TOGETHER}
    assert set(related[ITEM_ID]) == {"i1", "i2"}


def test_without_related_sources_nothing_is_related() -> None:
    related = fitted(shop_snapshot(), sources=("popularity",)).related_items(k=5)
    assert related.empty
    assert list(related.columns) == list(RELATED_COLUMNS)


def test_k_must_be_positive() -> None:
    with pytest.raises(ValueError, match="k must be at least 1"):
        fitted(shop_snapshot()).related_items(k=0)
