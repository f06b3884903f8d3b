"""The pipeline's heavy steps on a local Ray started by the test: the same results as in-process.

Slow (a local Ray, model workers and a Ray Train run start here); skipped where the
`distributed` extra is not installed. CI installs it (.ci/run).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

pytest.importorskip(
    "ray", reason="the distributed extra is not installed: pip install -e '.[distributed]'"
)

from ml.constants import ITEM_ID, OCCURRED_AT, USER_ID  # noqa: E402
from ml.distributed.embeddings import embed_on_ray  # noqa: E402
from ml.distributed.scoring import rank_on_ray  # noqa: E402
from ml.distributed.session import RayOptions, descendant_processes, ray_session  # noqa: E402
from ml.distributed.training import fit_sequential_on_ray, weight_fingerprint  # noqa: E402
from ml.embeddings import EmbeddingConfig, TextEmbedder  # noqa: E402
from ml.pipeline.pipeline import PipelineConfig, RankingPipeline  # noqa: E402
from ml.pipeline.snapshot import Behaviour, Snapshot  # noqa: E402
from tests.distributed.processes import wait_until_gone  # noqa: E402
from tests.ml.models.test_sequential import TINY, cycle_interactions, text_vectors  # noqa: E402
from tests.ml.pipeline.tiny import session_log  # noqa: E402

pytestmark = pytest.mark.slow

TEST_RAY = RayOptions(num_cpus=2, object_store_mb=500)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray for the module; afterwards no process it started may still run."""
    before = descendant_processes()
    with ray_session(TEST_RAY):
        yield
    left = wait_until_gone(before)
    assert not left, f"Ray processes outlived the session: {left}"


def test_embeddings_on_ray_equal_the_in_process_ones(local_ray: None) -> None:
    texts = [
        f"Film {number}. Categories: Drama. {'A long story. ' * (number % 5)}"
        for number in range(24)
    ]
    config = EmbeddingConfig(batch_size=4)
    on_ray = embed_on_ray(texts, config, workers=2)
    local = TextEmbedder(config).encode(texts)
    # To the last bit: vectors within float noise of each other would still give the ranker
    # other features, and so other lists.
    np.testing.assert_array_equal(on_ray.result, local)
    # The work ran in Ray's model workers, not here. How many of the pool's workers got blocks
    # depends on scheduling (on a busy machine one may load its model first and take them all).
    assert on_ray.worker_pids and os.getpid() not in on_ray.worker_pids


def _session_world() -> tuple[RankingPipeline, Behaviour]:
    """A pipeline fitted on 60 users' sessions, and the behaviour of 30 of them to rank."""
    log, covisitation = session_log()
    items = pd.DataFrame({ITEM_ID: sorted(log[ITEM_ID].unique())})
    generator = np.random.default_rng(1)
    values = generator.normal(size=(len(items), 8))
    vectors = pd.DataFrame(
        values / np.linalg.norm(values, axis=1, keepdims=True), index=items[ITEM_ID]
    )
    snapshot = Snapshot(interactions=log, items=items, vectors=vectors, covisitation=covisitation)
    config = PipelineConfig(sources=("popularity", "covisitation", "text"), k=5)
    pipeline = RankingPipeline(config, ordering="covisitation").fit_sources(snapshot)
    ranked_users = sorted(log[USER_ID].unique())[::2]
    first_half = (
        log[log[USER_ID].isin(ranked_users)].sort_values(OCCURRED_AT).groupby(USER_ID).head(4)
    )
    return pipeline, Behaviour(first_half)


def test_lists_on_ray_equal_the_in_process_lists(local_ray: None) -> None:
    pipeline, behaviour = _session_world()
    local = pipeline.recommend(behaviour)
    arrived: list[pd.DataFrame] = []
    on_ray = rank_on_ray(pipeline, behaviour, shards=3, on_shard=arrived.append)
    assert local[USER_ID].nunique() == 30
    columns = [USER_ID, "rank", ITEM_ID, "reason"]
    pd.testing.assert_frame_equal(on_ray.result[columns], local[columns])
    # Each shard was handed over as it arrived: together they are the lists, once each.
    assert len(arrived) == 3
    handed = pd.concat(arrived).sort_values([USER_ID, "rank"], ignore_index=True)
    pd.testing.assert_frame_equal(handed[columns], local[columns])
    np.testing.assert_allclose(on_ray.result["score"], local["score"], rtol=1e-9)
    # Ranked in Ray's workers, not here (how many took shards depends on scheduling).
    assert on_ray.worker_pids and os.getpid() not in on_ray.worker_pids


def test_two_ddp_workers_end_with_the_same_weights_and_a_usable_model(local_ray: None) -> None:
    catalog = ["a", "b", "c", "d", "new"]
    fitted = fit_sequential_on_ray(
        cycle_interactions(),
        replace(TINY, max_epochs=30),
        workers=2,
        catalog_item_ids=catalog,
        text_vectors=text_vectors(catalog),
    )
    assert len(fitted.fingerprints) == 2
    assert fitted.fingerprints[0] == fitted.fingerprints[1], "the ranks' weights differ"
    assert weight_fingerprint(fitted.model) == fitted.fingerprints[0]
    # Each user walks a -> b -> c -> d -> a: after ... c the model expects d.
    history = pd.DataFrame(
        {
            USER_ID: "v",
            ITEM_ID: ["a", "b", "c"],
            OCCURRED_AT: pd.date_range("2024-02-01", periods=3, freq="min"),
        }
    )
    _, scores = fitted.model.score(history)
    assert fitted.model.item_ids[int(np.argmax(scores[0]))] == "d"
