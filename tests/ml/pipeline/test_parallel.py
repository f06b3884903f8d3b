"""Ranking over user shards in worker processes gives what ranking in this process gives."""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import pytest

from ml.constants import USER_ID
from ml.pipeline.parallel import rank_in_processes
from ml.pipeline.pipeline import PipelineConfig, RankingPipeline
from ml.pipeline.ranker import Ranker, RankerConfig
from ml.pipeline.snapshot import Behaviour
from tests.ml.pipeline.tiny import session_log, session_snapshot


@pytest.mark.slow
def test_worker_processes_rank_every_shard_as_this_process_does(tmp_path) -> None:
    snapshot = session_snapshot(users=40)
    pipeline = RankingPipeline(PipelineConfig(k=5)).fit_sources(snapshot)
    # A ranker trained on the pipeline's own candidates, so the workers load and compile one.
    frame = pipeline.candidate_features(Behaviour(snapshot.interactions))
    frame["label"] = (np.random.default_rng(0).uniform(size=len(frame)) < 0.3).astype(int)
    config = RankerConfig(n_estimators=10, min_child_samples=2, bagged_models=1)
    pipeline.ranker = Ranker(config).fit(frame, pipeline.training_columns(frame))
    behaviour = Behaviour(session_log(users=9, seed=3)[0])
    ranking = partial(RankingPipeline.recommend_with_candidates, candidates=8)
    arrived = []
    in_workers = rank_in_processes(
        pipeline,
        behaviour,
        processes=2,
        ranking=ranking,
        on_shard=arrived.append,
        shard_users=2,
        compiled_rankers=tmp_path / "rankers",
    )
    here = ranking(pipeline, behaviour)
    for left, right in zip(in_workers, here, strict=True):
        pd.testing.assert_frame_equal(left, right)
    # Five shards of at most two users, each handed on once, together every user.
    assert len(arrived) == 5
    assert sorted(u for lists, _ in arrived for u in lists[USER_ID].unique()) == sorted(
        here[0][USER_ID].unique()
    )
    assert any((tmp_path / "rankers").glob("*.o"))  # the workers compiled the ranker
