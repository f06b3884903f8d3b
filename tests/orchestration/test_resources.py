"""The code location's resources: a run works on the settings it is handed, and a refresh run
starts its ranking helpers with it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from types import SimpleNamespace

import pytest

from ml.datasets import movielens_sample
from orchestration.compute import ComputeResource
from orchestration.ingest.commands import ingest_files
from orchestration.instance import run_job_in_process
from orchestration.jobs import FULL_BUILD_JOB, PUBLISH_JOB
from orchestration.resources import ranking_helpers_resource
from orchestration.serving.store import ServingStore
from orchestration.settings import Settings


def test_at_home_moves_every_store_even_those_the_environment_names(
    settings: Settings, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRESHRANK_SERVING_URL", "postgresql+psycopg2://somewhere/prod")
    monkeypatch.setenv("FRESHRANK_WAREHOUSE_PATH", str(tmp_path / "prod.duckdb"))
    monkeypatch.setenv("FRESHRANK_TOP_K", "7")
    here = Settings.from_env()
    moved = here.at_home(tmp_path / "second")
    home = (tmp_path / "second").resolve()
    assert moved.home == home
    for path in (moved.landing_dir, moved.warehouse_path, moved.dagster_home, moved.spark_dir):
        assert path.is_relative_to(home)
    assert moved.serving_url == f"sqlite:///{home / 'serving.db'}"
    assert moved.mlflow_tracking_uri.startswith(f"sqlite:///{home}")
    assert moved.mlflow_artifact_location.startswith(home.as_uri())
    assert moved.top_k == 7  # the tunables stay
    # What a fresh process with only FRESHRANK_HOME set would read.
    for variable in ("FRESHRANK_SERVING_URL", "FRESHRANK_WAREHOUSE_PATH"):
        monkeypatch.delenv(variable)
    monkeypatch.setenv("FRESHRANK_HOME", str(home))
    assert Settings.from_env() == moved


@pytest.mark.slow
def test_runs_work_on_the_settings_they_are_handed_and_leave_the_environment_alone(
    settings: Settings, tmp_path
) -> None:
    """A second deployment in this process (the replay's) is a second Settings: its build and
    publish use its own warehouse, registry, instance and serving store, although the
    environment names the first deployment, and nothing in the environment names the second
    afterwards (libraries may add variables of their own: MLflow's, Hugging Face's)."""
    second = settings.at_home(tmp_path / "second")
    second.ensure_dirs()
    items, events = movielens_sample()
    tiny = events.head(14)
    items[items["item_id"].isin(tiny["item_id"])].to_csv(tmp_path / "items.csv", index=False)
    tiny.to_csv(tmp_path / "events.csv", index=False)

    ingest_files(second, {"items": [tmp_path / "items.csv"], "events": [tmp_path / "events.csv"]})
    assert run_job_in_process(FULL_BUILD_JOB, second).success
    assert run_job_in_process(PUBLISH_JOB, second).success

    assert not [name for name, value in os.environ.items() if str(second.home) in value]
    store = ServingStore(second.serving_url)
    try:
        assert set(store.all_lists()["user_id"]) == set(tiny["user_id"])
    finally:
        store.dispose()
    assert list((second.dagster_home / "storage").iterdir())  # its runs are on its instance
    first = [
        settings.warehouse_path,
        settings.home / "serving.db",
        settings.home / "mlflow" / "mlflow.db",
    ]
    assert not any(path.exists() for path in first)
    assert not (settings.dagster_home / "storage").exists()


def _run_context(job_name: str, settings: Settings) -> SimpleNamespace:
    """An InitResourceContext stand-in: the run's job and the resources it requires."""
    return SimpleNamespace(
        run=SimpleNamespace(job_name=job_name),
        resources=SimpleNamespace(settings=settings, compute=ComputeResource()),
    )


@contextmanager
def _helpers(job_name: str, settings: Settings) -> Iterator[object]:
    """The ranking helpers resource of a run of ``job_name``, started and stopped."""
    start = contextmanager(ranking_helpers_resource.resource_fn)
    with start(_run_context(job_name, settings)) as helpers:
        yield helpers


def test_a_refresh_run_gets_ranking_helpers_for_its_duration(settings: Settings) -> None:
    """A run the daemon launches is a new process: the resource opens the helpers a cold
    `freshrank refresh` opens, for a refresh run only, and closes them after it."""
    from ml.pipeline.parallel import active_warm_pool, warm_pool
    from orchestration.serving.state import state_path

    settings = replace(settings, rank_processes=2)
    state_path(settings).parent.mkdir(parents=True, exist_ok=True)
    state_path(settings).write_bytes(b"a saved state")  # read by the helper, not here
    with _helpers("publish_job", settings) as helpers:
        assert helpers is None and active_warm_pool() is None  # a full scoring has its own

    with _helpers("refresh_job", settings) as helpers:
        assert helpers is active_warm_pool()
        assert helpers is not None and helpers.rank_here and helpers.processes == 1
    assert active_warm_pool() is None

    with warm_pool(2) as watching:  # a `--watch` refresher's pool stays the one used
        with _helpers("refresh_job", settings) as helpers:
            assert helpers is None and active_warm_pool() is watching
        assert active_warm_pool() is watching

    with _helpers("refresh_job", replace(settings, rank_processes=1)) as helpers:
        assert helpers is None  # one core: the refresh ranks alone
