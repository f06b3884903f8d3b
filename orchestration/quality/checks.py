"""Great Expectations suites as blocking Dagster asset checks on the key marts."""

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    ResourceParam,
    asset_check,
)
from dagster_dbt import get_asset_key_for_model

from orchestration.quality.batch_checks import batch_checks, suite_result
from orchestration.quality.expectations import run_suite
from orchestration.settings import Settings
from orchestration.warehouse.dbt import warehouse_dbt_models
from orchestration.warehouse.guard import open_warehouse


def read_warehouse(settings: Settings, query: str) -> pd.DataFrame:
    """A mart's rows for a suite, over a short-lived read-only connection (DuckDB admits one
    writing process per file)."""
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        return connection.execute(query).df()


@asset_check(
    asset=get_asset_key_for_model([warehouse_dbt_models], "interactions"),
    blocking=True,
    description="Interactions are unique per event, weighted, timed and of known types.",
)
def check_interactions_mart(
    context: AssetCheckExecutionContext, settings: ResourceParam[Settings]
) -> AssetCheckResult:
    frame = read_warehouse(
        settings, "select event_id, event_type, occurred_at, weight from marts.interactions"
    )
    if frame.empty:
        return nothing_to_check(
            "no events loaded yet: deliver behaviour first (freshrank ingest --events FILE)"
        )
    outcome = run_suite(frame, "interactions", event_types=settings.event_types)
    return suite_result(outcome, len(frame), AssetCheckSeverity.ERROR)


@asset_check(
    asset=get_asset_key_for_model([warehouse_dbt_models], "items"),
    blocking=True,
    description="The catalog is non-empty with one titled row per item.",
)
def check_items_mart(
    context: AssetCheckExecutionContext, settings: ResourceParam[Settings]
) -> AssetCheckResult:
    frame = read_warehouse(settings, "select item_id, title from marts.items")
    if frame.empty:
        return nothing_to_check(
            "the catalog is empty: deliver the items (freshrank ingest --items FILE; "
            "item_id and title)"
        )
    outcome = run_suite(frame, "items")
    return suite_result(outcome, len(frame), AssetCheckSeverity.ERROR)


def nothing_to_check(reason: str) -> AssetCheckResult:
    """A failed check of an empty mart, saying what to deliver (the suites would only say that
    a row count of 0 is below 1)."""
    return AssetCheckResult(
        passed=False,
        severity=AssetCheckSeverity.ERROR,
        metadata={"rows_validated": 0, "reasons": reason},
    )


quality_checks = [*batch_checks, check_interactions_mart, check_items_mart]
