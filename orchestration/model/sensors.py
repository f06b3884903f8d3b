"""Sensors of the model domain: publish after a build, rescore everyone when the champion moves."""

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    ResourceParam,
    RunRequest,
    SensorEvaluationContext,
    SkipReason,
    run_status_sensor,
    sensor,
)

from orchestration.jobs import PUBLISH_JOB, full_build_job, publish_job
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
    context.update_cursor(champion)
    if served_champion(settings) == (True, champion):
        return SkipReason(f"the served lists already come from champion version {champion}")
    # No run key: a rollback to an earlier champion must publish again, and the cursor
    # already asks for one run per change.
    return RunRequest(
        tags={"freshrank/champion": champion, "freshrank/previous_champion": previous or "none"}
    )


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
