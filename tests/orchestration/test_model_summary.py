"""The backtest summary the build report, MLflow and Dagster show: known answers."""

from __future__ import annotations

import pandas as pd

from ml.pipeline.backtest import NO_TEXT, summarise


def table() -> pd.DataFrame:
    rows = []
    for pipeline, overall, new_user in (
        ("ranker", (0.3, 0.5), (0.4, 0.6)),
        ("popularity_all", (0.2, 0.2), (0.1, 0.3)),
        (NO_TEXT, (0.35, 0.55), (0.4, 0.6)),
    ):
        for cut, (all_users, new_users) in enumerate(zip(overall, new_user, strict=True)):
            rows.append((pipeline, f"2020-0{cut + 1}-01", "overall", all_users))
            rows.append((pipeline, f"2020-0{cut + 1}-01", "new_user", new_users))
    return pd.DataFrame(rows, columns=["pipeline", "cut", "segment", "ndcg@10"])


def test_summary_means_over_cuts_best_first_with_each_cut() -> None:
    summary = summarise(table(), 10)
    assert list(summary.index) == [NO_TEXT, "ranker", "popularity_all"]
    assert summary.loc["ranker", "mean overall"] == 0.4
    assert summary.loc["ranker", "mean new_user"] == 0.5
    assert summary.loc["popularity_all", "cut 2020-02-01"] == 0.2
    assert summary.loc["ranker", "cut 2020-02-01"] == 0.5


def test_means_that_differ_only_by_float_noise_tie_and_go_to_the_name_first() -> None:
    noisy = 0.1 + 0.2 + 0.3  # 0.6000000000000001: 0.6 added up in another order
    rows = [
        ("ranker", "2020-01-01", "overall", noisy),
        ("covisitation", "2020-01-01", "overall", 0.6),
    ]
    summary = summarise(pd.DataFrame(rows, columns=["pipeline", "cut", "segment", "ndcg@10"]), 10)
    assert list(summary.index) == ["covisitation", "ranker"]


def test_ablations_are_measured_but_never_compete() -> None:
    from orchestration.model.assets import backtest_figures

    class Result:
        pipelines = ["ranker", NO_TEXT, "popularity_all"]

        @staticmethod
        def mean_ndcg(name: str) -> float:
            return {"ranker": 0.4, NO_TEXT: 0.45, "popularity_all": 0.2}[name]

    assert backtest_figures(Result()) == {"ranker": 0.4, "popularity_all": 0.2}
