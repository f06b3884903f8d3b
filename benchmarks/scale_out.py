"""Scale-out on one machine: embeddings and scoring on a local Ray with N workers against local.

Embeds the MovieLens item texts with `TextEmbedder` in this process and with `embed_on_ray`
(N model workers), and ranks every user of the sample with one fitted `RankingPipeline` in this
process and with `rank_on_ray` (N user shards). Prints seconds, items per second and the ratio
Ray/local for each, the start-up cost of the local Ray (`ray.init` until usable) and the memory
its processes hold once started (resident set size, from /proc). Results are checked equal
(vectors within 1e-6, identical lists). The first Ray call of each step includes starting its
workers (the model load for embeddings), which is what a build pays.

    .venv/bin/python benchmarks/scale_out.py [--workers 2] [--texts 2000] [--users 300]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import print_table, quiet_logging


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="Ray workers and user shards")
    parser.add_argument("--texts", type=int, default=2000, help="item texts embedded")
    parser.add_argument("--users", type=int, default=300, help="users ranked")
    parser.add_argument("--object-store-mb", type=int, default=500)
    return parser.parse_args()


def resident_mb(pids: set[int]) -> float:
    """Resident memory of ``pids`` in MB (from /proc/PID/statm; pages of 4 KiB)."""
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (OSError, IndexError):
            continue
    return total * 4096 / 2**20


def sample_pipeline(users: int):
    """A popularity + item-kNN pipeline fitted on the sample, and the behaviour of ``users``."""
    from ml.constants import DEFAULT_EVENT_WEIGHTS, OCCURRED_AT, RATING_MAX, USER_ID, WEIGHT
    from ml.datasets import movielens_sample
    from ml.pipeline.pipeline import PipelineConfig, RankingPipeline
    from ml.pipeline.snapshot import Behaviour, Snapshot

    items, events = movielens_sample()
    events[OCCURRED_AT] = pd.to_datetime(events["timestamp"], unit="s")
    events[WEIGHT] = DEFAULT_EVENT_WEIGHTS["rate"] * events["value"] / RATING_MAX
    snapshot = Snapshot(interactions=events, items=items)
    config = PipelineConfig(sources=("popularity", "item_knn"))
    pipeline = RankingPipeline(config, ordering="item_knn").fit_sources(snapshot)
    chosen = sorted(events[USER_ID].unique())[:users]
    return pipeline, Behaviour(events[events[USER_ID].isin(chosen)])


def main() -> None:
    arguments = parse_arguments()
    quiet_logging()
    from ml.datasets import movielens_sample
    from ml.distributed.embeddings import embed_on_ray
    from ml.distributed.scoring import rank_on_ray
    from ml.distributed.session import RayOptions, descendant_processes, ray_session
    from ml.embeddings import EmbeddingConfig, TextEmbedder
    from ml.text import item_texts

    texts = item_texts(movielens_sample()[0]).tolist()[: arguments.texts]
    config = EmbeddingConfig()
    started = time.perf_counter()
    local_vectors = TextEmbedder(config).encode(texts)
    local_embedding = time.perf_counter() - started
    pipeline, behaviour = sample_pipeline(arguments.users)
    started = time.perf_counter()
    local_lists = pipeline.recommend(behaviour)
    local_scoring = time.perf_counter() - started

    before = set(descendant_processes())
    started = time.perf_counter()
    with ray_session(
        RayOptions(num_cpus=arguments.workers, object_store_mb=arguments.object_store_mb)
    ):
        start_up = time.perf_counter() - started
        time.sleep(2)  # let the processes Ray starts settle before reading their memory
        idle_memory = resident_mb(set(descendant_processes()) - before)
        started = time.perf_counter()
        on_ray = embed_on_ray(texts, config, arguments.workers)
        ray_embedding = time.perf_counter() - started
        started = time.perf_counter()
        ranked = rank_on_ray(pipeline, behaviour, arguments.workers)
        ray_scoring = time.perf_counter() - started
    difference = float(np.abs(on_ray.result - local_vectors).max())
    same_lists = ranked.result[["user_id", "rank", "item_id"]].equals(
        local_lists[["user_id", "rank", "item_id"]]
    )
    print(f"{len(texts)} texts, {behaviour.users.size} users, {arguments.workers} Ray workers")
    print_table(
        [
            ("step", "local s", "ray s", "local /s", "ray /s", "ray/local"),
            (
                "embeddings (model load included)",
                f"{local_embedding:.1f}",
                f"{ray_embedding:.1f}",
                f"{len(texts) / local_embedding:.0f}",
                f"{len(texts) / ray_embedding:.0f}",
                f"{local_embedding / ray_embedding:.2f}",
            ),
            (
                "scoring",
                f"{local_scoring:.1f}",
                f"{ray_scoring:.1f}",
                f"{behaviour.users.size / local_scoring:.0f}",
                f"{behaviour.users.size / ray_scoring:.0f}",
                f"{local_scoring / ray_scoring:.2f}",
            ),
        ]
    )
    print(f"local Ray start-up {start_up:.1f} s, its processes hold {idle_memory:.0f} MB at rest")
    print(f"largest vector difference {difference:.1e}; identical lists: {same_lists}")


if __name__ == "__main__":
    main()
