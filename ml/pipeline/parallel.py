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
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TypeVar

import pandas as pd
from threadpoolctl import threadpool_limits

from ml.pipeline.pipeline import RankingPipeline
from ml.pipeline.snapshot import Behaviour

logger = logging.getLogger("freshrank.parallel")

Ranked = TypeVar("Ranked", pd.DataFrame, tuple[pd.DataFrame, ...])
Ranking = Callable[[RankingPipeline, Behaviour], Ranked]
# Gets a shard's result as it arrives; returns what of it the whole result keeps (None: all of
# it). A handler that wrote the shard somewhere can drop what it wrote, so memory follows the
# shards in flight rather than every user's rows.
ShardHandler = Callable[[Ranked], Ranked | None]


def handled(on_shard: ShardHandler | None, ranked: Ranked) -> Ranked:
    """What of ``ranked`` to keep once ``on_shard`` has had it."""
    if on_shard is None:
        return ranked
    kept = on_shard(ranked)
    return ranked if kept is None else kept


SHARD_USERS = 5_000
# What ranking a user costs beside their events, in events: 2.8 ms a user against 8.7 us an
# event of history (two halves of 557 MovieLens users, 22,000 and 44,000 events, one thread).
USER_COST_IN_EVENTS = 300.0
IN_FLIGHT_PER_WORKER = 2

_shared: object = None  # a worker's own copy of what every task reads, loaded once


def concatenated(parts: list[Ranked]) -> Ranked:
    """Shards' results in shard order: one frame, or one frame per position of a tuple."""
    if isinstance(parts[0], pd.DataFrame):
        return pd.concat(parts, ignore_index=True)
    return tuple(
        pd.concat([part[position] for part in parts], ignore_index=True)
        for position in range(len(parts[0]))
    )


# How often a worker looks whether the process that started it is still there.
PARENT_CHECK_SECONDS = 1.0


def _exit_with_parent() -> None:
    """End this worker soon after the process that started it is gone (killed, say). Nothing
    else tells it: it waits on a task queue whose other end it holds itself, and an orphan
    would keep its copy of the pipeline (hundreds of MB at scale) until the machine restarts."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return

    def watch() -> None:
        while os.getppid() == parent.pid:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _start_worker(saved: bytes, setup: Callable[[object], object] | None) -> None:
    """Load the shared object in a new worker (``setup`` prepares it), one thread per worker."""
    global _shared
    _exit_with_parent()
    shared = pickle.loads(saved)
    _shared = shared if setup is None else setup(shared)
    threadpool_limits(limits=1)  # BLAS and OpenMP (FAISS): the processes are the parallelism


def _apply(function: Callable, arguments: tuple) -> object:
    return function(_shared, *arguments)


def in_processes(
    function: Callable,
    shared: object,
    tasks: Iterable[tuple],
    processes: int,
    on_result: Callable[[int, object], object] | None = None,
    setup: Callable[[object], object] | None = None,
    what: str = "task",
) -> list:
    """``[function(shared, *task) for task in tasks]``, computed in ``processes`` spawned worker
    processes that each load ``shared`` once (then ``setup(shared)``); results in task order.
    ``on_result(number, result)`` is called here as each result arrives, in the order they
    finish, and the list keeps what it returns in place of the result. Tasks are handed out as
    workers free up, at most two per worker ahead. ``function`` and ``setup`` must be
    importable (module-level functions or partials of them)."""
    if processes < 1:
        raise ValueError(f"worker processes: at least one, not {processes}")
    started = time.perf_counter()
    results: dict[int, object] = {}
    with ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(pickle.dumps(shared), setup),
    ) as pool:
        pending: dict[Future, int] = {}
        for number, task in enumerate(tasks):
            pending[pool.submit(_apply, function, task)] = number
            while len(pending) >= IN_FLIGHT_PER_WORKER * processes:
                _collect(pending, results, on_result, started, what)
        while pending:
            _collect(pending, results, on_result, started, what)
    return [results[number] for number in range(len(results))]


def _collect(
    pending: dict[Future, int],
    results: dict[int, object],
    on_result: Callable[[int, object], object] | None,
    started: float,
    what: str,
) -> None:
    """Wait for at least one task, keep its result and hand it on."""
    done, _ = wait(pending, return_when=FIRST_COMPLETED)
    for future in done:
        number = pending.pop(future)
        results[number] = future.result()
        if on_result is not None:
            results[number] = on_result(number, results[number])
        logger.info(
            "%s %d done in worker processes (%d so far, %.0f s)",
            what,
            number + 1,
            len(results),
            time.perf_counter() - started,
        )


def _serving_copy(pipeline: RankingPipeline, compiled_rankers: str) -> RankingPipeline:
    """A worker's pipeline: its ranker predicting on one thread, compiled when it can."""
    if pipeline.ranker is not None:
        pipeline.ranker.config = replace(pipeline.ranker.config, predict_threads=1)
        if compiled_rankers:
            pipeline.compile_ranker(Path(compiled_rankers))
    return pipeline


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
    they finish, and says what of it to keep (see ShardHandler). ``compiled_rankers``: where
    compiled rankers are cached (Ranker.compile)."""
    parts = in_processes(
        ranking,
        pipeline,
        ((shard,) for shard in behaviour.blocks(shard_users)),
        processes,
        on_result=lambda _, ranked: handled(on_shard, ranked),
        setup=partial(_serving_copy, compiled_rankers=str(compiled_rankers or "")),
        what="ranking shard",
    )
    return concatenated(parts)


def _ready(shared: object) -> bool:
    return shared is not None


def _start_warm_worker(saved: bytes, setup: Callable[[object], object] | None) -> None:
    """_start_worker for a long-lived worker: Ctrl-C at the terminal reaches the whole process
    group, and stopping is the parent's to decide (it closes the pool)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _start_worker(saved, setup)


