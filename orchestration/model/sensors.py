"""Sensors of the model domain: publish after a build, rescore everyone when the champion moves."""

from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    ResourceParam,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    run_status_sensor,
    sensor,
)

from orchestration.jobs import FULL_BUILD_JOB, PUBLISH_JOB, full_build_job, publish_job
from orchestration.serving.state import served_champion
from orchestration.settings import Settings


@sensor(job=publish_job, minimum_interval_seconds=30, default_status=DefaultSensorStatus.RUNNING)
def champion_change_sensor(context: SensorEvaluationContext, settings: ResourceParam[Settings]):
    """A promotion or rollback in the registry (CLI, gate or MLflow UI) rescores every user,
    unless the served lists already come from the new champion (the build that promoted it
    published them): the sensor's first tick after `make dev` starts must not republish
    everyone, which at a million users takes the machine for twenty minutes."""
    from ml import tracking

    client = tracking.configure(settings.mlflow_tracking_uri, settings.mlflow_artifact_location)
    champion = tracking.alias_version(client, tracking.CHAMPION)
    if champion is None:
        return SkipReason("no champion registered yet")
    previous = context.cursor
    if previous == champion:
        return SkipReason(f"champion is still version {champion}")
    coming = publish_on_its_way(context.instance)
    if coming is not None:
        # The cursor stays: once that publish has served the champion, the next tick sees so.
        return SkipReason(f"champion is version {champion}, and {coming}")
    context.update_cursor(champion)
    if served_champion(settings) == (True, champion):
        return SkipReason(f"the served lists already come from champion version {champion}")
    # No run key: a rollback to an earlier champion must publish again, and the cursor
    # already asks for one run per change.
    return RunRequest(
        tags={"freshrank/champion": champion, "freshrank/previous_champion": previous or "none"}
    )


# A run in one of these has not ended yet.
UNFINISHED = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


def publish_on_its_way(instance: DagsterInstance) -> str | None:
    """Why a full publish that will serve the current champion is already coming, or None: a
    build or a publish has not ended, or the newest successful build is newer than the newest
    publish (publish_after_build_sensor asks for its publish). A build's gate moves the alias
    mid-run: without this, a promotion by a build was published twice."""
    for job in (FULL_BUILD_JOB, PUBLISH_JOB):
        if instance.get_run_records(RunsFilter(job_name=job, statuses=UNFINISHED), limit=1):
            return f"a {job} run has not ended: the lists it leads to serve the champion"
    built = instance.get_run_records(
        RunsFilter(job_name=FULL_BUILD_JOB, statuses=[DagsterRunStatus.SUCCESS]), limit=1
    )
    published = instance.get_run_records(RunsFilter(job_name=PUBLISH_JOB), limit=1)
    if built and (not published or published[0].storage_id < built[0].storage_id):
        return "the newest build's own publish is still to come"
    return None


@run_status_sensor(
    run_status=DagsterRunStatus.SUCCESS,
    monitored_jobs=[full_build_job],
    request_job=publish_job,
    default_status=DefaultSensorStatus.RUNNING,
)
def publish_after_build_sensor(context):
    """A successful full build publishes fresh lists."""
    return RunRequest(run_key=f"{PUBLISH_JOB}-after-{context.dagster_run.run_id}")


model_sensors = [champion_change_sensor, publish_after_build_sensor]
