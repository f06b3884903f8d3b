"""The landing sensor and the refresh schedules: new behaviour reaches the lists within seconds."""

import hashlib
from pathlib import Path

from dagster import (
    AssetKey,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    ResourceParam,
    RunRequest,
    ScheduleDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from orchestration.ingest.landing import KINDS, pending_files
from orchestration.jobs import full_build_job, refresh_job
from orchestration.settings import Settings

# The mart every refresh updates incrementally: materialized once a build has run.
INTERACTIONS_MART = AssetKey(["marts", "interactions"])


@sensor(
    jobs=[refresh_job, full_build_job],
    minimum_interval_seconds=2,
    default_status=DefaultSensorStatus.RUNNING,
)
def landing_sensor(context: SensorEvaluationContext, settings: ResourceParam[Settings]):
    """Files (or API batches) waiting in the landing zone start a refresh run; before the
    first build, the full build (a refresh updates the marts only a build makes, and the
    build's publish follows it: publish_after_build_sensor).

    The run key names the waiting files, and Dagster never starts two runs with one key: files
    that already have a run (queued, running or done) are asked for again on every tick and
    skipped by the daemon. No cursor is kept, so a request lost to a stopped daemon is made
    again at the next tick instead of leaving its files waiting for ever.
    """
    waiting = [path for kind in KINDS for path in pending_files(kind, settings)]
    if not waiting:
        return SkipReason("the landing zone is empty")
    deliveries = [_delivery(path) for path in waiting]
    fingerprint = hashlib.sha256("\n".join(filter(None, deliveries)).encode()).hexdigest()[:16]
    built = context.instance.get_latest_materialization_event(INTERACTIONS_MART) is not None
    job = refresh_job if built else full_build_job
    context.log.info("%d landing file(s) waiting: %s", len(waiting), job.name)
    return RunRequest(
        run_key=f"landing-{fingerprint}",
        job_name=job.name,
        tags={"freshrank/files": str(len(waiting))},
    )


def _delivery(path: Path) -> str | None:
    """A delivery is its path, size and modification time: a file delivered again under the
    same name (a daily events.csv, say) is a new batch. None: taken away while we looked."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return f"{path}:{status.st_size}:{status.st_mtime_ns}"


periodic_refresh_schedule = ScheduleDefinition(
    name="periodic_refresh_schedule",
    job=refresh_job,
    cron_schedule="*/15 * * * *",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Refresh every 15 minutes even without new files (trending moves with event time).",
)

nightly_retrain_schedule = ScheduleDefinition(
    name="nightly_retrain_schedule",
    job=full_build_job,
    cron_schedule="0 2 * * *",
    default_status=DefaultScheduleStatus.STOPPED,
    description="Every night a full build: every dbt model and test, the whole-mart checks, a new "
    "challenger on the day's split; the gate decides promotion, then everyone is republished.",
)

ingest_sensors = [landing_sensor]
ingest_schedules = [periodic_refresh_schedule, nightly_retrain_schedule]
