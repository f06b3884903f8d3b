"""The promotion gate: a blocking check between a challenger and the champion alias."""

from typing import TYPE_CHECKING

from dagster import AssetCheckExecutionContext, AssetCheckResult, ResourceParam, asset_check

from orchestration.model.assets import latest_metadata, recommender_challenger
from orchestration.settings import Settings

if TYPE_CHECKING:
    from ml.tracking import GateDecision


@asset_check(
    asset=recommender_challenger,
    blocking=True,
    description="The challenger is the best pipeline of its backtests (or level with those ahead "
    "of it and, unlike them, ahead of the strongest baseline at every cut) and beats a champion "
    "of another kind by the configured margin on the same backtests; otherwise it waits for "
    "review in the MLflow UI.",
)
def check_challenger_beats_champion(
    context: AssetCheckExecutionContext, settings: ResourceParam[Settings]
) -> AssetCheckResult:
    challenger = latest_metadata(context, recommender_challenger.key)
    decision = gate_decision(challenger, settings.promotion_margin)
    return AssetCheckResult(
        passed=decision.passed,
        metadata={
            "version": str(challenger["version"]),
            "pipeline": str(challenger["pipeline"]),
            "margin": settings.promotion_margin,
            "decision": "promote" if decision.passed else "wait for review",
            "reasons": "\n".join(decision.reasons),
        },
    )


def gate_decision(challenger: dict, margin: float) -> "GateDecision":
    """The gate (ml.tracking.gate) on the challenger's materialization metadata (plain values,
    as `latest_metadata` reads them)."""
    from ml import tracking

    champion = challenger.get("champion_pipeline", "none")
    return tracking.gate(
        str(challenger["pipeline"]),
        {name: float(value) for name, value in dict(challenger["backtest_ndcgs"]).items()},
        None if champion in (None, "none") else str(champion),
        margin,
        [str(name) for name in challenger.get("level_with", [])],
    )


model_checks = [check_challenger_beats_champion]
