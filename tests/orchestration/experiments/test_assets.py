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
