"""The promotion gate: the challenger must be the best pipeline of one backtest run, and lead a
champion of another kind by the margin."""

from __future__ import annotations

import math

from ml.tracking import gate

FIGURES = {"ranker": 0.30, "covisitation": 0.28, "popularity_all": 0.10}


def test_the_best_pipeline_with_no_champion_passes() -> None:
    decision = gate("ranker", FIGURES, champion=None, margin=0.05)  # no margin without a champion
    assert decision.passed
    assert "beats covisitation: 0.3000 vs 0.2800" in decision.reasons
    assert any("no champion yet" in reason for reason in decision.reasons)


def test_a_pipeline_that_is_not_the_best_fails() -> None:
    decision = gate("covisitation", FIGURES, champion=None, margin=0.0)
    assert not decision.passed
    assert "does not beat ranker: 0.2800 vs 0.3000" in decision.reasons
    assert "beats popularity_all: 0.2800 vs 0.1000" in decision.reasons
    assert not gate("covisitation", FIGURES, champion="covisitation", margin=0.0).passed


def test_a_champion_of_another_kind_must_be_beaten_by_the_margin() -> None:
    assert not gate("ranker", FIGURES, champion="covisitation", margin=0.03).passed
    decision = gate("ranker", FIGURES, champion="covisitation", margin=0.01)
    assert decision.passed
    assert any("beats champion (covisitation) by the margin" in r for r in decision.reasons)
    # Exactly the margin is enough.
    assert gate("b", {"a": 0.25, "b": 0.5}, champion="a", margin=0.25).passed


def test_a_champion_missing_from_the_backtests_blocks_promotion() -> None:
    decision = gate("ranker", FIGURES, champion="ease", margin=0.0)
    assert not decision.passed
    assert any("'ease' was not in these backtests" in r for r in decision.reasons)


def test_a_champion_of_the_same_kind_is_replaced_when_it_is_still_the_best() -> None:
    decision = gate("ranker", FIGURES, champion="ranker", margin=0.5)  # no margin to itself
    assert decision.passed
    assert any("same pipeline (ranker)" in reason for reason in decision.reasons)
    close = {"ranker": 0.30, "covisitation": 0.2999}
    assert gate("ranker", close, champion="ranker", margin=0.01).passed


def test_no_figures_pass_only_without_a_champion() -> None:
    assert gate("popularity_all", {}, champion=None, margin=0.01).passed
    decision = gate("popularity_all", {}, champion="ranker", margin=0.01)
    assert not decision.passed
    assert any("champion (ranker) stays" in reason for reason in decision.reasons)


def test_a_challenger_without_a_figure_fails_and_other_missing_figures_are_ignored() -> None:
    assert not gate("ease", FIGURES, champion=None, margin=0.0).passed
    assert not gate("ranker", {**FIGURES, "ranker": math.nan}, champion=None, margin=0.0).passed
    with_nan = {**FIGURES, "ease": math.nan}
    assert gate("ranker", with_nan, champion=None, margin=0.0).passed


def test_a_challenger_the_backtests_chose_over_a_level_leader_passes_against_it_only() -> None:
    figures = {"ranker": 0.30, "ranker+covisitation": 0.29, "covisitation": 0.20}
    decision = gate("ranker+covisitation", figures, None, 0.0, level_with=["ranker"])
    assert decision.passed
    assert any(r.startswith("level with ranker (0.2900 vs 0.3000") for r in decision.reasons)
    # Level with one pipeline is not level with every pipeline ahead.
    ahead = {**figures, "ease": 0.295}
    assert not gate("ranker+covisitation", ahead, None, 0.0, level_with=["ranker"]).passed
    # A champion of another kind must still be beaten by the margin, level or not.
    assert not gate("ranker+covisitation", figures, "ranker", 0.0, level_with=["ranker"]).passed
