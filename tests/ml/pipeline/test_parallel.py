"""Ranking over user shards in worker processes gives what ranking in this process gives."""

from __future__ import annotations

import os
import pickle
import time
from functools import partial

import numpy as np
import pandas as pd
import pytest

from ml.constants import USER_ID
from ml.pipeline.parallel import (
    WarmPool,
    active_warm_pool,
    handled,
    rank_in_processes,
    warm_pool,
)
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

    def keep_lists(shard):  # as a publish does: the candidates were written, keep the lists
        arrived.append(shard)
        lists, candidates = shard
        return lists, candidates.iloc[:0]

    lists, candidates = rank_in_processes(
        pipeline,
        behaviour,
        processes=2,
        ranking=ranking,
        on_shard=keep_lists,
        shard_users=2,
        compiled_rankers=tmp_path / "rankers",
    )
    here = ranking(pipeline, behaviour)
    pd.testing.assert_frame_equal(lists, here[0])
    assert candidates.empty and list(candidates.columns) == list(here[1].columns)
    # Five shards of at most two users, each handed on once, together every user's rows.
    assert len(arrived) == 5
    handed = pd.concat([shard[1] for shard in arrived]).sort_values([USER_ID, "rank"])
    expected = here[1].sort_values([USER_ID, "rank"])
    pd.testing.assert_frame_equal(handed.reset_index(drop=True), expected.reset_index(drop=True))
    assert any((tmp_path / "rankers").glob("*.o"))  # the workers compiled the ranker


def test_a_shard_handler_says_what_to_keep() -> None:
    frame = pd.DataFrame({USER_ID: ["a", "b"]})
    assert handled(None, frame) is frame
    assert handled(lambda shard: None, frame) is frame  # None: keep all of it
    assert handled(lambda shard: shard.iloc[:0], frame).empty


def worker_pids(_pipeline: RankingPipeline, behaviour: Behaviour) -> pd.DataFrame:
    """A ranking that says which process ran it (importable: the workers look it up). It
    takes a moment, as a real shard does: a worker that finished a shard at once could take
    the next one before the other worker woke up (seen on a busy 2-core machine)."""
    time.sleep(0.3)
    return pd.DataFrame({USER_ID: list(behaviour.users), "pid": os.getpid()})


def _explode(parent: int) -> object:
    if os.getpid() != parent:
        raise RuntimeError("this pipeline cannot be loaded in a worker")
    return Unloadable()


class Unloadable:
    """A pipeline stand-in that unpickles only in the process that pickled it."""

    def __reduce__(self):
        return _explode, (os.getpid(),)


def test_workers_that_cannot_load_the_pipeline_leave_the_ranking_to_this_process() -> None:
    behaviour = Behaviour(session_log(users=4, seed=3)[0])
    with warm_pool(2) as pool:
        ranked = pool.rank(Unloadable(), behaviour, worker_pids)
        assert set(ranked["pid"]) == {os.getpid()}  # ranked here, every user
        assert ranked[USER_ID].tolist() == list(behaviour.users)
        assert not pool.running  # closed: the next call starts new workers


def _fitted(seed: int, tmp_path) -> RankingPipeline:
    snapshot = session_snapshot(users=30, seed=seed)
    pipeline = RankingPipeline(PipelineConfig(k=5)).fit_sources(snapshot)
    frame = pipeline.candidate_features(Behaviour(snapshot.interactions))
    frame["label"] = (np.random.default_rng(seed).uniform(size=len(frame)) < 0.3).astype(int)
    config = RankerConfig(n_estimators=10, min_child_samples=2, bagged_models=1)
    pipeline.ranker = Ranker(config).fit(frame, pipeline.training_columns(frame))
    return pipeline


@pytest.mark.slow
def test_a_warm_pool_ranks_as_this_process_does_and_keeps_its_workers(tmp_path) -> None:
    first, second = _fitted(1, tmp_path), _fitted(2, tmp_path)
    behaviour = Behaviour(session_log(users=7, seed=3)[0])
    ranking = partial(RankingPipeline.recommend_with_candidates, candidates=8)
    pool = WarmPool(2, tmp_path / "rankers")
    try:
        for expected, got in zip(
            ranking(first, behaviour), pool.rank(first, behaviour, ranking), strict=True
        ):
            pd.testing.assert_frame_equal(got, expected)
        ran = pool.rank(first, behaviour, worker_pids)
        assert ran[USER_ID].tolist() == list(behaviour.users)  # shards back in user order
        workers = set(ran["pid"])
        assert len(workers) == 2 and os.getpid() not in workers  # one shard per worker
        assert set(pool.rank(first, behaviour, worker_pids)["pid"]) == workers  # kept warm
        assert pool.running
        # Another pipeline (a new serving state): new workers, holding it.
        for expected, got in zip(
            ranking(second, behaviour), pool.rank(second, behaviour, ranking), strict=True
        ):
            pd.testing.assert_frame_equal(got, expected)
        assert not set(pool.rank(second, behaviour, worker_pids)["pid"]) & workers
        empty = Behaviour(session_log(users=7, seed=3)[0].iloc[:0])
        assert pool.rank(second, empty, ranking)[0].empty
    finally:
        pool.close()


def test_the_warm_pool_is_active_only_inside_its_block() -> None:
    assert active_warm_pool() is None
    with warm_pool(2) as pool:
        assert active_warm_pool() is pool
        with pytest.raises(RuntimeError, match="already open"), warm_pool(2):
            pass
        assert active_warm_pool() is pool
    assert active_warm_pool() is None
    with pytest.raises(ValueError, match="at least one"):
        WarmPool(0)


