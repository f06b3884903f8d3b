from __future__ import annotations

from orchestration.definitions import defs


def _assets_of(job_name: str) -> set[str]:
    job = defs.resolve_job_def(job_name)
    return {key.to_user_string() for key in job.asset_layer.selected_asset_keys}


def test_variant_lists_follow_every_publish_and_the_analysis_runs_on_its_own() -> None:
    for job_name in ("publish_job", "refresh_job"):
        assert "experiment_lists" in _assets_of(job_name)
        assert "experiment_results" not in _assets_of(job_name)
    assert _assets_of("experiment_results_job") == {"experiment_results"}
    assert not {"experiment_lists", "experiment_results"} & _assets_of("full_build_job")


def test_the_daily_analysis_runs_only_while_an_experiment_is_active(settings) -> None:
    from dagster import RunRequest, SkipReason, build_schedule_context

    from ml.experiments.assignment import ExperimentDesign, Variant
    from orchestration.experiments.schedules import experiment_results_schedule
    from orchestration.experiments.store import ExperimentStore
    from orchestration.serving.store import ServingStore

    context = build_schedule_context(resources={"settings": settings})
    assert isinstance(experiment_results_schedule(context), SkipReason)
    store = ServingStore(settings.serving_url)
    design = ExperimentDesign(
        "ab1", (Variant("A", 0.5, "champion", "1"), Variant("B", 0.5, "challenger", "2"))
    )
    ExperimentStore(store.engine).start(design)
    store.dispose()
    request = experiment_results_schedule(context)
    assert isinstance(request, RunRequest)
    assert request.run_config == {"ops": {"experiment_results": {"config": {"name": "ab1"}}}}
