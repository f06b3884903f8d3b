"""The compute setting: local by default without importing Ray; bad values say what is allowed."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from orchestration.compute import ComputeResource
from orchestration.settings import Settings
from tests.ml.pipeline.test_pipeline import pipeline, shoppers

DEFAULT_PATH = """
import sys
from orchestration.compute import ComputeResource
from orchestration.definitions import defs
from orchestration.settings import get_settings
from tests.ml.pipeline.test_pipeline import pipeline, shoppers

settings = get_settings()
with ComputeResource().session(settings):
    ComputeResource().rank(settings, pipeline(), shoppers(), lambda fitted, b: fitted.recommend(b))
assert settings.compute == "local" and settings.dbt_target == "duckdb", settings
loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("ray", "pyspark"))
assert not loaded, loaded
"""


def test_the_default_build_path_imports_neither_ray_nor_spark(settings: Settings) -> None:
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in ("FRESHRANK_COMPUTE", "FRESHRANK_DBT_TARGET")
    }
    completed = subprocess.run(
        [sys.executable, "-c", DEFAULT_PATH],
        capture_output=True,
        text=True,
        check=False,
        env=environment,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]


def test_local_compute_ranks_in_process(settings: Settings) -> None:
    fitted, behaviour = pipeline(), shoppers()
    shards: list = []
    ranked = ComputeResource().rank(
        settings, fitted, behaviour, type(fitted).recommend, on_shard=shards.append
    )
    assert ranked.equals(fitted.recommend(behaviour))
    assert len(shards) == 1 and shards[0] is ranked  # in this process the result is one shard


@pytest.mark.slow
def test_many_users_are_ranked_in_worker_processes(settings: Settings, monkeypatch) -> None:
    from dataclasses import replace

    from ml.pipeline import parallel

    calls: list = []
    real = parallel.rank_in_processes
    monkeypatch.setattr(
        parallel, "rank_in_processes", lambda *args, **kw: calls.append(1) or real(*args, **kw)
    )
    fitted, behaviour = pipeline(), shoppers()  # two users
    shards: list = []
    parallel = replace(settings, rank_processes=2, rank_processes_min_users=2)
    ranked = ComputeResource().rank(
        parallel, fitted, behaviour, type(fitted).recommend, on_shard=shards.append
    )
    pd.testing.assert_frame_equal(ranked, fitted.recommend(behaviour))
    assert len(shards) == 1  # two users fit one shard of the workers
    assert calls == [1]
    # Below the threshold the run's own process ranks them.
    alone = replace(parallel, rank_processes_min_users=3)
    assert ComputeResource().rank(alone, fitted, behaviour, type(fitted).recommend).equals(ranked)
    assert calls == [1]  # not called again


class _RecordingPool:
    """Stands in for a WarmPool: ranks in this process and says what it was given."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.stamps: list[str | None] = []

    def rank(self, fitted, behaviour, ranking, stamp=None):
        self.calls.append(len(behaviour.users))
        self.stamps.append(stamp)
        return ranking(fitted, behaviour)


def test_a_warm_pool_ranks_what_is_kept_whole_and_shard_handlers_stay_here(
    settings: Settings, monkeypatch
) -> None:
    import orchestration.compute as compute

    pool = _RecordingPool()
    monkeypatch.setattr(compute, "active_warm_pool", lambda: pool)
    fitted, behaviour = pipeline(), shoppers()
    ranked = ComputeResource().rank(
        settings, fitted, behaviour, type(fitted).recommend, stamp="read from a saved state"
    )
    assert ranked.equals(fitted.recommend(behaviour)) and pool.calls == [2]
    assert pool.stamps == ["read from a saved state"]  # for workers that read it too
    # A full scoring writes shards as they come: not the warm pool's work.
    shards: list = []
    ComputeResource().rank(
        settings, fitted, behaviour, type(fitted).recommend, on_shard=shards.append
    )
    assert pool.calls == [2] and len(shards) == 1


@pytest.mark.parametrize(
    ("variable", "value"), [("FRESHRANK_COMPUTE", "spark"), ("FRESHRANK_DBT_TARGET", "ray")]
)
def test_an_unknown_engine_names_the_variable_and_the_choices(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=f"{variable}='{value}': must be one of"):
        Settings.from_env()


def test_a_resource_override_is_checked_too(settings: Settings) -> None:
    with pytest.raises(ValueError, match="compute engine 'gpu'"):
        ComputeResource(engine="gpu").engine_for(settings)
