"""Candidate sources on hand-built snapshots, against hand-computed scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.constants import ITEM_ID, USER_ID
from ml.pipeline.snapshot import Behaviour, Snapshot
from ml.pipeline.sources import (
    CoVisitationSource,
    EASESource,
    ItemKNNSource,
    PopularitySource,
    TextNeighbourSource,
    merged_scores,
    recency_weight,
    sparse_top_per_row,
    top_per_user,
)
from tests.ml.pipeline.tiny import events, pairs, vectors

AS_OF = pd.Timestamp("2024-01-31")
# Ages in days before AS_OF: 0.5, 0.25, 2, 6.9, 7.1, 244 and 426; the impression and the
# dislike carry no positive weight.
EVENTS = events(
    [
        ("u1", "i1", "view", "2024-01-30 12:00"),
        ("u3", "i2", "purchase", "2024-01-30 18:00"),
        ("u1", "i2", "view", "2024-01-29 00:00"),
        ("u2", "i1", "view", "2024-01-24 02:24"),
        ("u2", "i3", "view", "2024-01-23 21:36"),
        ("u3", "i1", "view", "2023-06-01"),
        ("u3", "i4", "view", "2022-12-01"),
        ("u3", "i5", "impression", "2024-01-30 20:00"),
        ("u2", "i2", "dislike", "2024-01-30 06:00"),
    ]
)
ITEMS = pd.DataFrame({ITEM_ID: ["i1", "i2", "i3", "i4", "i5", "i9"]})
# i9 has a vector and no events; i5 has no vector.
VECTORS = vectors(
    {
        "i1": [1.0, 0.0, 0.0],
        "i2": [0.8, 0.6, 0.0],
        "i3": [0.0, 1.0, 0.0],
        "i4": [0.0, 0.0, 1.0],
        "i9": [0.6, 0.8, 0.0],
    }
)
# Half-life 10 days: pairs dated 21 January weigh 1/2, those of 11 January 1/4.
PAIRS = pairs(
    [
        ("i1", "i2", "2024-01-21", 2.0),
        ("i1", "i2", "2024-01-11", 4.0),
        ("i1", "i3", "2024-01-21", 1.0),
        ("i2", "i3", "2024-01-21", 4.0),
        ("i2", "i4", "2024-01-11", 8.0),
    ]
)


def snapshot(**changes) -> Snapshot:
    parts = {"interactions": EVENTS, "items": ITEMS, "as_of": AS_OF}
    parts.update(changes)
    return Snapshot(**parts)


def viewer(*items: str, user: str = "x") -> Behaviour:
    """A user who viewed `items` in this order (the last is the newest)."""
    return Behaviour(
        events(
            [(user, item, "view", AS_OF + pd.Timedelta(hours=n)) for n, item in enumerate(items)]
        )
    )


def by_item(frame: pd.DataFrame, column: str, user: str = "x") -> dict[str, float]:
    mine = frame[frame[USER_ID] == user]
    return dict(zip(mine[ITEM_ID], mine[column].astype(float), strict=True))


def test_recency_weight_is_one_over_one_plus_recency() -> None:
    np.testing.assert_allclose(recency_weight(np.array([0, 1, 3])), [1.0, 0.5, 0.25])


# --- popularity ------------------------------------------------------------------------------
def test_popularity_windows_count_the_positive_events_inside_each_window() -> None:
    source = PopularitySource(event_windows=(2, 3)).fit(snapshot())
    scores = source.item_scores
    expected = {
        # i1: 0.5, 6.9 and 244 days old; i2: a purchase (5) 0.25 days and a view 2 days old;
        # i3: 7.1 days; i4: 426 days.
        "popularity_1d": {"i1": 1, "i2": 5, "i3": 0, "i4": 0},
        "popularity_7d": {"i1": 2, "i2": 6, "i3": 0, "i4": 0},
        "popularity_30d": {"i1": 2, "i2": 6, "i3": 1, "i4": 0},
        "popularity_365d": {"i1": 3, "i2": 6, "i3": 1, "i4": 0},
        "popularity_all": {"i1": 3, "i2": 6, "i3": 1, "i4": 1},
        # The newest positive events are i2 (purchase), then i1, then i2 (view).
        "popularity_last_2": {"i1": 1, "i2": 5, "i3": 0, "i4": 0},
        "popularity_last_3": {"i1": 1, "i2": 6, "i3": 0, "i4": 0},
    }
    for column, values in expected.items():
        for item, value in values.items():
            assert scores.loc[item, column] == value, (column, item)
    # The impression-only item, the catalog-only item: nothing anywhere.
    assert (scores.loc[["i5", "i9"]] == 0).all().all()
    trending = {
        "i1": 2 ** (-0.5 / 7) + 2 ** (-6.9 / 7) + 2 ** (-244 / 7),
        "i2": 5 * 2 ** (-0.25 / 7) + 2 ** (-2 / 7),
        "i3": 2 ** (-7.1 / 7),
    }
    for item, value in trending.items():
        assert scores.loc[item, "trending"] == pytest.approx(value)


def test_popularity_nominates_the_same_scored_items_for_every_user() -> None:
    source = PopularitySource(event_windows=(2,)).fit(snapshot())
    behaviour = Behaviour(EVENTS.iloc[:0], users=np.array(["a", "b"], dtype=object))
    scores = source.scores(behaviour, behaviour.recent_items(5))
    assert sorted(scores.loc[scores[USER_ID] == "a", ITEM_ID]) == ["i1", "i2", "i3", "i4"]
    mine, theirs = (
        scores[scores[USER_ID] == user].drop(columns=USER_ID).reset_index(drop=True)
        for user in ("a", "b")
    )
    pd.testing.assert_frame_equal(mine, theirs)
    features = source.item_features(pd.Series(["i2", "unknown", "i2"]))
    assert features["popularity_all"].tolist() == [6.0, 0.0, 6.0]


def test_popularity_keeps_each_windows_best_items() -> None:
    source = PopularitySource(day_windows=(1,), event_windows=(), per_user=1).fit(snapshot())
    behaviour = Behaviour(EVENTS.iloc[:0], users=np.array(["a"], dtype=object))
    scores = source.scores(behaviour, behaviour.recent_items(5))
    # The best by the 1-day window, by all time and by trending is i2 every time.
    assert scores[ITEM_ID].tolist() == ["i2"]
    # Refitted on other behaviour (serving refits on the newest marts), it names the new best:
    # every block asks for the best items, so they are kept, and a fit must not keep them.
    later = EVENTS.assign(**{ITEM_ID: EVENTS[ITEM_ID].replace({"i2": "i9", "i9": "i2"})})
    assert source.fit(snapshot(interactions=later)).best_items().tolist() == ["i9"]
    assert source.fit(snapshot()).best_items().tolist() == ["i2"]


# --- co-visitation ---------------------------------------------------------------------------
def test_covisitation_scores_are_recency_weighted_sums_of_decayed_pairs() -> None:
    source = CoVisitationSource(half_life_days=10.0).fit(snapshot(covisitation=PAIRS))
    behaviour = viewer("i1", "i2")  # i2 is the newest (weight 1), i1 before it (weight 1/2)
    scores = source.scores(behaviour, behaviour.recent_items(10))
    # i1 -> i2: 2 x 1/2 + 4 x 1/4 = 2 decayed (6 in all), through i1 at weight 1/2.
    # i3: i2 -> i3 4 x 1/2 = 2 (4) at 1; i1 -> i3 1 x 1/2 (1) at 1/2.
    # i4: i2 -> i4 8 x 1/4 = 2 (8) at 1.
    assert by_item(scores, "covisitation") == pytest.approx({"i2": 1.0, "i3": 2.25, "i4": 2.0})
    assert by_item(scores, "covisitation_all") == pytest.approx({"i2": 3.0, "i3": 4.5, "i4": 8.0})
    # What followed the newest item (i2) alone: i2 itself is related only to i1.
    assert by_item(scores, "covisitation_last") == pytest.approx({"i2": 0.0, "i3": 4.0, "i4": 8.0})


def test_covisitation_contributions_name_the_recent_item_behind_each_candidate() -> None:
    source = CoVisitationSource(half_life_days=10.0).fit(snapshot(covisitation=PAIRS))
    behaviour = viewer("i1", "i2")
    contributions = source.contributions(behaviour.recent_items(10))
    rows = {
        (source_item, item): value
        for source_item, item, value in zip(
            contributions["source_item_id"],
            contributions[ITEM_ID],
            contributions["covisitation_all"],
            strict=True,
        )
    }
    assert rows == pytest.approx(
        {("i1", "i2"): 3.0, ("i1", "i3"): 0.5, ("i2", "i3"): 4.0, ("i2", "i4"): 8.0}
    )


def test_covisitation_contributions_keep_only_the_asked_pairs() -> None:
    source = CoVisitationSource(half_life_days=10.0).fit(snapshot(covisitation=PAIRS))
    recent = pd.concat(
        [viewer("i1", "i2").recent_items(10), viewer("i1", user="y").recent_items(10)],
        ignore_index=True,
    )
    asked = pd.DataFrame({USER_ID: ["x", "y", "y", "z"], ITEM_ID: ["i3", "i3", "i4", "i3"]})
    rows = source.contributions(recent, asked)
    # x reaches i3 through both recent items; y's i1 leads to i3 (not to i4); z has no history.
    found = sorted(zip(rows[USER_ID], rows["source_item_id"], rows[ITEM_ID], strict=True))
    assert found == [("x", "i1", "i3"), ("x", "i2", "i3"), ("y", "i1", "i3")]
    assert source.contributions(recent, asked.iloc[:0]).empty


def test_covisitation_scores_equal_the_grouped_sums_of_contributions() -> None:
    """The sparse products give what summing contributions per (user, item) gives, on random
    pairs and histories (the definition the scores implement)."""
    rng = np.random.default_rng(3)
    items = [f"i{n:02d}" for n in range(30)]
    random_pairs = pairs(
        [
            (items[a], items[b], f"2024-01-{day:02d}", float(weight))
            for a, b, day, weight in zip(
                rng.integers(0, 30, 400),
                rng.integers(0, 30, 400),
                rng.integers(1, 31, 400),
                rng.integers(1, 5, 400),
                strict=True,
            )
            if a != b
        ]
    )
    source = CoVisitationSource(half_life_days=10.0, per_user=1_000)
    source.fit(snapshot(covisitation=random_pairs))
    histories = [
        viewer(*rng.choice(items, 6, replace=False), user=user).recent_items(10)
        for user in ("a", "b", "c")
    ]
    recent = pd.concat(histories, ignore_index=True)
    scores = source.scores(Behaviour(EVENTS.iloc[:0]), recent).set_index([USER_ID, ITEM_ID])
    summed = source.contributions(recent).groupby([USER_ID, ITEM_ID])[list(source.columns)].sum()
    summed = summed[(summed > 0).any(axis=1)]
    assert sorted(scores.index) == sorted(summed.index)
    pd.testing.assert_frame_equal(scores.sort_index(), summed.sort_index(), check_exact=False)


def test_covisitation_keeps_each_items_strongest_related_items() -> None:
    source = CoVisitationSource(half_life_days=10.0, related_per_item=1)
    source.fit(snapshot(covisitation=PAIRS))
    # i1 keeps i2 (2 against 1/2 decayed, 6 against 1 in all). i2's i3 and i4 tie at 2
    # decayed, where the lower id (i3) stays, but i4 leads in the last year and in all (8
    # against 4): an item keeps its best related item by each measure.
    related = source.related[[ITEM_ID, "related_item_id"]].to_numpy().tolist()
    assert sorted(related) == [["i1", "i2"], ["i2", "i3"], ["i2", "i4"]]
    behaviour = viewer("i1", "i2")
    scores = source.scores(behaviour, behaviour.recent_items(10))
    assert by_item(scores, "covisitation") == pytest.approx({"i2": 1.0, "i3": 2.0, "i4": 2.0})
    assert by_item(scores, "covisitation_365d") == pytest.approx({"i2": 3.0, "i3": 4.0, "i4": 8.0})


def test_covisitation_without_pairs_nominates_nothing() -> None:
    source = CoVisitationSource().fit(snapshot())
    behaviour = viewer("i1")
    assert source.scores(behaviour, behaviour.recent_items(10)).empty
    # Nor for someone with no history at all (the cold-start list).
    nobody = Behaviour(EVENTS.iloc[:0], users=np.array(["nobody"], dtype=object))
    assert source.scores(nobody, nobody.recent_items(10)).empty


# --- text neighbours -------------------------------------------------------------------------
def test_text_neighbours_are_the_nearest_vectors_even_untouched_items() -> None:
    source = TextNeighbourSource(per_user=1, query_length=2).fit(snapshot(vectors=VECTORS))
    behaviour = viewer("i1")
    scores = source.scores(behaviour, behaviour.recent_items(10))
    # The query is i1 itself; the search width is per_user + query_length = 3.
    assert by_item(scores, "text") == pytest.approx({"i1": 1.0, "i2": 0.8, "i9": 0.6})
    candidates = source.candidates(behaviour, behaviour.recent_items(10), 2)
    assert candidates[ITEM_ID].tolist() == ["i1", "i2"]


def test_pair_similarity_gives_the_query_mean_and_max_cosines() -> None:
    source = TextNeighbourSource().fit(snapshot(vectors=VECTORS))
    recent = viewer("i1", "i2").recent_items(10)  # i2 newest (weight 1), then i1 (1/2)
    asked = pd.DataFrame(
        {USER_ID: ["x", "x", "x", "x", "nobody"], ITEM_ID: ["i3", "i9", "i4", "i5", "i3"]}
    )
    similarity = source.pair_similarity(asked, recent)
    # Query: (i2 + i1 / 2) / |.| = (1.3, 0.6, 0) / sqrt(2.05).
    norm = np.sqrt(2.05)
    expected = [
        [0.6 / norm, (0.6 + 0.0) / 2, 0.6],  # i3: cosine 0.6 to i2, 0 to i1
        [(1.3 * 0.6 + 0.6 * 0.8) / norm, (0.96 + 0.6) / 2, 0.96],  # i9: 0.96 to i2, 0.6 to i1
        [0.0, 0.0, 0.0],  # i4: orthogonal to both
    ]
    np.testing.assert_allclose(similarity.iloc[:3].to_numpy(), expected, atol=1e-6)
    assert similarity.iloc[3:].isna().all().all()  # i5 has no text; "nobody" has no history


def test_pair_similarity_query_uses_only_the_latest_query_length_items() -> None:
    source = TextNeighbourSource(query_length=1).fit(snapshot(vectors=VECTORS))
    recent = viewer("i1", "i2").recent_items(10)
    asked = pd.DataFrame({USER_ID: ["x"], ITEM_ID: ["i3"]})
    similarity = source.pair_similarity(asked, recent)
    np.testing.assert_allclose(similarity.to_numpy(), [[0.6, 0.6, 0.6]], atol=1e-6)


def test_pair_similarity_query_cosine_equals_the_searched_query() -> None:
    # The query's cosine is taken from each user's own products (not a product of every query
    # with every candidate): it must equal the cosine with the vector the index searches with.
    rng = np.random.default_rng(7)
    ids = [f"i{n}" for n in range(30)]
    source = TextNeighbourSource(query_length=4).fit(
        snapshot(vectors=vectors({item: rng.normal(size=5).tolist() for item in ids}))
    )
    recent = pd.concat(
        [
            viewer(*rng.choice(ids, size=6).tolist(), user=user).recent_items(10)
            for user in ("a", "b", "c")
        ],
        ignore_index=True,
    ).sample(frac=1.0, random_state=1)  # users' rows interleaved
    asked = pd.DataFrame(
        {USER_ID: np.repeat(["a", "b", "c"], 10), ITEM_ID: rng.choice(ids, size=30)}
    )
    users, queries = source.queries(recent)
    searched = pd.DataFrame(queries @ source.vectors.T, index=users, columns=source.item_ids)
    pairs = zip(asked[USER_ID], asked[ITEM_ID], strict=True)
    expected = [searched.at[user, item] for user, item in pairs]
    np.testing.assert_allclose(source.pair_similarity(asked, recent)["text"], expected, atol=1e-6)


def test_recent_similarity_names_each_pairs_most_similar_recent_item() -> None:
    source = TextNeighbourSource().fit(snapshot(vectors=VECTORS))
    # x's recent items, newest first: i2, i1; y's: i3 only. Pairs of the two users interleave.
    recent = pd.concat(
        [viewer("i1", "i2").recent_items(10), viewer("i3", user="y").recent_items(10)],
        ignore_index=True,
    )
    asked = pd.DataFrame(
        {USER_ID: ["x", "y", "x", "x", "y", "x"], ITEM_ID: ["i9", "i2", "i2", "i4", "i3", "i5"]}
    )
    similarity = source.recent_similarity(asked, recent)
    # i9: 0.96 to i2, 0.6 to i1; y's i2: 0.6 to i3; x's i2: 1 to itself, 0.8 to i1;
    # i4: 0 to both (a tie: the newer, i2, is named); y's i3 is its own recent item.
    assert similarity["most_similar"].tolist() == ["i2", "i3", "i2", "i2", "i3", None]
    np.testing.assert_allclose(
        similarity[["mean", "max"]].to_numpy()[:5],
        [[0.78, 0.96], [0.6, 0.6], [0.9, 1.0], [0.0, 0.0], [1.0, 1.0]],
        atol=1e-6,
    )
    assert similarity.iloc[5, :2].isna().all()  # i5 has no vector

    # Leaving the item itself out: x's i2 is most like i1; y's i3 has nothing left to compare.
    apart = source.recent_similarity(asked, recent, exclude_self=True)
    assert apart["most_similar"].tolist() == ["i2", "i3", "i1", "i2", None, None]
    np.testing.assert_allclose(apart["max"].to_numpy()[:4], [0.96, 0.6, 0.8, 0.0], atol=1e-6)
    assert np.isnan(apart["max"].to_numpy()[4])


def test_text_without_vectors_nominates_nothing() -> None:
    source = TextNeighbourSource().fit(snapshot())
    behaviour = viewer("i1")
    recent = behaviour.recent_items(10)
    assert source.index is None
    assert source.scores(behaviour, recent).empty
    asked = pd.DataFrame({USER_ID: ["x"], ITEM_ID: ["i2"]})
    assert source.pair_similarity(asked, recent).isna().all().all()


# --- item-kNN and EASE -----------------------------------------------------------------------
# a and b viewed i1 and i2, c viewed i3 and i4, d viewed i1 and i3.
KNN_EVENTS = events(
    [
        (user, item, "view", f"2024-01-0{day}")
        for user, first, second in (
            ("a", "i1", "i2"),
            ("b", "i1", "i2"),
            ("c", "i3", "i4"),
            ("d", "i1", "i3"),
        )
        for day, item in ((1, first), (2, second))
    ]
)


def test_item_knn_scores_by_cosine_over_users() -> None:
    source = ItemKNNSource().fit(snapshot(interactions=KNN_EVENTS))
    behaviour = viewer("i1")
    scores = source.scores(behaviour, behaviour.recent_items(10))
    # i1 and i2 share 2 of i1's 3 users and both of i2's: 2 / sqrt(3 x 2); i1 and i3 share 1.
    assert by_item(scores, "item_knn") == pytest.approx(
        {"i2": 2 / np.sqrt(6), "i3": 1 / np.sqrt(6)}
    )
    assert scores[ITEM_ID].iloc[0] == "i2"


def test_item_knn_keeps_each_items_nearest_neighbours_only() -> None:
    source = ItemKNNSource(neighbours=1).fit(snapshot(interactions=KNN_EVENTS))
    behaviour = viewer("i1", "i3")  # i3 newest, i1 at weight 1/2
    scores = source.scores(behaviour, behaviour.recent_items(10))
    # i3's one neighbour is i4 (1 / sqrt(2)); i1's is i2.
    assert by_item(scores, "item_knn") == pytest.approx(
        {"i4": 1 / np.sqrt(2), "i2": 0.5 * 2 / np.sqrt(6)}
    )


def test_item_knn_over_a_large_catalog_keeps_its_most_popular_items() -> None:
    # i1 has 3 users, i2 2, i3 2, i4 1: with room for two items, i1 and one of i2/i3 stay.
    source = ItemKNNSource(max_items=2).fit(snapshot(interactions=KNN_EVENTS))
    assert len(source.item_index) == 2 and "i1" in source.item_index
    assert "i4" not in source.item_index
    behaviour = viewer("i1")
    scores = source.scores(behaviour, behaviour.recent_items(10))
    assert set(scores[ITEM_ID]) <= set(source.item_index) - {"i1"}
    assert len(scores) == 1


def test_ease_ranks_the_co_consumed_item_first_within_its_most_popular_items() -> None:
    more = events([("e", "i1", "view", "2024-01-03"), ("e", "i2", "view", "2024-01-04")])
    interactions = pd.concat([KNN_EVENTS, more], ignore_index=True)  # i1 4, i2 3, i3 2, i4 1
    source = EASESource().fit(snapshot(interactions=interactions))
    behaviour = viewer("i1")
    scores = source.scores(behaviour, behaviour.recent_items(10))
    assert scores[ITEM_ID].iloc[0] == "i2"
    restricted = EASESource(max_items=2).fit(snapshot(interactions=interactions))
    assert restricted.item_index.tolist() == ["i1", "i2"]
    assert restricted.scores(behaviour, behaviour.recent_items(10))[ITEM_ID].tolist() == ["i2"]


# --- top_per_user ----------------------------------------------------------------------------
def test_top_per_user_keeps_ties_to_the_lower_id_and_never_zero_scores() -> None:
    frame = pd.DataFrame(
        {
            USER_ID: ["u", "u", "u", "u", "v", "v"],
            ITEM_ID: ["c", "b", "a", "d", "a", "b"],
            "first": [1.0, 1.0, 1.0, 5.0, 0.0, 0.0],
            "second": [0.0, 0.0, 0.0, 0.0, 0.0, 2.0],
        }
    )
    kept = top_per_user(frame, ("first",), 2)
    assert kept[[USER_ID, ITEM_ID]].to_numpy().tolist() == [["u", "a"], ["u", "d"]]
    # A row stays when it is among the best by any column.
    both = top_per_user(frame, ("first", "second"), 1)
    assert both[[USER_ID, ITEM_ID]].to_numpy().tolist() == [["u", "d"], ["v", "b"]]
    assert top_per_user(frame.iloc[:0], ("first",), 2).empty


def test_sparse_top_per_row_keeps_any_matrixs_best_with_ties_to_the_lower_column() -> None:
    import scipy.sparse as sp

    first = sp.csr_array(np.array([[1.0, 1.0, 1.0, 5.0], [0.0, 0.0, 0.0, 0.0]]))
    second = sp.csr_array(np.array([[0.0, 0.0, 0.0, 0.0], [0.0, 2.0, -1.0, 0.0]]))
    rows, columns, values = sparse_top_per_row([first], 2)
    # Row 0: 5 at column 3, then the tie at 1 goes to column 0; row 1 has nothing positive.
    assert list(zip(rows, columns, strict=True)) == [(0, 0), (0, 3)]
    rows, columns, values = sparse_top_per_row([first, second], 1)
    assert list(zip(rows, columns, strict=True)) == [(0, 3), (1, 1)]
    # Every matrix's value at each kept entry, 0 where it has none.
    np.testing.assert_array_equal(values, [[5.0, 0.0], [0.0, 2.0]])
    # Values closer than float noise tie, so summation order cannot reorder them.
    noisy = sp.csr_array(np.array([[0.3, 0.1 + 0.2]]))
    assert sparse_top_per_row([noisy], 1)[1].tolist() == [0]


@pytest.mark.slow
def test_the_sequential_source_learns_the_session_order_and_survives_pickling() -> None:
    """Trained on sessions that follow a fixed order, the sequential source's best items for a
    user who viewed a group's first three items are that group's items, and a pickled copy
    that learns a new catalog (a new item with text only) still scores."""
    import pickle

    from ml.pipeline.sources import SequentialSource, SequentialSourceConfig
    from tests.ml.pipeline.tiny import session_snapshot

    snapshot = session_snapshot(users=60)
    source = SequentialSource(SequentialSourceConfig(epochs=8, hidden_size=16), per_user=5)
    source.fit(snapshot)
    viewer = Behaviour(
        events([("v", f"g1_{place}", "view", f"2024-04-01 0{place}:00") for place in range(3)])
    )
    recent = viewer.recent_items(50)
    scores = source.scores(viewer, recent)
    assert set(scores["item_id"]) <= {f"g1_{place}" for place in range(8)} | set(snapshot.item_ids)
    best = scores.sort_values("sequential", ascending=False)["item_id"].head(3)
    assert all(item.startswith("g1_") for item in best)
    assert (scores["sequential"] > 0).all() and (scores["sequential"] <= 1).all()

    copy = pickle.loads(pickle.dumps(source))
    grown = session_snapshot(users=60)
    grown.vectors.loc["brand_new"] = [0.0, 1.0, 0.0, 0.9]
    grown.items = pd.concat([grown.items, pd.DataFrame({"item_id": ["brand_new"], "title": ["n"]})])
    copy.learn_catalog(grown)
    assert "brand_new" in set(copy.model.item_ids)
    assert not copy.scores(viewer, recent).empty


def test_every_named_source_has_a_class_and_the_other_way_round() -> None:
    from ml.constants import CANDIDATE_SOURCE_NAMES, DEFAULT_CANDIDATE_SOURCES
    from ml.pipeline.sources import SOURCES

    assert set(SOURCES) == set(CANDIDATE_SOURCE_NAMES)
    assert set(DEFAULT_CANDIDATE_SOURCES) <= set(CANDIDATE_SOURCE_NAMES)


def test_merged_scores_are_an_outer_union_with_zeros_sorted_by_user_and_item() -> None:
    first = pd.DataFrame({USER_ID: ["u2", "u1"], ITEM_ID: ["b", "z"], "x": [0.5, 2.0]})
    second = pd.DataFrame({USER_ID: ["u1", "u2"], ITEM_ID: ["z", "a"], "y": [3.0, 1.0]})
    arrays = merged_scores([first, second], ("x", "y"))
    # Codes are places in the sorted distinct ids, ascending by user and then item.
    assert arrays.users.tolist() == ["u1", "u2"] and arrays.items.tolist() == ["a", "b", "z"]
    assert arrays.user_codes.tolist() == [0, 1, 1] and arrays.item_codes.tolist() == [2, 0, 1]
    assert arrays.column("y").tolist() == [3.0, 1.0, 0.0]
    chosen = arrays.frame(np.array([2]))  # text ids are made for the chosen rows only
    assert chosen[[USER_ID, ITEM_ID, "x"]].values.tolist() == [["u2", "b", 0.5]]
    merged = arrays.frame()
    expected = pd.DataFrame(
        {
            USER_ID: ["u1", "u2", "u2"],
            ITEM_ID: ["z", "a", "b"],
            "x": [2.0, 0.0, 0.5],
            "y": [3.0, 1.0, 0.0],
        }
    )
    pd.testing.assert_frame_equal(merged, expected)
    nothing = merged_scores([first.iloc[:0]], ("x", "y")).frame()
    assert nothing.empty and list(nothing.columns) == [USER_ID, ITEM_ID, "x", "y"]


@pytest.mark.parametrize("exact", [True, False])
def test_a_pickled_text_source_searches_as_the_original_without_rebuilding_a_graph(
    exact: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pickle

    from ml.pipeline import sources

    rng = np.random.default_rng(3)
    catalog = vectors({f"i{n}": list(rng.normal(size=8)) for n in range(300)})
    # Above this many items the source keeps an HNSW graph instead of an exact index.
    monkeypatch.setattr(sources, "EXACT_INDEX_MAX_ITEMS", 1_000 if exact else 100)
    source = TextNeighbourSource(per_user=10).fit(snapshot(vectors=catalog))
    saved = pickle.dumps(source)
    built, original = [], TextNeighbourSource._build_index

    def counted(self) -> None:
        built.append(self)
        original(self)

    monkeypatch.setattr(TextNeighbourSource, "_build_index", counted)
    copy = pickle.loads(saved)
    # An exact index is rebuilt from the vectors (a copy); a graph is loaded as it was built.
    assert len(built) == (1 if exact else 0)
    assert copy.index.ntotal == source.index.ntotal == 300
    query = source.vectors[:20]
    found, found_again = source.index.search(query, 10)[1], copy.index.search(query, 10)[1]
    np.testing.assert_array_equal(found, found_again)
