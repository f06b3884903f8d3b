"""Sequential recommender training time per epoch, against the fit time of EASE and item-kNN.

All three learn from the full packaged MovieLens sample (every rating an interaction of weight
1.0) over the whole catalog, in one process. The sequential model trains with its default
configuration for a few epochs (3 by default) without validation, with item text vectors from
TextEmbedder (computed once, untimed) or random unit vectors (--random-text, which skips the
embedding). Each epoch's seconds come from the model's training history; the baselines are fitted
several times. The ratios are sequential seconds per epoch / baseline fit seconds (above 1: one
epoch takes longer than fitting the baseline), from the best and from the median timings; on a
shared machine the best is the least disturbed figure.

    .venv/bin/python benchmarks/training_epoch.py [--epochs 3] [--random-text]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import asdict

import numpy as np
import pandas as pd
from common import print_table, quiet_logging


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="sequential training epochs")
    parser.add_argument("--repeats", type=int, default=3, help="timed fits of each baseline")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (torch's default)")
    parser.add_argument(
        "--random-text",
        action="store_true",
        help="random unit text vectors instead of TextEmbedder's (skips the embedding)",
    )
    return parser.parse_args()


def text_vectors(items: pd.DataFrame, random_text: bool) -> tuple[pd.DataFrame, str]:
    """Item text vectors indexed by item_id, and where they came from."""
    from ml.embeddings import PACKAGED_MODEL, TextEmbedder, model_dimension
    from ml.text import item_texts

    texts = item_texts(items)
    if random_text:
        generator = np.random.default_rng(0)
        vectors = generator.standard_normal((len(texts), model_dimension(PACKAGED_MODEL)))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return pd.DataFrame(vectors.astype(np.float32), index=texts.index), "random unit vectors"
    started = time.perf_counter()
    vectors = TextEmbedder().encode(texts.tolist())
    seconds = time.perf_counter() - started
    source = f"TextEmbedder ({PACKAGED_MODEL}, embedded in {seconds:.1f} s, untimed)"
    return pd.DataFrame(vectors, index=texts.index), source


def main() -> None:
    arguments = parse_arguments()
    quiet_logging()
    import torch

    from ml.constants import ITEM_ID, OCCURRED_AT, TIMESTAMP, USER_ID, WEIGHT
    from ml.datasets import movielens_sample
    from ml.models.baselines import EASERecommender, ItemKNNRecommender
    from ml.models.sequential import SequentialConfig, SequentialRecommender

    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    load_before = os.getloadavg()[0]
    items, events = movielens_sample()
    interactions = pd.DataFrame(
        {
            USER_ID: events[USER_ID],
            ITEM_ID: events[ITEM_ID],
            OCCURRED_AT: pd.to_datetime(events[TIMESTAMP], unit="s"),
            WEIGHT: 1.0,
        }
    )
    catalog_item_ids = items[ITEM_ID].tolist()
    vectors, vector_source = text_vectors(items, arguments.random_text)

    baseline_seconds: dict[str, list[float]] = {"EASE": [], "item-kNN": []}
    for _ in range(arguments.repeats):
        for name, recommender in (("EASE", EASERecommender), ("item-kNN", ItemKNNRecommender)):
            baseline = recommender()
            started = time.perf_counter()
            baseline.fit(interactions, catalog_item_ids=catalog_item_ids)
            baseline_seconds[name].append(time.perf_counter() - started)
            del baseline  # EASE holds dense items x items matrices: free them before the next fit

    config = SequentialConfig(max_epochs=arguments.epochs, threads=arguments.threads)
    model = SequentialRecommender(config)
    started = time.perf_counter()
    model.fit(interactions, catalog_item_ids=catalog_item_ids, text_vectors=vectors)
    fit_seconds = time.perf_counter() - started
    epoch_seconds = [epoch["seconds"] for epoch in model.history.epochs]
    epoch_median = statistics.median(epoch_seconds)

    print(
        f"training time: MovieLens sample, {len(interactions)} interactions, "
        f"{interactions[USER_ID].nunique()} users, {len(catalog_item_ids)} catalog items, "
        f"{torch.get_num_threads()} torch threads, the sequential model trains on CPU"
    )
    print(
        f"sequential: {len(epoch_seconds)} epochs, each timed (whole fit {fit_seconds:.1f} s "
        f"with setup); baselines: {arguments.repeats} fits each; load average "
        f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after, on {os.cpu_count()} cores"
    )
    print(f"text vectors: {vector_source}")
    print(f"sequential config: {asdict(config)}")
    rows = [
        ("model", "seconds best", "seconds median", "epoch/this best", "epoch/this median"),
        (
            "sequential, per epoch",
            f"{min(epoch_seconds):.2f}",
            f"{epoch_median:.2f}",
            "1.00",
            "1.00",
        ),
    ]
    for name, seconds in baseline_seconds.items():
        rows.append(
            (
                f"{name} fit",
                f"{min(seconds):.2f}",
                f"{statistics.median(seconds):.2f}",
                f"{min(epoch_seconds) / min(seconds):.2f}",
                f"{epoch_median / statistics.median(seconds):.2f}",
            )
        )
    print_table(rows)
    print(
        "epochs: "
        + ", ".join(
            f"{int(epoch['epoch'])}: {epoch['seconds']:.2f} s, loss {epoch['loss']:.3f}"
            for epoch in model.history.epochs
        )
    )
    print("(best: the least disturbed run; other processes on the machine only add time)")


if __name__ == "__main__":
    main()
