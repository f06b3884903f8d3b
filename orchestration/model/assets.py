"""Model: train the sequential recommender, evaluate it against the baselines, register it in
MLflow as `challenger`, and promote it to `champion` only when the gate check passes."""

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetKey,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from dagster_dbt import get_asset_key_for_model

from ml.constants import ITEM_ID
from ml.evaluation.protocol import NEW_ITEM_TARGETS, OVERALL, SEGMENTS
from ml.models.sequential import SequentialConfig
from ml.training import (
    BLENDED_MODEL,
    MAIN_MODEL,
    SERVED_MODEL,
    TrainingConfig,
    train_and_evaluate,
)
from orchestration.features.assets import item_embeddings
from orchestration.features.embedding_store import load_vectors
from orchestration.settings import Settings, get_settings
from orchestration.warehouse.dbt import warehouse_dbt_models
from orchestration.warehouse.guard import open_warehouse

MODEL_GROUP = "model"


class TrainingRunConfig(Config):
    """Hyperparameters for one training run; zero/empty values take the settings or defaults."""

    max_epochs: int = 0
    hidden_size: int = 64
    layers: int = 2
    heads: int = 2
    learning_rate: float = 2e-3
    dropout: float = 0.2
    seed: int = 7
    ablations: str = ""  # "yes" / "no"; empty: FRESHRANK_TRAINING_ABLATIONS


def training_config(settings: Settings, run: TrainingRunConfig | None = None) -> TrainingConfig:
    run = run or TrainingRunConfig()
    sequential = SequentialConfig(
        max_epochs=run.max_epochs or settings.training_max_epochs,
        hidden_size=run.hidden_size,
        layers=run.layers,
        heads=run.heads,
        learning_rate=run.learning_rate,
        dropout=run.dropout,
        seed=run.seed,
    )
    ablations = settings.training_ablations if not run.ablations else run.ablations == "yes"
    return TrainingConfig(
        sequential=sequential,
        k=settings.top_k,
        ablations=ablations,
        new_item_slots=settings.new_item_slots,
        ensemble_size=settings.training_ensemble_size,
    )


def read_training_inputs(settings: Settings):
    """(splits, catalog item ids, text vectors) from the warehouse."""
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        splits = connection.sql(
            "select user_id, item_id, weight, occurred_at, split from marts.interaction_splits"
        ).df()
        catalog = connection.sql(f"select {ITEM_ID} from marts.items").df()[ITEM_ID]
        vectors = load_vectors(connection)
    return splits, catalog, vectors


@asset(
    group_name=MODEL_GROUP,
    deps=[
        get_asset_key_for_model([warehouse_dbt_models], "interaction_splits"),
        get_asset_key_for_model([warehouse_dbt_models], "items"),
        item_embeddings,
    ],
)
def recommender_challenger(
    context: AssetExecutionContext, config: TrainingRunConfig
) -> MaterializeResult:
    """A newly trained sequential recommender, evaluated and registered in MLflow as challenger."""
    from ml import tracking

    settings = get_settings()
    settings.ensure_dirs()
    splits, catalog, vectors = read_training_inputs(settings)
    run_config = training_config(settings, config)
    result = train_and_evaluate(splits, catalog, vectors if not vectors.empty else None, run_config)
    tracked = tracking.log_training_run(
        result,
        run_config,
        {**result.data_summary, "dagster_run_id": context.run_id},
        settings.mlflow_tracking_uri,
        settings.mlflow_artifact_location,
    )
    client = tracking.configure(settings.mlflow_tracking_uri, settings.mlflow_artifact_location)
    champion_version = tracking.alias_version(client, tracking.CHAMPION)
    champion_ndcg = None
    if champion_version is not None and champion_version != tracked.version:
        champion, champion_blend = tracking.load_version(
            settings.mlflow_tracking_uri, champion_version
        )
        champion_ndcg = result.served_ndcg(champion, champion_blend)
    baselines = tracking.baseline_ndcgs(result)
    context.log.info(
        f"registered version {tracked.version}: NDCG@{run_config.k} "
        f"{result.metric(BLENDED_MODEL):.4f} "
        f"(baselines {baselines}; champion {champion_version}: {champion_ndcg})"
    )
    table = result.evaluation.round(4)
    return MaterializeResult(
        metadata={
            "version": tracked.version,
            "mlflow_run_id": tracked.run_id,
            "challenger_ndcg": result.metric(BLENDED_MODEL),
            "model_ndcg": result.metric(MAIN_MODEL),
            "served_ndcg": result.metric(SERVED_MODEL),
            "served_new_item_ndcg": result.metric(SERVED_MODEL, "new_item_targets"),
            "baseline_ndcgs": MetadataValue.json(baselines),
            "champion_version": champion_version or "none",
            "champion_ndcg": champion_ndcg if champion_ndcg is not None else -1.0,
            "trending_blend": result.trending_blend,
            "best_epoch": result.best_epoch,
            "training_seconds": round(result.seconds, 1),
            "evaluation": MetadataValue.md(table.to_markdown(index=False)),
            "ndcg_by_segment": MetadataValue.md(ndcg_by_segment(result).to_markdown()),
            "versus_baselines": MetadataValue.md(result.comparisons.to_markdown(index=False)),
            **{name: value for name, value in result.data_summary.items()},
        }
    )


def ndcg_by_segment(result) -> pd.DataFrame:
    """NDCG@k of every model (rows, best overall first) by segment (columns), plus the new-item
    hit rate: the evaluation table at a glance."""
    table = result.evaluation
    ndcg = [column for column in table.columns if column.startswith("ndcg@")][0]
    hit = ndcg.replace("ndcg", "hit_rate")
    wide = table.pivot(index="model", columns="segment", values=ndcg)
    wide = wide[[segment for segment in SEGMENTS if segment in wide.columns]]
    new_items = table[table["segment"] == NEW_ITEM_TARGETS].set_index("model")[hit]
    wide[f"new-item {hit}"] = new_items.reindex(wide.index)
    return wide.sort_values(OVERALL, ascending=False).round(4)


def latest_metadata(context, asset_key: AssetKey) -> dict:
    """The metadata of an asset's newest materialization, as plain values."""
    event = context.instance.get_latest_materialization_event(asset_key)
    if event is None or event.asset_materialization is None:
        return {}
    return {name: value.value for name, value in event.asset_materialization.metadata.items()}


@asset(group_name=MODEL_GROUP, deps=[recommender_challenger])
def recommender_champion(context: AssetExecutionContext) -> MaterializeResult:
    """The registered version serving traffic: the challenger, once its gate check has passed."""
    from ml import tracking

    settings = get_settings()
    challenger = latest_metadata(context, recommender_challenger.key)
    client = tracking.configure(settings.mlflow_tracking_uri, settings.mlflow_artifact_location)
    replaced = tracking.promote(client, str(challenger["version"]))
    context.log.info(f"version {challenger['version']} is champion (replaced {replaced})")
    return MaterializeResult(
        metadata={
            "version": str(challenger["version"]),
            "replaced": replaced or "none",
            "ndcg": challenger["challenger_ndcg"],
        }
    )
