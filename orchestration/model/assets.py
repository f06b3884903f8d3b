"""Model: backtest every candidate pipeline (each baseline, the learned ranker), register the
winner in MLflow as `challenger`, and promote it to `champion` only when the gate check passes."""

from contextlib import nullcontext

from dagster import (
    AssetExecutionContext,
    AssetKey,
    Config,
    MaterializeResult,
    MetadataValue,
    ResourceParam,
    asset,
)
from dagster_dbt import get_asset_key_for_model

from ml.pipeline.backtest import BacktestConfig, BacktestResult, run_backtests
from ml.pipeline.pipeline import PipelineConfig
from ml.pipeline.ranker import RankerConfig
from ml.pipeline.sources import SequentialSourceConfig
from ml.rules import RankingRules
from orchestration.compute import ComputeResource
from orchestration.features.assets import item_embeddings
from orchestration.settings import Settings
from orchestration.warehouse.dbt import warehouse_dbt_models
from orchestration.warehouse.reads import load_snapshot

MODEL_GROUP = "model"


class BacktestRunConfig(Config):
    """Overrides for one training run; zero values take the settings."""

    cuts: int = 0
    training_cuts: int = 0
    # LightGBM's lambdarank, rank_xendcg, or both joined by "+" (the bagged models alternate).
    ranker_objective: str = "lambdarank+rank_xendcg"
    ranker_trees: int = 150
    ranker_leaves: int = 7
    ranker_learning_rate: float = 0.05
    seed: int = 7


def pipeline_config(settings: Settings) -> PipelineConfig:
    """The ranking pipeline this deployment runs (sources, list length, rules)."""
    return PipelineConfig(
        sources=settings.candidate_sources,
        k=settings.top_k,
        history_length=settings.history_length,
        new_item_slots=settings.new_item_slots,
        rules=RankingRules(mmr_lambda=settings.mmr_lambda, new_item_slots=settings.new_item_slots),
        context_key=settings.context_key,
        sequential=SequentialSourceConfig(epochs=settings.sequential_epochs),
    )


def backtest_config(settings: Settings, run: BacktestRunConfig | None = None) -> BacktestConfig:
    run = run or BacktestRunConfig()
    return BacktestConfig(
        cuts=run.cuts or settings.backtest_cuts,
        training_cuts=run.training_cuts or settings.backtest_training_cuts,
        window_fraction=settings.backtest_window_fraction,
        min_users=settings.backtest_min_users,
        max_users=settings.backtest_max_users,
        min_ranker_users=2 * settings.backtest_min_users,
        ablations=settings.ablations,
        processes=settings.rank_processes,
        ranker=RankerConfig(
            objective=run.ranker_objective,
            n_estimators=run.ranker_trees,
            num_leaves=run.ranker_leaves,
            learning_rate=run.ranker_learning_rate,
            seed=run.seed,
        ),
    )


def backtest_figures(result: BacktestResult) -> dict[str, float]:
    """Every competing pipeline's mean backtest NDCG@k (ablations are measurements only)."""
    from ml.pipeline.backtest import is_ablation

    return {
        name: round(result.mean_ndcg(name), 6) for name in result.pipelines if not is_ablation(name)
    }


@asset(
    group_name=MODEL_GROUP,
    deps=[
        get_asset_key_for_model([warehouse_dbt_models], "interactions"),
        get_asset_key_for_model([warehouse_dbt_models], "item_covisitation"),
        get_asset_key_for_model([warehouse_dbt_models], "items"),
        item_embeddings,
    ],
)
def recommender_challenger(
    context: AssetExecutionContext,
    config: BacktestRunConfig,
    compute: ComputeResource,
    settings: ResourceParam[Settings],
) -> MaterializeResult:
    """The best ranking pipeline of this build's backtests, registered in MLflow as challenger."""
    from ml import tracking

    settings.ensure_dirs()
    snapshot = load_snapshot(settings)
    pipeline = compute.training(settings, pipeline_config(settings))
    backtest = backtest_config(settings, config)
    client = tracking.configure(settings.mlflow_tracking_uri, settings.mlflow_artifact_location)
    champion_version = tracking.alias_version(client, tracking.CHAMPION)
    champion_pipeline = (
        tracking.version_pipeline(client, champion_version) if champion_version else None
    )
    # Ray only when a model trains there (the sequential source); counting sources fit here.
    with compute.session(settings) if pipeline.sequential.train_workers else nullcontext():
        result = run_backtests(snapshot, pipeline, backtest, champion_pipeline)
    data = {
        "interactions": len(snapshot.interactions),
        "users": int(snapshot.interactions["user_id"].nunique()),
        "catalog_items": len(snapshot.item_ids),
        "cuts": ", ".join(str(cut) for cut in result.cuts) or "none",
        "dagster_run_id": context.run_id,
    }
    tracked = tracking.log_backtest_run(
        result,
        pipeline,
        backtest,
        data,
        settings.mlflow_tracking_uri,
        settings.mlflow_artifact_location,
    )
    for note in result.notes:
        context.log.warning(note)
    context.log.info(
        f"registered version {tracked.version} ({result.winner}): mean backtest NDCG@"
        f"{result.k} {result.mean_ndcg(result.winner):.4f}; champion {champion_version} "
        f"({champion_pipeline})"
    )
    return MaterializeResult(
        metadata={
            "version": tracked.version,
            "pipeline": result.winner,
            "mlflow_run_id": tracked.run_id,
            "challenger_ndcg": result.mean_ndcg(result.winner),
            "new_user_ndcg": result.mean_ndcg(result.winner, "new_user"),
            "backtest_ndcgs": MetadataValue.json(backtest_figures(result)),
            # Better on average than the winner, but level with it (backtest.choose).
            "level_with": MetadataValue.json(list(result.level_with)),
            "champion_version": champion_version or "none",
            "champion_pipeline": champion_pipeline or "none",
            "backtest_seconds": round(result.seconds, 1),
            "summary": MetadataValue.md(result.summary.round(4).to_markdown()),
            "winner_versus_others": MetadataValue.md(
                result.comparisons.to_markdown(index=False)
                if not result.comparisons.empty
                else "no comparison: nothing was evaluated"
            ),
            "ranker_importance": MetadataValue.md(
                result.importance.head(15).round(1).to_markdown()
                if not result.importance.empty
                else "no ranker"
            ),
            "notes": "\n".join(result.notes) or "none",
            **data,
        }
    )


def latest_metadata(context, asset_key: AssetKey) -> dict:
    """The metadata of an asset's newest materialization, as plain values."""
    event = context.instance.get_latest_materialization_event(asset_key)
    if event is None or event.asset_materialization is None:
        return {}
    return {name: value.value for name, value in event.asset_materialization.metadata.items()}


@asset(group_name=MODEL_GROUP, deps=[recommender_challenger])
def recommender_champion(
    context: AssetExecutionContext, settings: ResourceParam[Settings]
) -> MaterializeResult:
    """The registered version serving traffic: the challenger, once its gate check has passed."""
    from ml import tracking

    challenger = latest_metadata(context, recommender_challenger.key)
    client = tracking.configure(settings.mlflow_tracking_uri, settings.mlflow_artifact_location)
    replaced = tracking.promote(client, str(challenger["version"]))
    context.log.info(f"version {challenger['version']} is champion (replaced {replaced})")
    return MaterializeResult(
        metadata={
            "version": str(challenger["version"]),
            "pipeline": str(challenger.get("pipeline", "")),
            "replaced": replaced or "none",
            "ndcg": challenger["challenger_ndcg"],
        }
    )
