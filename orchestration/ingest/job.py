"""The ingest job on its own: `freshrank ingest` runs it without importing dbt, the model or the
serving assets, so a command that lands a file starts in about a second, not several."""

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from orchestration.ingest.assets import raw_events, raw_items
from orchestration.quality.batch_checks import batch_checks
from orchestration.resources import SETTINGS, settings_resource

INGEST_JOB = "ingest_job"

ingest_job = define_asset_job(
    INGEST_JOB,
    selection=AssetSelection.groups("ingest"),
    executor_def=in_process_executor,
    description="Load pending landing files into the raw tables (ledger, quarantine, checks).",
)


def ingest_definitions() -> Definitions:
    """Just the raw assets, their batch checks and the ingest job (the same run, recorded on
    the same instance, as the full code location's ingest_job)."""
    return Definitions(
        assets=[raw_items, raw_events],
        asset_checks=batch_checks,
        jobs=[ingest_job],
        resources={SETTINGS: settings_resource},
    )
