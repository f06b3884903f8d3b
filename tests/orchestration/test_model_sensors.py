"""champion_change_sensor: a new champion rescores everyone once, unless the served lists
already come from it; a rollback to an earlier champion rescores again."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace

from dagster import (
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    RunRequest,
    SkipReason,
    build_sensor_context,
)
from dagster._core.utils import make_new_run_id

from orchestration.model.sensors import champion_change_sensor
from orchestration.serving.state import remember_served_champion, served_champion
from orchestration.settings import Settings


def registry_with_versions(settings: Settings, count: int):
    from ml import tracking

    client = tracking.configure(settings.mlflow_tracking_uri, settings.mlflow_artifact_location)
    client.create_registered_model(tracking.REGISTERED_MODEL)
    for _ in range(count):
        client.create_model_version(tracking.REGISTERED_MODEL, source=settings.home.as_uri())
    return client


def tick(settings: Settings, cursor: str | None, instance: DagsterInstance | None = None):
    """(what one evaluation returned, the cursor it left), on an instance without runs unless
    one is given."""
    with DagsterInstance.ephemeral() if instance is None else nullcontext(instance) as runs:
        context = build_sensor_context(
            cursor=cursor, resources={"settings": settings}, instance=runs
        )
        result = champion_change_sensor(context)
    return result, context.cursor


def add_run(instance: DagsterInstance, job_name: str, status: DagsterRunStatus) -> str:
    run_id = make_new_run_id()
    instance.add_run(DagsterRun(job_name=job_name, run_id=run_id, status=status))
    return run_id


def test_the_first_tick_does_not_republish_what_the_build_published(settings: Settings) -> None:
    from ml import tracking

    client = registry_with_versions(settings, 1)
    result, cursor = tick(settings, None)
    assert isinstance(result, SkipReason) and cursor is None  # no champion yet

    tracking.promote(client, "1")
    remember_served_champion(settings, "1")  # what a build's full publish records
    result, cursor = tick(settings, None)  # `make dev` started after the build
    assert isinstance(result, SkipReason)
    assert "already come from champion version 1" in result.skip_message
    assert cursor == "1"


def test_a_change_rescores_once_and_a_rollback_rescores_again(settings: Settings) -> None:
    from ml import tracking

    client = registry_with_versions(settings, 2)
    tracking.promote(client, "1")
    remember_served_champion(settings, "1")
    _, cursor = tick(settings, None)

    tracking.promote(client, "2")  # the CLI or MLflow UI: nothing republished yet
    result, cursor = tick(settings, cursor)
    assert isinstance(result, RunRequest)
    assert result.tags["freshrank/champion"] == "2"
    assert result.tags["freshrank/previous_champion"] == "1"
    result, cursor = tick(settings, cursor)
    assert isinstance(result, SkipReason) and cursor == "2"  # one run per change

    remember_served_champion(settings, "2")  # that run's publish
    tracking.rollback(client)
    result, cursor = tick(settings, cursor)
    # Version 1 was champion before: its run must not be taken for a repeat of the first one.
    assert isinstance(result, RunRequest) and result.run_key is None
    assert result.tags["freshrank/champion"] == "1" and cursor == "1"


def test_without_a_record_of_the_served_lists_the_first_tick_republishes(
    settings: Settings,
) -> None:
    from ml import tracking

    tracking.promote(registry_with_versions(settings, 1), "1")
    assert served_champion(settings) == (False, None)
    result, cursor = tick(settings, None)
    assert isinstance(result, RunRequest) and cursor == "1"

    # A record for another serving store says nothing about this one's lists.
    other = replace(settings, serving_url="sqlite:///elsewhere.db")
    remember_served_champion(other, "1")
    assert served_champion(settings) == (False, None)


def test_a_promotion_by_a_build_waits_for_the_builds_own_publish(settings: Settings) -> None:
    """The gate moves the alias while the build runs; publish_after_build_sensor publishes
    after it. The champion sensor asked for a second full publish of the same champion."""
    from ml import tracking
    from orchestration.jobs import FULL_BUILD_JOB, PUBLISH_JOB

    client = registry_with_versions(settings, 1)
    tracking.promote(client, "1")  # by the running build's gate
    with DagsterInstance.ephemeral() as instance:
        running = add_run(instance, FULL_BUILD_JOB, DagsterRunStatus.STARTED)
        result, cursor = tick(settings, None, instance)
        assert isinstance(result, SkipReason) and cursor is None
        assert "a full_build_job run has not ended" in result.skip_message

        instance.delete_run(running)
        add_run(instance, FULL_BUILD_JOB, DagsterRunStatus.SUCCESS)  # ended; no publish yet
        result, cursor = tick(settings, None, instance)
        assert isinstance(result, SkipReason) and cursor is None
        assert "own publish is still to come" in result.skip_message

        add_run(instance, PUBLISH_JOB, DagsterRunStatus.SUCCESS)
        remember_served_champion(settings, "1")  # what that publish records
        result, cursor = tick(settings, None, instance)
        assert isinstance(result, SkipReason) and cursor == "1"
        assert "already come from champion version 1" in result.skip_message
