"""Jobs over the asset graph. All run with the in-process executor: start-up latency matters more
than parallelism here, and warehouse writers must not overlap anyway."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job, in_process_executor

from orchestration.ingest.job import ingest_job

FULL_BUILD_JOB = "full_build_job"
PUBLISH_JOB = "publish_job"
RETRAIN_JOB = "retrain_job"
REFRESH_JOB = "refresh_job"
REFRESH_EVENTS_JOB = "refresh_events_job"
REFRESH_JOBS = frozenset({REFRESH_JOB, REFRESH_EVENTS_JOB})
EXPERIMENT_RESULTS_JOB = "experiment_results_job"


SERVING = AssetSelection.groups("serving")
EXPERIMENTS = AssetSelection.groups("experiments")

full_build_job = define_asset_job(
    FULL_BUILD_JOB,
    selection=AssetSelection.all() - SERVING - EXPERIMENTS,
    executor_def=in_process_executor,
    description="Load landing files, build and test the dbt models, embed items, train, evaluate "
    "and register a challenger (promoted if its gate passes). Publishing follows as publish_job.",
)

publish_job = define_asset_job(
    PUBLISH_JOB,
    selection=SERVING,
    executor_def=in_process_executor,
    description="Score every user with the champion (or the first ranking), check, publish.",
)

retrain_job = define_asset_job(
    RETRAIN_JOB,
    selection=AssetSelection.groups("features", "model"),
    executor_def=in_process_executor,
    description="Embed changed items, run the backtests on everything loaded so far and register "
    "the winning pipeline as challenger.",
)

# A refresh must cost what its batch costs. The raw-batch checks and the blocking vector and list
# checks run on every refresh; the dbt tests and Great Expectations suites over the whole marts
# run with every full build (the nightly schedule runs one).
# Staging and intermediate models are views: they see new raw rows without being rebuilt.
REFRESH_WAREHOUSE = AssetSelection.key_prefixes("marts").without_checks()

# The training split is rebuilt by full builds and retraining only.
REFRESH = AssetSelection.groups("ingest", "features", "serving") | REFRESH_WAREHOUSE
RESCORE_AFFECTED = {"ops": {"recommendation_lists": {"config": {"scope": "affected"}}}}

refresh_job = define_asset_job(
    REFRESH_JOB,
    selection=REFRESH,
    executor_def=in_process_executor,
    config=RESCORE_AFFECTED,
    description="New landing files -> incremental models -> embeddings of new items -> rescore "
    "only the users with new behaviour (and trending) -> publish. No training; whole-mart tests "
    "run with full builds.",
)

# What a batch that cannot change the catalog needs (orchestration.app.watch.refresh_job_for): the
# catalog's load and the item embeddings, with their checks, are steps with nothing to do.
refresh_events_job = define_asset_job(
    REFRESH_EVENTS_JOB,
    selection=REFRESH - AssetSelection.assets("raw_items", "item_embeddings"),
    executor_def=in_process_executor,
    config=RESCORE_AFFECTED,
    description="refresh_job for new events alone (no item file waiting, the item vectors up to "
    "date with every loaded catalog row): new events -> incremental models -> rescore the users "
    "with new behaviour -> publish.",
)

experiment_results_job = define_asset_job(
    EXPERIMENT_RESULTS_JOB,
    selection=EXPERIMENTS,
    executor_def=in_process_executor,
    description="Attribute outcomes to an experiment's exposures, test the variants against the "
    "control, log the verdict to MLflow.",
)

jobs = [
    full_build_job,
    publish_job,
    ingest_job,
    retrain_job,
    refresh_job,
    refresh_events_job,
    experiment_results_job,
]
