"""Ranking over user shards on Ray: the pipeline travels once, each task ranks one shard, and
the caller may handle each shard's result as it arrives (e.g. write it where it is served)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from ml.distributed.session import OnRay
from ml.pipeline.parallel import Ranked, Ranking, ShardHandler, concatenated, handled
from ml.pipeline.pipeline import RankingPipeline
from ml.pipeline.snapshot import Behaviour


def recommend(pipeline: RankingPipeline, behaviour: Behaviour) -> pd.DataFrame:
    """The lists of ``behaviour``'s users (the default ranking of ``rank_on_ray``)."""
    return pipeline.recommend(behaviour)


def _rank_shard(ranking: Ranking, pipeline: RankingPipeline, shard: Behaviour) -> tuple:
    return ranking(pipeline, shard), os.getpid()


def rank_on_ray(
    pipeline: RankingPipeline,
    behaviour: Behaviour,
    shards: int,
    ranking: Ranking = recommend,
    on_shard: ShardHandler | None = None,
) -> OnRay[Ranked]:
    """``ranking(pipeline, behaviour)`` with the users split into ``shards`` contiguous shards.

    ``ranking`` returns a frame (or a tuple of frames) of rows per user, ordered by user, and a
    user's rows depend only on the pipeline and that user's events (true of ``recommend``): the
    shards' results, concatenated in order, then equal the in-process ones row for row.
    ``on_shard`` gets each shard's result in this process as soon as it arrives, in the order
    they finish, while the other shards are still ranked, and says what of it to keep. Needs a
    Ray session (``ray_session``).
    """
    import ray

    if shards < 1:
        raise ValueError(f"ranking on Ray needs at least one shard, not {shards}")
    user_shards = [users for users in np.array_split(behaviour.users, shards) if len(users)]
    if len(user_shards) <= 1:
        return OnRay(handled(on_shard, ranking(pipeline, behaviour)), frozenset({os.getpid()}))
    shared_pipeline = ray.put(pipeline)
    rank_shard = ray.remote(num_cpus=1)(_rank_shard)
    position = {
        rank_shard.remote(ranking, shared_pipeline, behaviour.for_users(users)): number
        for number, users in enumerate(user_shards)
    }
    finished: dict[int, tuple] = {}
    waiting = list(position)
    while waiting:
        (done,), waiting = ray.wait(waiting, num_returns=1)
        ranked, pid = ray.get(done)
        finished[position[done]] = (handled(on_shard, ranked), pid)
    in_order = [finished[number] for number in range(len(user_shards))]
    return OnRay(
        concatenated([part for part, _ in in_order]), frozenset(pid for _, pid in in_order)
    )
