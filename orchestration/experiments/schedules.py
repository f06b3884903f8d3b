"""A daily analysis of the running experiment (skips while none runs)."""

from dagster import (
    DefaultScheduleStatus,
    ResourceParam,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from orchestration.experiments.store import ExperimentStore
from orchestration.jobs import experiment_results_job
from orchestration.serving.store import ServingStore
from orchestration.settings import Settings


@schedule(
    job=experiment_results_job,
    cron_schedule="0 6 * * *",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Every morning, attribute the running experiment's outcomes and log its verdict "
    "(skips while no experiment runs).",
)
def experiment_results_schedule(
    context: ScheduleEvaluationContext, settings: ResourceParam[Settings]
) -> RunRequest | SkipReason:
    """Runs the analysis of the active experiment, if there is one."""
    store = ServingStore(settings.serving_url)
    try:
        active = ExperimentStore(store.engine).active()
    finally:
        store.dispose()
    if active is None:
        return SkipReason("no experiment is running")
    return RunRequest(
        run_config={"ops": {"experiment_results": {"config": {"name": active.name}}}},
        tags={"freshrank/experiment": active.name},
    )


experiment_schedules = [experiment_results_schedule]
