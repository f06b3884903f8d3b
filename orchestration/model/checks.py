"""The promotion gate: a blocking check between a challenger and the champion alias."""

from dagster import AssetCheckExecutionContext, AssetCheckResult, asset_check

from orchestration.model.assets import latest_metadata, recommender_challenger
from orchestration.settings import get_settings


@asset_check(
    asset=recommender_challenger,
    blocking=True,
    description="The challenger beats the champion and every baseline on validation NDCG@10 by "
    "the configured margin; otherwise it waits for review in the MLflow UI.",
)
def check_challenger_beats_champion(context: AssetCheckExecutionContext) -> AssetCheckResult:
    from ml import tracking

    settings = get_settings()
    challenger = latest_metadata(context, recommender_challenger.key)
    champion_ndcg = challenger.get("champion_ndcg", -1.0)
    decision = tracking.gate(
        float(challenger["challenger_ndcg"]),
        dict(challenger["baseline_ndcgs"]),
        None if champion_ndcg is None or champion_ndcg < 0 else float(champion_ndcg),
        settings.promotion_margin,
    )
    return AssetCheckResult(
        passed=decision.passed,
        metadata={
            "version": str(challenger["version"]),
            "margin": settings.promotion_margin,
            "decision": "promote" if decision.passed else "wait for review",
            "reasons": "\n".join(decision.reasons),
        },
    )


model_checks = [check_challenger_beats_champion]
