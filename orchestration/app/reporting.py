"""Run a job in-process and tell a person what happened: stages, timings, checks, counts."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import click
from dagster import DagsterInstance, ExecuteInProcessResult

from orchestration.app.memory import MemorySampler, lifetime_peak_bytes
from orchestration.instance import opened, run_job_in_process
from orchestration.jobs import PUBLISH_JOB, REFRESH_JOBS
from orchestration.settings import Settings

# A failed gate leaves the challenger waiting for review: that is not a failed build.
REVIEW_CHECKS = frozenset({"check_challenger_beats_champion"})


def check_reasons(metadata: Mapping[str, Any]) -> str | None:
    """Why a check failed, from its metadata: freshrank's own checks give their reasons; the GX
    suites, the expectations that failed (each with what it found)."""
    for key in ("reasons", "failures"):
        value = metadata.get(key)
        if value is not None:
            return str(getattr(value, "value", value))
    return None


def _stage_timings(
    instance: DagsterInstance, run_id: str, memory: MemorySampler
) -> list[tuple[str, str, float, str]]:
    """(step, status, seconds, peak resident memory in MB or "?") per step of the run."""
    timings = []
    for stats in instance.get_run_step_stats(run_id):
        if stats.start_time is None or stats.end_time is None:
            seconds = 0.0
        else:
            seconds = stats.end_time - stats.start_time
        status = stats.status.value if stats.status else "?"
        peak = memory.peak_between(stats.start_time, stats.end_time)
        timings.append((stats.step_key, status, seconds, "?" if peak is None else _mb(peak)))
    return timings


def _mb(value: int) -> str:
    return f"{value / 2**20:,.0f}"


def _materialization_metadata(result: ExecuteInProcessResult) -> dict[str, dict[str, object]]:
    found: dict[str, dict[str, object]] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        key = materialization.asset_key.to_user_string()
        found[key] = {name: value.value for name, value in materialization.metadata.items()}
    return found


def report_run(job_name: str, settings: Settings, instance: DagsterInstance | None = None) -> bool:
    """Run ``job_name`` in-process, print its stages, checks and counts; True if all passed.

    ``instance``: the deployment's Dagster instance, already open (a warm refresher keeps one
    for its lifetime: opening it checks the storage's schema, about 0.3 s a run); by default
    it is opened for this run."""
    started = time.perf_counter()
    with opened(instance, settings) as instance:
        with MemorySampler() as memory:
            result = run_job_in_process(job_name, settings, instance=instance)
        elapsed = time.perf_counter() - started
        timings = _stage_timings(instance, result.run_id, memory)
    if result.success:
        outcome = "succeeded"
    elif only_review_failed(result):
        outcome = "succeeded; the challenger waits for review (the gate did not promote it)"
    else:
        outcome = "FAILED"
    click.echo(
        f"\n{job_name}: run {result.run_id} {outcome} in {elapsed:.1f} s "
        f"(peak resident memory of this process so far {_mb(lifetime_peak_bytes())} MB)"
    )
    click.echo("  stage                                             status     seconds  peak MB")
    for step_key, status, seconds, peak in timings:
        click.echo(f"  {step_key:<49} {status:<10} {seconds:7.1f}  {peak:>7}")

    evaluations = result.get_asset_check_evaluations()
    failed = [evaluation for evaluation in evaluations if not evaluation.passed]
    errors = [
        evaluation
        for evaluation in failed
        if evaluation.severity.value == "ERROR" and evaluation.check_name not in REVIEW_CHECKS
    ]
    click.echo(
        f"  checks: {len(evaluations) - len(failed)} of {len(evaluations)} passed, "
        f"{len(failed) - len(errors)} warning(s), {len(errors)} error(s)"
    )
    for evaluation in failed:
        key = evaluation.asset_key.to_user_string()
        label = "FAILED" if evaluation in errors else "warning"
        if evaluation.check_name in REVIEW_CHECKS:
            label = "review"
        click.echo(f"    {label}: {key} {evaluation.check_name}")
        reasons = check_reasons(evaluation.metadata)
        if reasons is not None:
            click.echo("      " + reasons.replace("\n", "\n      "))

    metadata = _materialization_metadata(result)
    for kind in ("items", "events"):
        key = f"raw_{kind}"
        if key in metadata:
            counts = metadata[key]
            rejected = counts.get("files_rejected", 0)
            folder = settings.rejected_folder(kind)
            kept = f" ({rejected} rejected, kept in {folder})" if rejected else ""
            click.echo(
                f"  {key}: {counts.get('files', 0)} new file(s){kept}, rows read "
                f"{counts.get('rows_read', 0)}, loaded {counts.get('rows_loaded', 0)}, quarantined "
                f"{counts.get('rows_quarantined', 0)}; table now {counts.get('table_rows', 0)} rows"
            )
    if "recommender_challenger" in metadata:
        model = metadata["recommender_challenger"]
        click.echo(
            f"  model: registered version {model['version']} ({model['pipeline']}) in MLflow "
            f"(run {model['mlflow_run_id']}); mean backtest NDCG@10 "
            f"{model['challenger_ndcg']:.4f}; backtests took {model['backtest_seconds']} s"
        )
        if model.get("notes", "none") != "none":
            click.echo("  note: " + str(model["notes"]).replace("\n", "\n  note: "))
        click.echo(
            "\n  NDCG@10 of every pipeline, mean over the backtest cuts by segment and per cut "
            "(full tables and plots in MLflow and the Dagster UI):"
        )
        click.echo("  " + str(model["summary"]).replace("\n", "\n  "))
        click.echo(
            f"\n  {model['pipeline']} minus every other pipeline, NDCG@10 over the same (cut, "
            "user) pairs (95% paired-bootstrap interval):"
        )
        click.echo("  " + str(model["winner_versus_others"]).replace("\n", "\n  "))
    if "recommender_champion" in metadata:
        champion = metadata["recommender_champion"]
        click.echo(f"  champion: version {champion['version']} (replaced {champion['replaced']})")
    if "published_recommendations" in metadata:
        click.echo("  " + published_line(metadata["published_recommendations"]))
    elif job_name in (PUBLISH_JOB, *REFRESH_JOBS) and (not result.success or errors):
        click.echo("  nothing published: the previous lists stay served")
    return (result.success or only_review_failed(result)) and not errors


def only_review_failed(result: ExecuteInProcessResult) -> bool:
    """True when the only failed steps are review gates (a challenger left for review)."""
    failed_steps = {event.step_key for event in result.get_step_failure_events()}
    return bool(failed_steps) and all(
        any(step_key.endswith(check) for check in REVIEW_CHECKS) for step_key in failed_steps
    )


def build_and_publish(settings: Settings, instance: DagsterInstance | None = None) -> bool:
    """The full build, then publishing with whichever model is champion afterwards."""
    from orchestration.jobs import FULL_BUILD_JOB, PUBLISH_JOB

    built = report_run(FULL_BUILD_JOB, settings, instance)
    if not built:
        click.echo("  the build failed: nothing new published, the previous lists stay served")
        return False
    return report_run(PUBLISH_JOB, settings, instance)


def run_refresh(settings: Settings, job: str, instance: DagsterInstance | None = None) -> bool:
    """Run the refresh ``job`` (orchestration.app.watch.refresh_job_for's choice); when it is
    the full build, for a deployment never built, publish after it as `freshrank build` does."""
    from orchestration.jobs import FULL_BUILD_JOB

    if job == FULL_BUILD_JOB:
        click.echo("nothing is built yet: this first refresh is the full build, then publishing")
        return build_and_publish(settings, instance)
    return report_run(job, settings, instance)


def published_line(published: dict) -> str:
    """What a publish did (published_recommendations' metadata): the rows it wrote, whose lists
    they replaced, and how many users the store now serves (a refresh replaces a few users'
    lists of many)."""
    replaced = published.get("users_replaced", "all")
    whose = "every user's lists" if replaced == "all" else f"the lists of {replaced} user(s)"
    return (
        f"published {published['rows_published']} rows ({whose}) to "
        f"{published['serving_store']}; it serves {published['users']} users"
    )
