"""A build on a handful of events: nothing to evaluate, yet popularity lists are published."""

from __future__ import annotations

import pandas as pd
import pytest

from ml.datasets import movielens_sample
from orchestration.ingest.commands import ingest_files
from orchestration.instance import run_job_in_process
from orchestration.jobs import FULL_BUILD_JOB, PUBLISH_JOB
from orchestration.serving.state import served_champion
from orchestration.serving.store import ServingStore
from orchestration.settings import Settings

pytestmark = pytest.mark.slow


def test_fourteen_events_build_and_publish_popularity_lists(settings: Settings, tmp_path) -> None:
    from ml import tracking
    from ml.pipeline.backtest import FALLBACK_PIPELINE

    items, events = movielens_sample()
    tiny = events.head(14)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    items[items["item_id"].isin(tiny["item_id"])].to_csv(inputs / "items.csv", index=False)
    tiny.to_csv(inputs / "events.csv", index=False)
    settings.ensure_dirs()
    ingest_files(settings, {"items": [inputs / "items.csv"], "events": [inputs / "events.csv"]})

    built = run_job_in_process(FULL_BUILD_JOB, settings)
    assert built.success
    challenger = built.asset_materializations_for_node("recommender_challenger")[0].metadata
    assert challenger["pipeline"].value == FALLBACK_PIPELINE
    assert "too little" in challenger["notes"].value or "no cut" in challenger["notes"].value
    # `freshrank evaluate` says why as well.
    evaluation = tracking.latest_evaluation(
        settings.mlflow_tracking_uri, settings.mlflow_artifact_location
    )
    assert f"Notes:\n\n{challenger['notes'].value}" in evaluation
    assert evaluation.startswith(f"Winner: {FALLBACK_PIPELINE}\n")

    assert run_job_in_process(PUBLISH_JOB, settings).success
    store = ServingStore(settings.serving_url)
    try:
        lists = store.all_lists()
        trending = store.trending()
    finally:
        store.dispose()
    assert set(lists["user_id"]) == set(tiny["user_id"])
    client = tracking.configure(settings.mlflow_tracking_uri, settings.mlflow_artifact_location)
    assert tracking.alias_version(client, tracking.CHAMPION) == "1"
    assert set(lists["model_version"]) == {f"{tracking.REGISTERED_MODEL}/1:{FALLBACK_PIPELINE}"}
    # The full publish records the champion it served: champion_change_sensor leaves it be.
    assert served_champion(settings) == (True, "1")
    consumed = set(zip(tiny["user_id"], tiny["item_id"], strict=True))
    assert not consumed & set(zip(lists["user_id"], lists["item_id"], strict=True))
    # Someone with no history gets the most popular items.
    popularity = tiny.groupby("item_id")["value"].sum().sort_values(ascending=False)
    assert trending.sort_values("rank")["item_id"].iloc[0] in set(
        popularity[popularity == popularity.max()].index
    )
    assert isinstance(lists, pd.DataFrame)


def test_a_first_refresh_on_a_deployment_never_built_builds_and_publishes(
    settings: Settings, tmp_path
) -> None:
    """`freshrank refresh` before any `freshrank build` (files delivered, nothing built) used to
    fail in dbt ('staging.stg_raw__events does not exist'); it runs the build, then publishes."""
    from click.testing import CliRunner

    from orchestration.app.cli import main

    items, events = movielens_sample()
    tiny = events.head(14)
    settings.ensure_dirs()
    catalog = items[items["item_id"].isin(tiny["item_id"])]
    catalog.to_csv(settings.landing_folder("items") / "items.csv", index=False)
    tiny.to_csv(settings.landing_folder("events") / "events.csv", index=False)

    result = CliRunner().invoke(main, ["refresh"])

    assert result.exit_code == 0, result.output
    assert "nothing is built yet: this first refresh is the full build" in result.output
    store = ServingStore(settings.serving_url)
    try:
        assert set(store.all_lists()["user_id"]) == set(tiny["user_id"])
    finally:
        store.dispose()
