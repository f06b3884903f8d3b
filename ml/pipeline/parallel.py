"""Ranking over user shards in worker processes of this machine: every core, no cluster.

Ranking many users (scoring everyone when lists are published) is CPU work in one Python
process. With N cores, N worker processes rank shards of users, each with its own copy of the
pipeline, while this process hands out shards and takes their results. Workers are spawned (a
fresh interpreter, not a fork of a process that holds threads and OpenMP pools), load the
pipeline once, and run one thread each: the processes are the parallelism. At most two shards
per worker are in flight, so memory follows the shards, not the users. A user's rows depend only
on the pipeline and that user's events, so the shards' results, concatenated in order, equal
the in-process ones row for row.
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import pandas as pd

from ml.pipeline.pipeline import RankingPipeline
from ml.pipeline.snapshot import Behaviour

logger = logging.getLogger("freshrank.parallel")

Ranked = TypeVar("Ranked", pd.DataFrame, tuple[pd.DataFrame, ...])
Ranking = Callable[[RankingPipeline, Behaviour], Ranked]
ShardHandler = Callable[[Ranked], None]

SHARD_USERS = 5_000
IN_FLIGHT_PER_WORKER = 2

_pipeline: RankingPipeline | None = None  # a worker's own copy, loaded once


def concatenated(parts: list[Ranked]) -> Ranked:
    """Shards' results in shard order: one frame, or one frame per position of a tuple."""
    if isinstance(parts[0], pd.DataFrame):
        return pd.concat(parts, ignore_index=True)
    return tuple(
        pd.concat([part[position] for part in parts], ignore_index=True)
        for position in range(len(parts[0]))
    )


def _start_worker(saved_pipeline: bytes, compiled_rankers: str) -> None:
    """Load the pipeline in a new worker, predicting on one thread (compiled when it can)."""
    global _pipeline
    from threadpoolctl import threadpool_limits

    pipeline = pickle.loads(saved_pipeline)
    if pipeline.ranker is not None:
        pipeline.ranker.config = replace(pipeline.ranker.config, predict_threads=1)
        if compiled_rankers:
            pipeline.compile_ranker(Path(compiled_rankers))
    threadpool_limits(limits=1)  # BLAS and OpenMP (FAISS): one thread per worker
    _pipeline = pipeline


def _rank_shard(ranking: Ranking, shard: Behaviour) -> Ranked:
    return ranking(_pipeline, shard)


def rank_in_processes(
    pipeline: RankingPipeline,
    behaviour: Behaviour,
    processes: int,
    ranking: Ranking,
    on_shard: ShardHandler | None = None,
    shard_users: int = SHARD_USERS,
    compiled_rankers: Path | None = None,
) -> Ranked:
    """``ranking(pipeline, behaviour)`` over shards of ``shard_users`` users in ``processes``
    worker processes. ``on_shard`` gets each shard's result here as it arrives, in the order
    they finish. ``compiled_rankers``: where compiled rankers are cached (Ranker.compile)."""
    if processes < 1:
        raise ValueError(f"ranking in processes needs at least one process, not {processes}")
    shards = behaviour.blocks(shard_users)
    total = -(-len(behaviour.users) // shard_users)
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    saved = pickle.dumps(pipeline)
    results: dict[int, Ranked] = {}
    with ProcessPoolExecutor(
        processes,
        mp_context=context,
        initializer=_start_worker,
        initargs=(saved, str(compiled_rankers or "")),
    ) as pool:
        pending: dict[Future, int] = {}
        handed_out = 0
        for number, shard in enumerate(shards):
            pending[pool.submit(_rank_shard, ranking, shard)] = number
            handed_out += 1
            while len(pending) >= IN_FLIGHT_PER_WORKER * processes:
                _collect(pending, results, on_shard, total, started)
        while pending:
            _collect(pending, results, on_shard, total, started)
    return concatenated([results[number] for number in range(handed_out)])


def _collect(
    pending: dict[Future, int],
    results: dict[int, Ranked],
    on_shard: ShardHandler | None,
    total: int,
    started: float,
) -> None:
    """Wait for at least one shard, keep its result and hand it on."""
    done, _ = wait(pending, return_when=FIRST_COMPLETED)
    for future in done:
        number = pending.pop(future)
        results[number] = future.result()
        if on_shard is not None:
            on_shard(results[number])
        logger.info(
            "ranked shard %d of %d in worker processes (%d done, %.0f s so far)",
            number + 1,
            total,
            len(results),
            time.perf_counter() - started,
        )
