"""Rolling-origin backtests: cut points, the table and winner, the fallback, and that an
evaluated list is exactly the list that would have been published."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from ml.constants import ITEM_ID, OCCURRED_AT, RANK, REASON, SCORE, USER_ID
from ml.evaluation.protocol import OVERALL
from ml.pipeline.backtest import (
    FALLBACK_PIPELINE,
    NO_TEXT,
    BacktestConfig,
    BacktestResult,
    cut_points,
    is_ablation,
    prepare_cut,
    run_backtests,
    strongest_baseline,
)
from ml.pipeline.pipeline import RANKER, PipelineConfig
from ml.pipeline.ranker import LABEL, Ranker, RankerConfig
from ml.pipeline.snapshot import Behaviour, Snapshot
from orchestration.model.assets import backtest_figures
from tests.ml.pipeline.tiny import session_snapshot

SMALL_RANKER = RankerConfig(n_estimators=20, min_child_samples=5, bagged_models=1, threads=1)
BACKTEST = BacktestConfig(
    cuts=2,
    training_cuts=1,
    window_fraction=0.15,
    min_users=3,
    min_ranker_users=5,
    ranker=SMALL_RANKER,
)
# Text is left out here for speed; the published-list test below runs every default source.
CONFIG = PipelineConfig(sources=("popularity", "covisitation", "item_knn"), k=5)
START = pd.Timestamp("2024-01-01")


def times(hours: list[int]) -> pd.DataFrame:
    return pd.DataFrame({OCCURRED_AT: [START + pd.Timedelta(hours=h) for h in hours]})


def at(*hours: int) -> list[pd.Timestamp]:
    return [START + pd.Timedelta(hours=h) for h in hours]


@pytest.mark.parametrize(
    ("hours", "count", "expected"),
    [
        # 8 events, windows of a quarter: positions 2, 4 and 6.
        ([0, 1, 2, 3, 4, 5, 6, 7], 3, at(2, 4, 6)),
        # The order of the rows does not matter.
        ([7, 6, 5, 4, 3, 2, 1, 0], 3, at(2, 4, 6)),
        # A fourth cut would fall on position 0: no events before it, so none.
        ([0, 1, 2, 3, 4, 5, 6, 7], 4, at(2, 4, 6)),
        # Two positions on the same time make one cut.
        ([0, 1, 2, 2, 2, 2, 6, 7], 3, at(2, 6)),
        # A cut at the very first time would leave nothing before it.
        ([0, 0, 0, 0, 4, 5, 6, 7], 3, at(4, 6)),
        ([], 3, []),
    ],
)
def test_cut_points(hours: list[int], count: int, expected: list[pd.Timestamp]) -> None:
    assert cut_points(times(hours), count, 0.25) == expected


@pytest.fixture(scope="module")
def sessions() -> Snapshot:
    return session_snapshot()


@pytest.fixture(scope="module")
def backtest(sessions: Snapshot) -> BacktestResult:
    return run_backtests(sessions, CONFIG, BACKTEST)


@pytest.mark.slow
def test_every_pipeline_is_judged_at_every_evaluated_cut(backtest: BacktestResult) -> None:
    assert len(backtest.cuts) == BACKTEST.cuts and not backtest.notes
    expected = {"popularity_all", "trending", "covisitation", "covisitation_last", "item_knn"}
    assert expected | {"ranker"} <= set(backtest.pipelines)
    # The ranker is also judged fused with the strongest single source (the best mean overall;
    # of equals, the name that sorts first).
    singles = [name for name in backtest.pipelines if not name.startswith("ranker")]
    strongest = min(singles, key=lambda name: (-round(backtest.mean_ndcg(name), 9), name))
    assert strongest == "covisitation"  # the sessions' own order: every co-visitation ties
    assert f"ranker+{strongest}" in backtest.pipelines
    cuts = {str(cut) for cut in backtest.cuts}
    overall = backtest.table[backtest.table["segment"] == OVERALL]
    for name in backtest.pipelines:
        assert set(overall.loc[overall["pipeline"] == name, "cut"]) == cuts, name
    assert (overall["users"] >= BACKTEST.min_users).all()
    assert overall[f"ndcg@{CONFIG.k}"].between(0, 1).all()


@pytest.mark.slow
def test_a_fused_champions_design_is_judged_though_its_partner_is_no_longer_strongest(
    sessions: Snapshot, backtest: BacktestResult
) -> None:
    assert "ranker+popularity_all" not in backtest.pipelines
    again = run_backtests(sessions, CONFIG, BACKTEST, champion="ranker+popularity_all")
    fused = [name for name in again.pipelines if name.startswith("ranker+")]
    assert fused == ["ranker+covisitation", "ranker+popularity_all"]
    # Popularity drags the ranker's near-perfect order of the sessions down.
    assert again.mean_ndcg("ranker+popularity_all") < again.mean_ndcg("ranker+covisitation")
    # A champion fused with a source this configuration lacks adds nothing.
    other = run_backtests(sessions, CONFIG, BACKTEST, champion="ranker+text")
    assert [name for name in other.pipelines if name.startswith("ranker+")] == fused[:1]


@pytest.mark.slow
def test_ablations_are_judged_alone_and_fused_but_never_win(sessions: Snapshot) -> None:
    config = replace(CONFIG, sources=(*CONFIG.sources, "text"))
    result = run_backtests(sessions, config, replace(BACKTEST, ablations=True))
    strongest = strongest_baseline([result.table], config.k)
    assert strongest is not None and strongest != "text"
    ablations = {NO_TEXT, f"{NO_TEXT}+{strongest}"}
    assert ablations <= set(result.pipelines)
    assert {name for name in result.pipelines if is_ablation(name)} == ablations
    cuts = {str(cut) for cut in result.cuts}
    overall = result.table[result.table["segment"] == OVERALL]
    for name in ablations:
        assert set(overall.loc[overall["pipeline"] == name, "cut"]) == cuts, name
    assert not is_ablation(result.winner) and result.winner == result.pipeline.name
    assert not any(is_ablation(name) for name in backtest_figures(result))


@pytest.mark.slow
def test_sessions_in_a_fixed_order_make_co_visitation_beat_popularity(
    backtest: BacktestResult,
) -> None:
    popularity = backtest.mean_ndcg("popularity_all")
    learned = max(backtest.mean_ndcg("ranker"), backtest.mean_ndcg("covisitation"))
    assert learned > popularity + 0.3
    assert not backtest.winner.startswith("popularity") and backtest.winner != "trending"
    assert backtest.summary.index[0] == backtest.winner
    best = backtest.mean_ndcg(backtest.winner)
    assert all(best >= backtest.mean_ndcg(name) for name in backtest.pipelines)
    assert set(backtest.comparisons["against"]) == set(backtest.pipelines) - {backtest.winner}


@pytest.mark.slow
def test_the_winners_final_pipeline_is_fitted_on_everything(
    backtest: BacktestResult, sessions: Snapshot
) -> None:
    final = backtest.pipeline
    assert final.as_of == sessions.as_of
    assert final.name == backtest.winner
    if backtest.winner.startswith("ranker"):
        assert final.ordering == RANKER
        assert final.ranker is not None and final.ranker.fitted
    events = sessions.interactions
    # u00 (group 0) has seen its group's first three items: the next ones come first.
    seen = events[(events[USER_ID] == "u00") & events[ITEM_ID].isin(["g0_0", "g0_1", "g0_2"])]
    lists = final.recommend(Behaviour(seen))
    assert lists[ITEM_ID].tolist()[:2] == ["g0_3", "g0_4"]
    assert len(lists) == CONFIG.k


def test_an_evaluated_list_is_the_list_that_would_be_published(sessions: Snapshot) -> None:
    config = PipelineConfig(k=5)  # every default source, text included
    cuts = cut_points(sessions.interactions, 2, 0.15)
    ends = [*cuts[1:], sessions.as_of]
    training = prepare_cut(sessions, cuts[0], ends[0], config, BACKTEST.reveal_fraction)
    ranker = Ranker(SMALL_RANKER).fit(
        training.frame, training.pipeline.training_columns(training.frame)
    )
    data = prepare_cut(sessions, cuts[1], ends[1], config, BACKTEST.reveal_fraction)
    assert data.frame[LABEL].sum() > 0 and len(data.task.users) >= 3
    orderings = [(RANKER, None), (RANKER, "covisitation"), ("covisitation", None)]
    orderings += [("text", None), ("popularity_all", None)]
    for ordering, partner in orderings:
        pipeline = data.pipeline.with_ordering(ordering, ranker, partner)
        evaluated = pipeline.rank(data.frame, data.behaviour)
        published = pipeline.recommend(data.behaviour)
        assert not evaluated.empty
        columns = [USER_ID, RANK, ITEM_ID, REASON]
        pd.testing.assert_frame_equal(evaluated[columns], published[columns])
        np.testing.assert_allclose(evaluated[SCORE], published[SCORE], rtol=0, atol=1e-12)


def test_a_training_only_cut_comes_back_as_its_training_rows(sessions: Snapshot) -> None:
    config = PipelineConfig(k=5)
    cuts = cut_points(sessions.interactions, 2, 0.15)
    whole = prepare_cut(sessions, cuts[0], cuts[1], config, BACKTEST.reveal_fraction)
    budget = len(whole.frame) // 2
    reduced = prepare_cut(
        sessions, cuts[0], cuts[1], config, BACKTEST.reveal_fraction, training_rows=(3, budget)
    )
    assert reduced.training_only and not reduced.evaluated
    assert reduced.pipeline is None and reduced.behaviour is None
    # What the backtests would have kept of the whole cut, no more: the users with a hit, every
    # positive, within the budget, user ids prefixed by the cut's position.
    assert reduced.candidates == len(whole.frame) and reduced.hits == whole.frame[LABEL].sum()
    assert reduced.hits == reduced.frame[LABEL].sum() and len(reduced.frame) <= budget + 1
    assert reduced.frame[USER_ID].str.startswith("3:").all()
    hit_users = whole.frame.loc[whole.frame[LABEL] > 0, USER_ID].unique()
    assert set(reduced.frame[USER_ID]) == {f"3:{user}" for user in hit_users}


def test_a_handful_of_events_falls_back_to_popularity_with_a_note(sessions: Snapshot) -> None:
    first = sessions.interactions.sort_values(OCCURRED_AT).iloc[:14]
    tiny = Snapshot(first, sessions.items)
    result = run_backtests(tiny, PipelineConfig(k=3))
    assert result.winner == FALLBACK_PIPELINE
    assert result.table.empty and result.cuts == []
    assert any("no cut had enough users" in note for note in result.notes)
    cold = result.pipeline.cold_start_list()
    popularity = first.groupby(ITEM_ID)["weight"].sum()
    expected = popularity.sort_values(ascending=False, kind="stable").index[:3].tolist()
    assert cold[ITEM_ID].tolist() == expected


@pytest.mark.parametrize("events", [1, 14])
def test_a_log_of_one_moment_has_no_cut_and_falls_back_to_popularity(
    sessions: Snapshot, events: int
) -> None:
    """Events that all share one time (one event, or one bulk-stamped delivery) leave no time
    to cut at: the build still publishes popularity, and says why."""
    first = sessions.interactions.sort_values(OCCURRED_AT).iloc[:events]
    moment = first.assign(**{OCCURRED_AT: first[OCCURRED_AT].iloc[0]})
    result = run_backtests(Snapshot(moment, sessions.items), PipelineConfig(k=3))
    assert result.winner == FALLBACK_PIPELINE and result.cuts == []
    assert any("no cut had enough users" in note for note in result.notes)
    assert not result.pipeline.cold_start_list().empty


def test_impressions_alone_say_why_nothing_is_listed(sessions: Snapshot) -> None:
    unseen = sessions.interactions.assign(event_type="impression", weight=0.0)
    result = run_backtests(Snapshot(unseen, sessions.items), PipelineConfig(k=3))
    assert result.winner == FALLBACK_PIPELINE
    assert any("no event weighs anything yet" in note for note in result.notes)
    assert result.pipeline.cold_start_list().empty


@pytest.mark.slow
def test_cuts_prepared_in_worker_processes_judge_the_same(
    sessions: Snapshot, backtest: BacktestResult
) -> None:
    from dataclasses import replace

    parallel = replace(BACKTEST, processes=2, parallel_min_events=0)
    result = run_backtests(sessions, CONFIG, parallel)
    pd.testing.assert_frame_equal(result.table, backtest.table)
    assert result.winner == backtest.winner
