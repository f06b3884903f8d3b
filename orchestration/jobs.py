"""Jobs over the asset graph. All run with the in-process executor: start-up latency matters more
than parallelism here, and warehouse writers must not overlap anyway."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job, in_process_executor

FULL_BUILD_JOB = "full_build_job"
INGEST_JOB = "ingest_job"

full_build_job = define_asset_job(
    FULL_BUILD_JOB,
    selection=AssetSelection.all(),
    executor_def=in_process_executor,
    description="Load landing files, build and test the dbt models, check, rank and publish.",
)

ingest_job = define_asset_job(
    INGEST_JOB,
    selection=AssetSelection.groups("ingest"),
    executor_def=in_process_executor,
    description="Load pending landing files into the raw tables (ledger, quarantine, checks).",
)

jobs = [full_build_job, ingest_job]
