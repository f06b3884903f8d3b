"""The Dagster code location: gathers every domain's assets, checks, jobs and resources."""

from __future__ import annotations

from dagster import Definitions

from orchestration.experiments.assets import experiment_assets
from orchestration.experiments.schedules import experiment_schedules
from orchestration.features.assets import item_embeddings
from orchestration.features.checks import feature_checks
from orchestration.ingest.assets import raw_events, raw_items
from orchestration.ingest.sensors import ingest_schedules, ingest_sensors
from orchestration.jobs import jobs
from orchestration.model.assets import recommender_challenger, recommender_champion
from orchestration.model.checks import model_checks
from orchestration.model.sensors import model_sensors
from orchestration.privacy.schedules import privacy_jobs, privacy_schedules
from orchestration.quality.checks import quality_checks
from orchestration.resources import code_location_resources
from orchestration.serving.assets import published_recommendations, recommendation_lists
from orchestration.serving.checks import serving_checks
from orchestration.warehouse.dbt import warehouse_dbt_models

defs = Definitions(
    assets=[
        raw_items,
        raw_events,
        warehouse_dbt_models,
        item_embeddings,
        recommender_challenger,
        recommender_champion,
        recommendation_lists,
        published_recommendations,
        *experiment_assets,
    ],
    asset_checks=[*quality_checks, *feature_checks, *model_checks, *serving_checks],
    jobs=[*jobs, *privacy_jobs],
    sensors=[*ingest_sensors, *model_sensors],
    schedules=[*ingest_schedules, *privacy_schedules, *experiment_schedules],
    resources=code_location_resources(),
)
