"""Great Expectations suites on each raw batch a run loads (no dbt import: `freshrank ingest`
starts with these alone)."""

import pandas as pd
from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, asset_check

from orchestration.ingest.assets import raw_events, raw_items
from orchestration.quality.expectations import SuiteOutcome, run_suite
from orchestration.settings import get_settings
from orchestration.warehouse.guard import open_warehouse


def read_warehouse(query: str, parameters: list | None = None) -> pd.DataFrame:
    settings = get_settings()
    # A short-lived connection under the writer lock: DuckDB admits one process per file.
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        return connection.execute(query, parameters or []).df()


def _run_batch(table: str, run_id: str) -> pd.DataFrame:
    """The rows this run loaded into raw.<table> (its batch_id is the run id)."""
    return read_warehouse(f"select * from raw.{table} where batch_id = ?", [run_id])


def suite_result(
    outcome: SuiteOutcome, rows: int, severity: AssetCheckSeverity
) -> AssetCheckResult:
    return AssetCheckResult(
        passed=outcome.success,
        severity=severity,
        metadata={"rows_validated": rows, **outcome.metadata()},
    )


def _nothing_loaded() -> AssetCheckResult:
    # A refresh with no new file of this kind: there is no batch to validate (and no reason to
    # start Great Expectations).
    return AssetCheckResult(passed=True, metadata={"rows_validated": 0})


@asset_check(
    asset=raw_events, description="The batch of raw events this run loaded meets the data contract."
)
def check_raw_events_batch(context: AssetCheckExecutionContext) -> AssetCheckResult:
    batch = _run_batch("events", context.run.run_id)
    if batch.empty:
        return _nothing_loaded()
    outcome = run_suite(batch, "raw_events", event_types=get_settings().event_types)
    return suite_result(outcome, len(batch), AssetCheckSeverity.ERROR)


@asset_check(asset=raw_items, description="The catalog rows this run loaded have ids and titles.")
def check_raw_items_batch(context: AssetCheckExecutionContext) -> AssetCheckResult:
    batch = _run_batch("items", context.run.run_id)
    if batch.empty:
        return _nothing_loaded()
    outcome = run_suite(batch, "raw_items")
    return suite_result(outcome, len(batch), AssetCheckSeverity.ERROR)


batch_checks = [check_raw_events_batch, check_raw_items_batch]
