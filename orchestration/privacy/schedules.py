"""The retention job and its daily schedule (which skips while retention is off)."""

from dagster import (
    DefaultScheduleStatus,
    OpExecutionContext,
    ResourceParam,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    in_process_executor,
    job,
    op,
    schedule,
)

from orchestration.privacy.retention import apply_retention
from orchestration.settings import Settings

RETENTION_JOB = "retention_job"


@op(pool="warehouse")
def expired_events_deleted(context: OpExecutionContext, settings: ResourceParam[Settings]) -> None:
    """Delete events older than FRESHRANK_RETENTION_DAYS from the warehouse, the serving store
    and the kept files."""
    report = apply_retention(settings)
    if report is None:
        context.log.info("retention is off (FRESHRANK_RETENTION_DAYS is not set): nothing deleted")
        return
    context.add_output_metadata(
        {
            "cutoff": report.cutoff.isoformat(timespec="seconds"),
            "rows_removed": report.rows_removed,
            "warehouse_rows": sum(report.warehouse_rows.values()),
            "serving_rows": sum(report.serving_rows.values()),
            "file_rows": report.file_rows,
            "files_changed": report.files_changed,
        }
    )


@job(name=RETENTION_JOB, executor_def=in_process_executor)
def retention_job() -> None:
    """Events older than the retention period deleted everywhere freshrank keeps them."""
    expired_events_deleted()


@schedule(
    job=retention_job,
    cron_schedule="30 3 * * *",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Every night, delete what is older than FRESHRANK_RETENTION_DAYS (skips while "
    "the setting is unset).",
)
def retention_schedule(
    context: ScheduleEvaluationContext, settings: ResourceParam[Settings]
) -> RunRequest | SkipReason:
    """Runs the retention job nightly when retention is configured."""
    retention_days = settings.retention_days
    if retention_days is None:
        return SkipReason("retention is off: FRESHRANK_RETENTION_DAYS is not set")
    return RunRequest(tags={"freshrank/retention_days": f"{retention_days:g}"})


privacy_jobs = [retention_job]
privacy_schedules = [retention_schedule]
