"""Experiments in the asset graph: each variant's lists with every publish, and the analysis.

`experiment_lists` runs after every publish (full or refresh) and does nothing while no
experiment is active. `experiment_results` attributes outcomes from the warehouse's
interactions to the exposures in the serving store, tests the variants against the control and
logs the verdict to MLflow; `freshrank experiment analyse` runs it, or the Dagster UI.
"""

import base64

import pandas as pd
from dagster import (
    AssetExecutionContext,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    ResourceParam,
    asset,
)
from dagster_dbt import get_asset_key_for_model

from ml.constants import USER_ID
from ml.experiments.analysis import SERVED_AT, AnalysisConfig, ExperimentResults, analyse
from ml.experiments.tracking import log_results, plot_png, results_plot
from orchestration.experiments.lists import publish_experiment_lists
from orchestration.experiments.store import ExperimentRecord, ExperimentStore
from orchestration.serving.assets import SERVING_GROUP, published_recommendations
from orchestration.serving.store import ServingStore
from orchestration.settings import Settings
from orchestration.warehouse.dbt import warehouse_dbt_models
from orchestration.warehouse.guard import open_warehouse

EXPERIMENTS_GROUP = "experiments"


@asset(group_name=SERVING_GROUP, deps=[published_recommendations])
def experiment_lists(
    context: AssetExecutionContext, settings: ResourceParam[Settings]
) -> MaterializeResult:
    """The active experiment's lists, one per enrolled user from their variant's model."""
    published = publish_experiment_lists(settings)
    if published is None:
        return MaterializeResult(metadata={"experiment": "none"})
    context.log.info(f"experiment {published.experiment}: published {published.rows} rows")
    return MaterializeResult(
        metadata={
            "experiment": published.experiment,
            "rows": published.rows,
            "scope": published.scope,
            "variants": MetadataValue.md(published.variants.to_markdown(index=False)),
        }
    )


class ExperimentResultsConfig(Config):
    """Which experiment to analyse; empty: the active one, else the newest."""

    name: str = ""


def read_outcomes(settings: Settings, exposures: pd.DataFrame) -> pd.DataFrame:
    """The exposed users' interactions from their first exposure to the window after the last."""
    columns = ["user_id", "item_id", "event_type", "value", "occurred_at"]
    if exposures.empty:
        return pd.DataFrame(columns=columns)
    window = pd.Timedelta(hours=settings.experiment_attribution_hours)
    users = pd.DataFrame({USER_ID: exposures[USER_ID].astype(str).unique()})
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        connection.register("exposed_users", users)
        return connection.execute(
            f"select {', '.join(columns)} from marts.interactions "
            "where user_id in (select user_id from exposed_users) "
            "and occurred_at >= ? and occurred_at <= ? order by occurred_at",
            [exposures[SERVED_AT].min(), exposures[SERVED_AT].max() + window],
        ).df()


def analyse_experiment(
    settings: Settings, experiments: ExperimentStore, record: ExperimentRecord
) -> tuple[ExperimentResults, str]:
    """Attribute, test and judge one experiment; log it to MLflow and keep the verdict with it."""
    exposures = experiments.exposures(record.name)
    config = AnalysisConfig(
        window=pd.Timedelta(hours=settings.experiment_attribution_hours),
        k=settings.top_k,
        alpha=settings.experiment_alpha,
        min_users=settings.experiment_min_users,
    )
    names = [variant.name for variant in record.design.variants]
    results = analyse(exposures, read_outcomes(settings, exposures), names, config)
    run_id = log_results(
        record.design,
        results,
        {
            "attribution_hours": settings.experiment_attribution_hours,
            "alpha": settings.experiment_alpha,
            "min_users": settings.experiment_min_users,
            "k": settings.top_k,
            "status": record.status,
        },
        settings.mlflow_tracking_uri,
        settings.mlflow_artifact_location,
    )
    experiments.record_verdict(record.name, results.verdict.text)
    return results, run_id


@asset(
    group_name=EXPERIMENTS_GROUP,
    deps=[get_asset_key_for_model([warehouse_dbt_models], "interactions")],
)
def experiment_results(
    context: AssetExecutionContext,
    config: ExperimentResultsConfig,
    settings: ResourceParam[Settings],
) -> MaterializeResult:
    """Click-through, conversion and NDCG of each variant's served lists, tested, with a verdict."""
    store = ServingStore(settings.serving_url)
    try:
        experiments = ExperimentStore(store.engine)
        record = _chosen(experiments, config.name)
        results, run_id = analyse_experiment(settings, experiments, record)
    finally:
        store.dispose()
    context.log.info(f"experiment {record.name}: {results.verdict.text}")
    image = base64.b64encode(plot_png(results_plot(results, record.name))).decode()
    return MaterializeResult(
        metadata={
            "experiment": record.name,
            "status": record.status,
            "verdict": results.verdict.text,
            "decision": results.verdict.decision,
            "variants": MetadataValue.md(results.variants.round(4).to_markdown(index=False)),
            "against_control": MetadataValue.md(
                results.comparisons.round(4).to_markdown(index=False)
                if not results.comparisons.empty
                else "no comparison"
            ),
            "plot": MetadataValue.md(f"![per-variant figures](data:image/png;base64,{image})"),
            "exposures": int(results.variants["exposures"].sum()),
            "attributed_events": results.attributed_events,
            "mlflow_run_id": run_id,
        }
    )


def _chosen(experiments: ExperimentStore, name: str) -> ExperimentRecord:
    if name:
        return experiments.get(name)
    record = experiments.active() or next(iter(experiments.all()), None)
    if record is None:
        raise Failure(
            description="no experiment to analyse: start one with `freshrank experiment start`"
        )
    return record


experiment_assets = [experiment_lists, experiment_results]
