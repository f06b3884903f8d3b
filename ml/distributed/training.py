"""The sequential model's training on Ray Train: a TorchTrainer of DDP replicas over gloo.

Every rank draws the same batch order and takes its share of each batch; DDP averages the
gradients, so the ranks step alike and end with identical weights. Rank 0's weights come back as
a checkpoint; every rank reports a fingerprint of its weights, which is how a run shows that they
agree.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ml.models.sequential import SequentialConfig, SequentialRecommender

CHECKPOINT_FILE = "sequential.pt"


@dataclass(frozen=True)
class DistributedFit:
    """A model trained on Ray and the weight fingerprint each rank ended with, by rank."""

    model: SequentialRecommender
    fingerprints: list[str]


def weight_fingerprint(model: SequentialRecommender) -> str:
    """A SHA-256 over every weight, in state order: equal for equal weights, bit for bit."""
    digest = hashlib.sha256()
    for name, tensor in model.state()["weights"].items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _train_replica(arguments: dict[str, Any]) -> None:
    """Ray Train's loop on one worker: fit this rank's replica, report, checkpoint on rank 0."""
    import ray
    import torch
    import torch.distributed
    from ray import train

    context = train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    interactions, catalog, vectors = ray.get(arguments["data"])
    model = SequentialRecommender(arguments["config"]).fit(
        interactions,
        catalog_item_ids=catalog,
        text_vectors=vectors,
        stop_after=arguments["stop_after"],
        replica=(rank, world_size),
    )
    fingerprints = [weight_fingerprint(model)]
    if world_size > 1:
        fingerprints = [""] * world_size
        torch.distributed.all_gather_object(fingerprints, weight_fingerprint(model))
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if rank == 0:
            torch.save(model.state(), Path(folder) / CHECKPOINT_FILE)
            checkpoint = train.Checkpoint.from_directory(folder)
        train.report({"fingerprints": fingerprints}, checkpoint=checkpoint)


def fit_sequential_on_ray(
    interactions: pd.DataFrame,
    config: SequentialConfig,
    workers: int,
    catalog_item_ids: Iterable[Hashable] | None = None,
    text_vectors: pd.DataFrame | None = None,
    stop_after: int | None = None,
    storage_path: str | None = None,
) -> DistributedFit:
    """``SequentialRecommender(config).fit(...)`` as ``workers`` DDP replicas on Ray Train (CPU).

    ``storage_path`` is where Ray Train keeps the run and its checkpoint: a temporary folder
    when None, which only a one-machine Ray can use; a cluster needs shared storage (s3://...).
    Needs a Ray session (``ray_session``).
    """
    import ray
    import torch
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ml.models.sequential import model_from_state

    if workers < 1:
        raise ValueError(f"training on Ray needs at least one worker, not {workers}")
    catalog = None if catalog_item_ids is None else list(catalog_item_ids)
    with tempfile.TemporaryDirectory(prefix="freshrank-train-") as scratch:
        trainer = TorchTrainer(
            _train_replica,
            train_loop_config={
                "data": ray.put((interactions, catalog, text_vectors)),
                "config": config,
                "stop_after": stop_after,
            },
            # The model trains on CPU tensors: GPUs would sit idle, so none are asked for.
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=False),
            run_config=RunConfig(name="sequential", storage_path=storage_path or scratch),
        )
        result = trainer.fit()
        if result.error is not None:
            raise RuntimeError("training the sequential model on Ray failed") from result.error
        with result.checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / CHECKPOINT_FILE, weights_only=False)
    return DistributedFit(model_from_state(state), list(result.metrics["fingerprints"]))