# A preloaded worker's stamp of what it loaded (see WarmPool.preload).
_stamp: str | None = None


def _start_preloading_worker(
    loader: Callable[[], tuple[str, RankingPipeline]], setup: Callable[[object], object]
) -> None:
    """Load the pipeline ``loader`` reads (and its stamp) in a new worker, one thread."""
    global _shared, _stamp
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    _stamp, pipeline = loader()
    _shared = setup(pipeline)
    threadpool_limits(limits=1)


def _loaded_stamp(shared: object) -> str | None:
    return _stamp


class WarmPool:
    """Worker processes that keep one pipeline loaded from one call to the next.

    rank_in_processes starts its workers for each call: a fresh interpreter, its imports and the
    pipeline, seconds that a full scoring's minutes repay but a refresh's few hundred users do
    not. A warm refresher (`freshrank refresh --watch`) keeps this pool instead: the workers
    load the serving pipeline once, and each batch's users are split into one shard per worker.
    A different pipeline (a new serving state) restarts the workers with it. Results equal
    ranking in this process, row for row (see rank_in_processes).

    A one-shot command (a cold `freshrank refresh`) cannot keep workers, but it can start them
    early: ``preload`` has them read the pipeline from disk while the command does its other
    work, ``rank_here`` has this process rank a share beside them, and a call whose pipeline is
    not the one they read (or that comes before they are ready) ranks here rather than wait.
    """

    def __init__(
        self, processes: int, compiled_rankers: Path | None = None, rank_here: bool = False
    ) -> None:
        if processes < 1:
            raise ValueError(f"worker processes: at least one, not {processes}")
        self.processes = processes
        self.compiled_rankers = compiled_rankers
        self.rank_here = rank_here
        self._pool: ProcessPoolExecutor | None = None
        self._pipeline: RankingPipeline | None = None  # held: `is` tells a new one apart
        self._preloading: list[Future] | None = None  # each worker's stamp, once it has loaded
        self.users_in_workers = 0  # users ranked in the workers so far (not here)

    @property
    def running(self) -> bool:
        """Whether workers are started (and hold a pipeline)."""
        return self._pool is not None

    def _setup(self) -> Callable[[object], object]:
        return partial(_serving_copy, compiled_rankers=str(self.compiled_rankers or ""))

    def load(self, pipeline: RankingPipeline) -> bool:
        """Have every worker hold ``pipeline`` (started, or restarted, now, and waited for).
        False when a worker died or could not load it: the pool is closed, and the next call
        starts new workers."""
        if self._pool is not None and pipeline is self._pipeline:
            return True
        self.close()
        started = time.perf_counter()
        self._pool = ProcessPoolExecutor(
            self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_warm_worker,
            initargs=(pickle.dumps(pipeline), self._setup()),
        )
        self._pipeline = pipeline
        # One task per worker at once: each of them starts and loads the pipeline now.
        ready = [self._pool.submit(_apply, _ready, ()) for _ in range(self.processes)]
        try:
            if not all(future.result() for future in ready):
                raise RuntimeError("a ranking worker did not load the pipeline")
        except BrokenProcessPool as error:
            self._stopped(error)
            return False
        logger.info(
            "%d warm ranking worker(s) loaded the pipeline in %.1f s",
            self.processes,
            time.perf_counter() - started,
        )
        return True

    def preload(self, loader: Callable[[], tuple[str, RankingPipeline]]) -> None:
        """Start workers that each call ``loader`` (importable: a module-level function or a
        partial of one) for (a stamp of what it read, the pipeline), and return at once. A
        later ``rank`` given the same stamp uses them if they are ready by then."""
        self.close()
        self._pool = ProcessPoolExecutor(
            self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_preloading_worker,
            initargs=(loader, self._setup()),
        )
        self._preloading = [
            self._pool.submit(_apply, _loaded_stamp, ()) for _ in range(self.processes)
        ]

    def _preloaded(self, pipeline: RankingPipeline, stamp: str | None) -> bool:
        """Whether the preloading workers are ready and read what ``stamp`` names (then they
        hold ``pipeline`` from now on); never waits."""
        if self._preloading is None:
            return False
        if stamp is None:
            logger.info("a pipeline not read from a saved state: ranking in this process")
            return False
        if not all(future.done() for future in self._preloading):
            logger.info("the ranking workers are not ready: ranking in this process")
            return False
        try:
            stamps = {future.result() for future in self._preloading}
        except Exception as error:  # noqa: BLE001 - a worker that could not load: rank here
            logger.warning("a ranking worker could not load the pipeline (%s)", error)
            return False
        if stamps != {stamp}:
            logger.info("the ranking workers read another pipeline: ranking in this process")
            return False
        self._preloading, self._pipeline = None, pipeline
        return True

    def rank(
        self,
        pipeline: RankingPipeline,
        behaviour: Behaviour,
        ranking: Ranking,
        stamp: str | None = None,
    ) -> Ranked:
        """``ranking(pipeline, behaviour)``, one shard of the users per worker (and one here,
        with ``rank_here``). A worker that died (killed for memory, say, or unable to load the
        pipeline) costs this call its speed, not its result: the users are ranked here and new
        workers start next time. ``stamp``: what the pipeline was read from, for a preloaded
        pool (see preload)."""
        if not len(behaviour.users):
            return ranking(pipeline, behaviour)  # no users: the empty result, as shaped here
        held = self._pool is not None and pipeline is self._pipeline
        # A pool that ranks here too is a one-shot command's: it does not (re)load.
        usable = (
            held or self._preloaded(pipeline, stamp) or (not self.rank_here and self.load(pipeline))
        )
        if not usable:
            return ranking(pipeline, behaviour)
        assert self._pool is not None
        parts = self.processes + int(self.rank_here)
        shares = list(behaviour.shares(parts, USER_COST_IN_EVENTS))
        # With rank_here, the last share (the only one, for a few users) stays here.
        here = shares[-1:] if self.rank_here else []
        try:
            away = [
                self._pool.submit(_apply, ranking, (share,))
                for share in shares[: len(shares) - len(here)]
            ]
            # One thread here too: BLAS's second thread would take the worker's core.
            with threadpool_limits(limits=1):
                kept = [ranking(pipeline, share) for share in here]
            ranked = concatenated([future.result() for future in away] + kept)
        except BrokenProcessPool as error:
            self._stopped(error)
            return ranking(pipeline, behaviour)
        self.users_in_workers += len(behaviour.users) - sum(len(share.users) for share in here)
        return ranked

    def _stopped(self, error: BrokenProcessPool) -> None:
        logger.warning("the warm ranking workers stopped (%s): ranking in this process", error)
        self.close()

    def close(self) -> None:
        """Stop the workers; the next call starts new ones. Workers still loading (preload) are
        ended rather than waited for: a command that did not need them should not wait."""
        if self._pool is not None:
            if self._preloading is not None and not all(f.done() for f in self._preloading):
                for process in list(getattr(self._pool, "_processes", {}).values()):
                    process.terminate()  # our own children; the executor notices and stops
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool, self._pipeline, self._preloading = None, None, None


_warm: WarmPool | None = None


@contextmanager
def warm_pool(
    processes: int, compiled_rankers: Path | None = None, rank_here: bool = False
) -> Iterator[WarmPool]:
    """A WarmPool that active_warm_pool() returns (to the serving code's ranking) while the
    block runs; its workers stop when it ends."""
    global _warm
    if _warm is not None:
        raise RuntimeError("a warm ranking pool is already open in this process")
    _warm = WarmPool(processes, compiled_rankers, rank_here)
    try:
        yield _warm
    finally:
        pool, _warm = _warm, None
        pool.close()


def active_warm_pool() -> WarmPool | None:
    """The pool of the open warm_pool block, or None."""
    return _warm
