"""The landing sensor asks for one refresh per set of waiting files, and again until one runs."""

from __future__ import annotations

from dagster import DagsterInstance, RunRequest, SkipReason, build_sensor_context

from orchestration.ingest.sensors import landing_sensor
from orchestration.settings import Settings


def evaluate(instance: DagsterInstance, settings: Settings) -> RunRequest | SkipReason:
    context = build_sensor_context(instance=instance, resources={"settings": settings})
    result = landing_sensor(context)
    assert isinstance(result, RunRequest | SkipReason)
    return result


def test_waiting_files_are_asked_for_under_one_key_until_they_are_loaded(
    settings: Settings,
) -> None:
    events = settings.landing_folder("events")
    with DagsterInstance.ephemeral() as instance:
        assert isinstance(evaluate(instance, settings), SkipReason)  # nothing waiting

        (events / "batch-1.csv").write_text("user_id,item_id,event_type,timestamp\n")
        (events / ".batch-2.csv.partial").write_text("")  # still being written: not waiting
        first = evaluate(instance, settings)
        assert isinstance(first, RunRequest)
        assert first.tags["freshrank/files"] == "1"
        # No cursor: the same files are asked for again (Dagster skips a key it has run), so a
        # request lost with a stopped daemon is made again.
        again = evaluate(instance, settings)
        assert isinstance(again, RunRequest) and again.run_key == first.run_key

        (events / "batch-3.csv").write_text("user_id,item_id,event_type,timestamp\n")
        more = evaluate(instance, settings)
        assert isinstance(more, RunRequest) and more.run_key != first.run_key

        for path in events.iterdir():
            path.unlink()  # loaded and archived by the run
        assert isinstance(evaluate(instance, settings), SkipReason)

        # The same name delivered again is a new batch.
        (events / "batch-1.csv").write_text("user_id,item_id,event_type,timestamp\nu,i,view,1\n")
        redelivered = evaluate(instance, settings)
        assert isinstance(redelivered, RunRequest) and redelivered.run_key != first.run_key


def test_before_the_first_build_the_files_start_the_full_build(settings: Settings) -> None:
    """A refresh updates marts only a build makes: the first delivery of a new deployment (the
    daemon running, nothing built) asks for the full build; once the interactions mart has
    been materialized, a refresh."""
    from dagster import AssetMaterialization

    from orchestration.ingest.sensors import INTERACTIONS_MART
    from orchestration.jobs import FULL_BUILD_JOB, REFRESH_JOB

    (settings.landing_folder("events") / "first.csv").write_text(
        "user_id,item_id,event_type,timestamp\n"
    )
    with DagsterInstance.ephemeral() as instance:
        first = evaluate(instance, settings)
        assert isinstance(first, RunRequest) and first.job_name == FULL_BUILD_JOB

        instance.report_runless_asset_event(AssetMaterialization(INTERACTIONS_MART))
        later = evaluate(instance, settings)
        assert isinstance(later, RunRequest) and later.job_name == REFRESH_JOB
