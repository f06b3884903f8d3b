"""Choosing the winner of the backtests (known answers): the best mean, unless it trails the
strongest baseline at some cut and a pipeline level with it on average never does."""

from __future__ import annotations

import pandas as pd
import pytest

from ml.constants import NEW_USER, RETURNING_USER, SEGMENT, USER_ID
from ml.evaluation.protocol import OVERALL
from ml.pipeline.backtest import FALLBACK_PIPELINE, choose, summarise

K = 10
# Each pipeline's NDCG for the four kinds of user: (cut, segment) in this order. Every kind holds
# COPIES users with that figure, so the paired bootstrap has enough users to tell differences.
KINDS = (("c1", NEW_USER), ("c1", RETURNING_USER), ("c2", NEW_USER), ("c2", RETURNING_USER))
COPIES = 10
BASELINES = {"covisitation": (0.5, 0.5, 0.5, 0.5), "popularity_all": (0.2, 0.2, 0.2, 0.2)}
# The best on average, but behind co-visitation for the new users of the second cut.
RANKER_BEHIND = (0.8, 0.8, 0.4, 0.9)


def backtests(scores: dict[str, tuple[float, ...]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(table, per_user) as run_backtests builds them, from each pipeline's figures by kind."""
    rows = []
    for pipeline, figures in {**BASELINES, **scores}.items():
        for (cut, segment), ndcg in zip(KINDS, figures, strict=True):
            for copy in range(COPIES):
                user = f"{cut}-{segment}-{copy}"
                rows.append(
                    {
                        "pipeline": pipeline,
                        "cut": cut,
                        USER_ID: user,
                        "ndcg": ndcg,
                        SEGMENT: segment,
                    }
                )
    per_user = pd.DataFrame(rows)
    by_segment = per_user.groupby(["pipeline", "cut", SEGMENT])["ndcg"].mean().reset_index()
    overall = per_user.groupby(["pipeline", "cut"])["ndcg"].mean().reset_index()
    table = pd.concat([overall.assign(**{SEGMENT: OVERALL}), by_segment], ignore_index=True)
    return table.rename(columns={"ndcg": f"ndcg@{K}"}), per_user


def chosen(scores: dict[str, tuple[float, ...]]):
    table, per_user = backtests(scores)
    return choose(summarise(table, K), table, per_user, K)


def test_a_leader_ahead_of_the_strongest_baseline_at_every_cut_wins() -> None:
    choice = chosen({"ranker": (0.8, 0.8, 0.6, 0.9), "ranker+covisitation": (0.7,) * 4})
    assert choice.winner == "ranker"
    assert choice.level_with == () and choice.notes == ()


def test_a_level_pipeline_that_never_trails_the_baseline_wins_over_a_leader_that_does() -> None:
    # Means 0.725 against 0.7225 overall; per user 0.05, 0.05, -0.2, 0.11: level.
    choice = chosen({"ranker": RANKER_BEHIND, "ranker+covisitation": (0.75, 0.75, 0.6, 0.79)})
    assert choice.winner == "ranker+covisitation"
    assert choice.level_with == ("ranker",)
    (note,) = choice.notes
    assert "chosen over ranker" in note
    assert "new_user at c2: 0.4000 against covisitation's 0.5000" in note


def test_a_pipeline_measurably_behind_the_leader_on_average_does_not_win() -> None:
    # Never behind co-visitation, but 0.1375 lower per user on average (interval above zero).
    choice = chosen({"ranker": RANKER_BEHIND, "ranker+covisitation": (0.6, 0.6, 0.55, 0.6)})
    assert choice.winner == "ranker"
    assert choice.level_with == ()


def test_a_level_pipeline_that_also_trails_the_baseline_somewhere_does_not_win() -> None:
    choice = chosen({"ranker": RANKER_BEHIND, "ranker+covisitation": (0.75, 0.75, 0.45, 0.9)})
    assert choice.winner == "ranker"


@pytest.mark.parametrize("figures", [(0.8, 0.8, 0.4, 0.9), (0.4, 0.4, 0.4, 0.4)])
def test_with_no_level_pipeline_that_never_trails_the_best_mean_wins(
    figures: tuple[float, ...],
) -> None:
    # The ranker leads but trails at a cut, with nothing else level; or a baseline leads.
    choice = chosen({"ranker": figures})
    best = "ranker" if figures[0] > 0.5 else "covisitation"
    assert choice.winner == best


def test_nothing_evaluated_falls_back() -> None:
    assert choose(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), K).winner == FALLBACK_PIPELINE


def test_without_new_users_the_overall_figures_decide() -> None:
    # Means 0.65 against 0.6375; the ranker is not ahead of co-visitation overall at c2 (0.5
    # each). Then the new users' rows go: the per-user figures left are returning users only.
    table, per_user = backtests(
        {"ranker": (0.8, 0.8, 0.5, 0.5), "ranker+covisitation": (0.75, 0.75, 0.45, 0.6)}
    )
    table = table[table[SEGMENT] != NEW_USER]
    per_user = per_user[per_user[SEGMENT] != NEW_USER]
    choice = choose(summarise(table, K), table, per_user, K)
    assert choice.winner == "ranker+covisitation"
    (note,) = choice.notes
    assert "overall at c2: 0.5000 against covisitation's 0.5000" in note
    assert "new_user" not in note
