"""An experiment end to end on a tiny build: start -> serve -> outcomes -> analysis -> verdict.

Two registered versions (the build's champion and a copy registered as another version), the
CLI starts the experiment and publishes both variants' lists, the HTTP API serves enrolled
users and logs exposures, their clicks land and refresh like any delivery, and the analysis
job credits them, tests the variants and logs the verdict to MLflow and the Dagster UI.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from click.testing import CliRunner
from dagster import AssetKey
from fastapi.testclient import TestClient

from ml.datasets import movielens_sample
from ml.experiments.tracking import AB_TESTS, PLOT_PATH
from orchestration.app.cli import main
from orchestration.experiments.lists import state_name
from orchestration.experiments.store import RUNNING, STOPPED, ExperimentStore
from orchestration.ingest.commands import ingest_files
from orchestration.instance import open_instance, run_job_in_process
from orchestration.jobs import FULL_BUILD_JOB, PUBLISH_JOB, REFRESH_JOB
from orchestration.serving.api import create_app
from orchestration.serving.state import state_path
from orchestration.serving.store import ServingStore
from orchestration.settings import Settings

pytestmark = pytest.mark.slow

VISITORS = [f"visitor-{number}" for number in range(40)]


def test_an_experiment_runs_from_start_to_verdict(
    settings: Settings, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ml import tracking

    monkeypatch.setenv("FRESHRANK_EXPERIMENT_MIN_USERS", "5")
    items, events = movielens_sample()
    tiny = events.head(300)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    items[items["item_id"].isin(tiny["item_id"])].to_csv(inputs / "items.csv", index=False)
    tiny.to_csv(inputs / "events.csv", index=False)
    ingest_files(settings, {"items": [inputs / "items.csv"], "events": [inputs / "events.csv"]})
    assert run_job_in_process(FULL_BUILD_JOB, settings).success
    assert run_job_in_process(PUBLISH_JOB, settings).success
    champion = tracking.load_version(settings.mlflow_tracking_uri, "1")
    copy = tracking.register_pipeline(
        champion,
        settings.mlflow_tracking_uri,
        settings.mlflow_artifact_location,
        run_name="copy-of-1",
        experiment=AB_TESTS,
    )
    assert copy == "2"

    runner = CliRunner()
    started = runner.invoke(
        main,
        [
            "experiment",
            "start",
            "ab-e2e",
            "--variant",
            "control:champion=0.5",
            "--variant",
            f"challenger:{copy}=0.5",
        ],
    )
    assert started.exit_code == 0, started.output
    assert "control = version 1 (50%), challenger = version 2 (50%)" in started.output

    store = ServingStore(settings.serving_url)
    experiments = ExperimentStore(store.engine)
    record = experiments.get("ab-e2e")
    assert record.status == RUNNING
    known = sorted(tiny["user_id"].unique())
    lists = experiments.lists("ab-e2e")
    assert set(lists["user_id"]) == set(known)  # every user with behaviour has a variant list
    by_variant = lists.groupby("variant")["model_version"].first().to_dict()
    assert by_variant.get("challenger", "").startswith("freshrank-ranking/2:")

    # Serve: every enrolled user gets their variant, named in the response, logged as seen.
    served = {}
    with TestClient(create_app(settings)) as client:
        for user in [*known, *VISITORS]:
            body = client.get(f"/recommendations/{user}").json()
            assert body["experiment"] == "ab-e2e"
            assert body["variant"] == record.design.assign(user)
            served[user] = (body["variant"], [item["item_id"] for item in body["items"]])
    exposures = experiments.exposures("ab-e2e")
    assert len(exposures) == len(served)

    # Outcomes: the challenger's users click the first item they were shown, five minutes later.
    soon = datetime.now(UTC) + timedelta(minutes=5)
    clicks = pd.DataFrame(
        [
            {
                "user_id": user,
                "item_id": shown[0],
                "event_type": "click",
                "timestamp": soon.isoformat(),
            }
            for user, (variant, shown) in served.items()
            if variant == "challenger"
        ]
    )
    clicks.to_csv(inputs / "clicks.csv", index=False)
    ingest_files(settings, {"events": [inputs / "clicks.csv"]})
    refreshed = run_job_in_process(REFRESH_JOB, settings)
    assert refreshed.success
    # The refresh ranked the clickers again, the challenger's from its saved serving state.
    challenger_state = state_path(settings, state_name("ab-e2e", "challenger"))
    assert challenger_state.exists()
    variants = refreshed.asset_materializations_for_node("experiment_lists")[0].metadata["variants"]
    assert "freshrank-ranking/2:popularity_all (serving state)" in variants.value
    assert set(clicks["user_id"]) <= set(experiments.lists("ab-e2e")["user_id"])

    analysed = runner.invoke(main, ["experiment", "analyse"])
    assert analysed.exit_code == 0, analysed.output
    assert "promote challenger" in analysed.output

    # MLflow: one run with the verdict, per-variant metrics and the plot.
    client = tracking.configure(settings.mlflow_tracking_uri, settings.mlflow_artifact_location)
    experiment_id = client.get_experiment_by_name(AB_TESTS).experiment_id
    (run,) = client.search_runs([experiment_id], filter_string="tags.decision = 'promote'")
    assert run.data.tags["verdict"].endswith("promote challenger")
    assert run.data.metrics["challenger.click_through"] == 1.0
    assert run.data.metrics["control.click_through"] == 0.0
    assert PLOT_PATH in {
        artifact.path for artifact in client.list_artifacts(run.info.run_id, "plots")
    }
    # Dagster: the materialization carries the verdict and the plot.
    with open_instance(settings) as instance:
        event = instance.get_latest_materialization_event(AssetKey("experiment_results"))
    metadata = event.asset_materialization.metadata
    assert metadata["verdict"].value == run.data.tags["verdict"]
    assert metadata["plot"].value.startswith("![per-variant figures](data:image/png;base64,")

    status = runner.invoke(main, ["experiment", "status", "ab-e2e"])
    assert status.exit_code == 0 and "promote challenger" in status.output

    stopped = runner.invoke(main, ["experiment", "stop", "ab-e2e", "--promote", "challenger"])
    assert stopped.exit_code == 0, stopped.output
    assert tracking.alias_version(client, tracking.CHAMPION) == "2"
    assert experiments.get("ab-e2e").status == STOPPED
    assert not challenger_state.exists()
    assert "promote challenger" in experiments.get("ab-e2e").verdict
    store.dispose()
