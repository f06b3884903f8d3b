"""Run a job in-process and tell a person what happened: stages, timings, checks, counts."""

from __future__ import annotations

import time

import click
from dagster import DagsterInstance, ExecuteInProcessResult

from orchestration.instance import run_job_in_process
from orchestration.settings import Settings


def _stage_timings(instance: DagsterInstance, run_id: str) -> list[tuple[str, str, float]]:
    timings = []
    for stats in instance.get_run_step_stats(run_id):
        if stats.start_time is None or stats.end_time is None:
            seconds = 0.0
        else:
            seconds = stats.end_time - stats.start_time
        status = stats.status.value if stats.status else "?"
        timings.append((stats.step_key, status, seconds))
    return timings


def _materialization_metadata(result: ExecuteInProcessResult) -> dict[str, dict[str, object]]:
    found: dict[str, dict[str, object]] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        key = materialization.asset_key.to_user_string()
        found[key] = {name: value.value for name, value in materialization.metadata.items()}
    return found


def report_run(job_name: str, settings: Settings) -> bool:
    """Run ``job_name`` in-process, print its stages, checks and counts; True if all passed."""
    started = time.perf_counter()
    result = run_job_in_process(job_name, settings)
    elapsed = time.perf_counter() - started
    with DagsterInstance.get() as instance:
        timings = _stage_timings(instance, result.run_id)
    click.echo(
        f"\n{job_name}: run {result.run_id} {'succeeded' if result.success else 'FAILED'} "
        f"in {elapsed:.1f} s"
    )
    click.echo("  stage                                             status     seconds")
    for step_key, status, seconds in timings:
        click.echo(f"  {step_key:<49} {status:<10} {seconds:7.1f}")

    evaluations = result.get_asset_check_evaluations()
    failed = [evaluation for evaluation in evaluations if not evaluation.passed]
    errors = [evaluation for evaluation in failed if evaluation.severity.value == "ERROR"]
    click.echo(
        f"  checks: {len(evaluations) - len(failed)} of {len(evaluations)} passed, "
        f"{len(failed) - len(errors)} warning(s), {len(errors)} error(s)"
    )
    for evaluation in failed:
        key = evaluation.asset_key.to_user_string()
        label = "FAILED" if evaluation in errors else "warning"
        click.echo(f"    {label}: {key} {evaluation.check_name}")

    metadata = _materialization_metadata(result)
    for key in ("raw_items", "raw_events"):
        if key in metadata:
            counts = metadata[key]
            click.echo(
                f"  {key}: {counts.get('files', 0)} new file(s), rows read "
                f"{counts.get('rows_read', 0)}, loaded {counts.get('rows_loaded', 0)}, quarantined "
                f"{counts.get('rows_quarantined', 0)}; table now {counts.get('table_rows', 0)} rows"
            )
    if "published_recommendations" in metadata:
        published = metadata["published_recommendations"]
        click.echo(
            f"  published {published['rows_published']} rows for {published['users']} users "
            f"to {published['serving_store']}"
        )
    elif result.success is False or failed:
        click.echo("  nothing published: the previous lists stay served")
    return result.success and not errors
