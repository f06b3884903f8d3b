"""Great Expectations suites as Dagster asset checks on raw batches and key marts."""

import pandas as pd
from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, asset_check
from dagster_dbt import get_asset_key_for_model

from orchestration.ingest.assets import raw_events, raw_items
from orchestration.quality.expectations import SuiteOutcome, run_suite
from orchestration.settings import get_settings
from orchestration.warehouse.dbt import warehouse_dbt_models
from orchestration.warehouse.guard import open_warehouse


def _read(query: str, parameters: list | None = None) -> pd.DataFrame:
    settings = get_settings()
    # A short-lived connection under the writer lock: DuckDB admits one process per file.
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        return connection.execute(query, parameters or []).df()


def _latest_batch(table: str) -> pd.DataFrame:
    return _read(
        f"select * from raw.{table} where batch_id = "
        f"(select batch_id from raw.{table} order by loaded_at desc limit 1)"
    )


def _result(outcome: SuiteOutcome, rows: int, severity: AssetCheckSeverity) -> AssetCheckResult:
    return AssetCheckResult(
        passed=outcome.success,
        severity=severity,
        metadata={"rows_validated": rows, **outcome.metadata()},
    )


@asset_check(
    asset=raw_events, description="The newest batch of raw events meets the data contract."
)
def check_raw_events_batch(context: AssetCheckExecutionContext) -> AssetCheckResult:
    batch = _latest_batch("events")
    outcome = run_suite(batch, "raw_events", event_types=get_settings().event_types)
    return _result(outcome, len(batch), AssetCheckSeverity.ERROR)


@asset_check(asset=raw_items, description="The newest batch of catalog rows has ids and titles.")
def check_raw_items_batch(context: AssetCheckExecutionContext) -> AssetCheckResult:
    batch = _latest_batch("items")
    outcome = run_suite(batch, "raw_items")
    return _result(outcome, len(batch), AssetCheckSeverity.ERROR)


@asset_check(
    asset=get_asset_key_for_model([warehouse_dbt_models], "interactions"),
    blocking=True,
    description="Interactions are unique per event, weighted, timed and of known types.",
)
def check_interactions_mart(context: AssetCheckExecutionContext) -> AssetCheckResult:
    frame = _read("select event_id, event_type, occurred_at, weight from marts.interactions")
    outcome = run_suite(frame, "interactions", event_types=get_settings().event_types)
    return _result(outcome, len(frame), AssetCheckSeverity.ERROR)


@asset_check(
    asset=get_asset_key_for_model([warehouse_dbt_models], "items"),
    blocking=True,
    description="The catalog is non-empty with one titled row per item.",
)
def check_items_mart(context: AssetCheckExecutionContext) -> AssetCheckResult:
    frame = _read("select item_id, title from marts.items")
    outcome = run_suite(frame, "items")
    return _result(outcome, len(frame), AssetCheckSeverity.ERROR)


quality_checks = [
    check_raw_events_batch,
    check_raw_items_batch,
    check_interactions_mart,
    check_items_mart,
]
