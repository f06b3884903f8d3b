"""Item text embeddings through Ray Data: a pool of model workers, one GPU each when present."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ml.distributed.session import OnRay
from ml.embeddings import EmbeddingConfig, TextEmbedder, embedding_batches

POSITION = "position"
TEXT = "text"
VECTOR = "vector"
WORKER_PID = "worker_pid"


class EmbeddingWorker:
    """One model replica: loads the encoder once, then embeds the batches Ray Data sends it."""

    def __init__(self, config: EmbeddingConfig, threads: int) -> None:
        import torch

        # The driver's CPU thread count, not the one CPU Ray reserves (Ray sets one thread per
        # reserved CPU): on some CPUs a product's float sums depend on how many threads share it
        # (measured: up to 1.5e-7 between one and two threads), and the vectors must be the
        # in-process embedder's to the last bit.
        torch.set_num_threads(threads)
        self.embedder = TextEmbedder(config)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        vectors = self.embedder.encode(batch[TEXT].tolist())
        return pd.DataFrame(
            {POSITION: batch[POSITION].to_numpy(), VECTOR: list(vectors), WORKER_PID: os.getpid()}
        )


def embed_on_ray(texts: Sequence[str], config: EmbeddingConfig, workers: int) -> OnRay[np.ndarray]:
    """(len(texts), dimension) unit vectors, those of ``TextEmbedder(config).encode(texts)`` to
    the last bit.

    The texts are cut into blocks that ``workers`` model replicas embed side by side; with GPUs
    in the cluster each replica holds one. Each block is whole batches of the in-process
    embedder's (embedding_batches) and goes to a replica as one Ray batch, so the replica runs
    the same batches and a text's vector does not depend on where it ran. Needs a Ray session
    (``ray_session``).
    """
    import ray
    import torch

    if workers < 1:
        raise ValueError(f"embedding on Ray needs at least one worker, not {workers}")
    if len(texts) == 0:
        return OnRay(TextEmbedder(config).encode([]), frozenset())
    gpus = int(ray.cluster_resources().get("GPU", 0))
    replicas = min(workers, gpus) if gpus else workers
    batches = embedding_batches(texts, config)
    # Several blocks per replica, so that every replica gets work and the last ones finish late.
    per_block = -(-len(batches) // (4 * replicas))
    blocks = [
        np.concatenate(batches[start : start + per_block])
        for start in range(0, len(batches), per_block)
    ]
    frames = [
        pd.DataFrame({POSITION: positions, TEXT: [texts[position] for position in positions]})
        for positions in blocks
    ]
    embedded = ray.data.from_pandas(frames).map_batches(
        EmbeddingWorker,
        fn_constructor_kwargs={"config": config, "threads": torch.get_num_threads()},
        batch_size=None,  # a whole block: Ray's own batches would cut across the embedder's
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=replicas),
        num_gpus=1 if gpus else 0,
        num_cpus=1,
    )
    result = embedded.to_pandas().sort_values(POSITION)
    vectors = np.stack(result[VECTOR].to_numpy()).astype(np.float32, copy=False)
    return OnRay(vectors, frozenset(int(pid) for pid in result[WORKER_PID].unique()))
