"""The promotion gate on the challenger's metadata as a real Dagster instance stores it: the
pipelines the backtests chose the challenger over come back and let it pass."""

from __future__ import annotations

from types import SimpleNamespace

from dagster import AssetMaterialization, DagsterInstance, MetadataValue

from orchestration.model.assets import latest_metadata, recommender_challenger
from orchestration.model.checks import gate_decision

FIGURES = {"ranker": 0.19, "ranker+covisitation_all": 0.18, "covisitation_all": 0.15}


def stored_metadata(level_with: list[str], champion: str = "none") -> dict:
    """Report a challenger materialization and read it back as the gate check does."""
    with DagsterInstance.ephemeral() as instance:
        instance.report_runless_asset_event(
            AssetMaterialization(
                asset_key=recommender_challenger.key,
                metadata={
                    "version": "3",
                    "pipeline": "ranker+covisitation_all",
                    "backtest_ndcgs": MetadataValue.json(FIGURES),
                    "level_with": MetadataValue.json(level_with),
                    "champion_pipeline": champion,
                },
            )
        )
        return latest_metadata(SimpleNamespace(instance=instance), recommender_challenger.key)


def test_a_challenger_chosen_over_a_level_leader_passes_the_gate() -> None:
    decision = gate_decision(stored_metadata(["ranker"]), margin=0.01)
    assert decision.passed
    assert any(reason.startswith("level with ranker") for reason in decision.reasons)


def test_without_level_with_the_same_challenger_waits_for_review() -> None:
    assert not gate_decision(stored_metadata([]), margin=0.01).passed
    # Metadata written before level_with existed reads the same way.
    older = {key: value for key, value in stored_metadata([]).items() if key != "level_with"}
    assert not gate_decision(older, margin=0.01).passed


def test_a_champion_of_another_kind_still_needs_the_margin() -> None:
    assert not gate_decision(stored_metadata(["ranker"], champion="ranker"), margin=0.01).passed
