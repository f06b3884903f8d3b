"""The promotion gate: a blocking check between a challenger and the champion alias."""

from dagster import AssetCheckExecutionContext, AssetCheckResult, ResourceParam, asset_check

from orchestration.model.assets import latest_metadata, recommender_challenger
from orchestration.settings import Settings


@asset_check(
    asset=recommender_challenger,
    blocking=True,
    description="The challenger is the best pipeline of its backtests and beats a champion of "
    "another kind by the configured margin on the same backtests; otherwise it waits for "
    "review in the MLflow UI.",
)
def check_challenger_beats_champion(
    context: AssetCheckExecutionContext, settings: ResourceParam[Settings]
) -> AssetCheckResult:
    from ml import tracking

    challenger = latest_metadata(context, recommender_challenger.key)
    champion = challenger.get("champion_pipeline", "none")
    decision = tracking.gate(
        str(challenger["pipeline"]),
        {name: float(value) for name, value in dict(challenger["backtest_ndcgs"]).items()},
        None if champion in (None, "none") else str(champion),
        settings.promotion_margin,
    )
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


model_checks = [check_challenger_beats_champion]