def read_saved(path: str, pause: float = 0.0) -> tuple[str, RankingPipeline]:
    """A preloading worker's loader (importable): (the file's name as its stamp, the pipeline
    pickled in it), after ``pause`` seconds (a slow read)."""
    time.sleep(pause)
    with open(path, "rb") as handle:
        return os.path.basename(path), pickle.load(handle)


def _ready_within(pool: WarmPool, seconds: float) -> None:
    """Wait until the pool's preloading workers have loaded (a test's stand-in for the refresh's
    other work, which a real preload runs beside)."""
    deadline = time.monotonic() + seconds
    while pool._preloading is not None and not all(f.done() for f in pool._preloading):
        assert time.monotonic() < deadline, "the workers did not load the pipeline in time"
        time.sleep(0.05)


def _preloaded_pool(tmp_path) -> tuple[RankingPipeline, Behaviour, WarmPool]:
    """(a fitted pipeline, some users' behaviour, a rank-here pool whose one worker has read
    that pipeline from the file "state-1", and is ready)."""
    pipeline = _fitted(1, tmp_path)
    saved = tmp_path / "state-1"
    saved.write_bytes(pickle.dumps(pipeline))
    pool = WarmPool(1, tmp_path / "rankers", rank_here=True)
    pool.preload(partial(read_saved, str(saved)))
    try:
        _ready_within(pool, 120)
    except BaseException:
        pool.close()
        raise
    return pipeline, Behaviour(session_log(users=7, seed=3)[0]), pool


@pytest.mark.slow
def test_a_preloaded_pool_ranks_a_share_here_and_the_rest_in_its_worker(tmp_path) -> None:
    pipeline, behaviour, pool = _preloaded_pool(tmp_path)
    ranking = partial(RankingPipeline.recommend_with_candidates, candidates=8)
    expected = ranking(pipeline, behaviour)
    try:
        ran = pool.rank(pipeline, behaviour, worker_pids, stamp="state-1")
        assert ran[USER_ID].tolist() == list(behaviour.users)  # the shares back in user order
        pids = ran.groupby("pid", sort=False)[USER_ID].count()
        assert len(pids) == 2 and pids.index[-1] == os.getpid()  # the last share ranked here
        for want, got in zip(
            expected, pool.rank(pipeline, behaviour, ranking, stamp="state-1"), strict=True
        ):
            pd.testing.assert_frame_equal(got, want)
    finally:
        pool.close()


@pytest.mark.slow
def test_a_preloaded_pool_ranks_here_what_its_workers_did_not_read(tmp_path) -> None:
    pipeline, behaviour, pool = _preloaded_pool(tmp_path)
    try:
        # A state saved since the workers read theirs: its stamp differs.
        assert set(pool.rank(pipeline, behaviour, worker_pids, stamp="state-2")["pid"]) == {
            os.getpid()
        }
        # A pipeline not read from a saved state (a refresh that refitted): no stamp.
        assert set(pool.rank(pipeline, behaviour, worker_pids)["pid"]) == {os.getpid()}
        assert pool.running  # a one-shot pool does not restart its workers with it
    finally:
        pool.close()


def test_a_preloaded_pool_does_not_wait_for_workers_still_loading(tmp_path) -> None:
    saved = tmp_path / "state-1"
    saved.write_bytes(b"")  # never read: the loader is still pausing when the ranking comes
    behaviour = Behaviour(session_log(users=4, seed=3)[0])
    pool = WarmPool(1, rank_here=True)
    started = time.monotonic()
    try:
        pool.preload(partial(read_saved, str(saved), pause=60.0))
        ranked = pool.rank(object(), behaviour, worker_pids, stamp="state-1")
        assert set(ranked["pid"]) == {os.getpid()}  # not ready: every user ranked here
        assert ranked[USER_ID].tolist() == list(behaviour.users)
    finally:
        pool.close()  # ends the loading worker instead of waiting out its read
    assert time.monotonic() - started < 30
    assert not pool.running


def note_pid_and_wait(_shared: object, path: str) -> None:
    """A task that writes its worker's PID to ``path`` and then waits (importable)."""
    with open(path + ".partial", "w") as handle:
        handle.write(str(os.getpid()))
    os.replace(path + ".partial", path)
    time.sleep(120)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (ended, not yet reaped by its new parent) is gone for this purpose.
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().split(") ")[-1][0] != "Z"


@pytest.mark.skipif(not os.path.exists("/proc"), reason="reads process states from /proc")
def test_a_worker_ends_when_the_process_that_started_it_is_killed(tmp_path) -> None:
    """A refresh killed mid-run (SIGKILL: no cleanup) must not leave its ranking workers
    behind, each holding a copy of the serving pipeline."""
    import subprocess
    import sys

    noted = tmp_path / "worker.pid"
    script = tmp_path / "orphaning.py"
    script.write_text(
        "import sys\n"
        "from ml.pipeline.parallel import in_processes\n"
        "from tests.ml.pipeline.test_parallel import note_pid_and_wait\n"
        "if __name__ == '__main__':\n"
        "    in_processes(note_pid_and_wait, None, [(sys.argv[1],)], processes=1)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    parent = subprocess.Popen(
        [sys.executable, str(script), str(noted)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
    )
    try:
        deadline = time.monotonic() + 120
        while not noted.exists():
            assert parent.poll() is None, "the parent exited before its worker started"
            assert time.monotonic() < deadline, "the worker never started its task"
            time.sleep(0.1)
        worker = int(noted.read_text())
        assert _alive(worker)
    finally:
        parent.kill()  # our own child, by its PID
        parent.wait()
    deadline = time.monotonic() + 30
    while _alive(worker):
        assert time.monotonic() < deadline, f"worker {worker} outlived its killed parent"
        time.sleep(0.2)
