"""Incremental item embedding against a full re-embed, on the MovieLens catalog in DuckDB.

Both runs start from a store that holds the vectors of the original catalog, after a share of the
item titles (1% by default, a seeded random choice) gained " (remastered)". Each run is what the
item_embeddings asset does: build every item's text, read the stored content hashes, hash every
text, embed the items whose hash differs and upsert their vectors. The full re-embed ignores the
stored hashes (the asset's full_refresh), so it embeds and upserts every item; the incremental
run embeds only the changed items. Model and data loading stay out of the timings. The ratio is
full / incremental in wall time (above 1: incremental is faster). Afterwards the two stores must
hold the same vectors: the largest absolute difference on the changed items (and on all items)
is printed. Best and median of the repeats are printed; on a shared machine the best is the least
disturbed figure.

    .venv/bin/python benchmarks/embedding_incremental.py [--changed-share 0.01] [--in-memory]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from common import print_table, quiet_logging

CHANGE_SUFFIX = " (remastered)"


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="use only the first N items")
    parser.add_argument("--changed-share", type=float, default=0.01, help="share of items changed")
    parser.add_argument("--seed", type=int, default=7, help="seed of the choice of changed items")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (torch's default)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each kind")
    parser.add_argument(
        "--in-memory", action="store_true", help="in-memory DuckDB instead of a temporary file"
    )
    return parser.parse_args()


def refresh(connection, items: pd.DataFrame, embedder, *, full: bool) -> tuple[int, float]:
    """One embedding refresh of ``items`` into the store; (items embedded, seconds embedding)."""
    from ml.embeddings import items_to_embed
    from ml.text import item_texts
    from orchestration.features.embedding_store import stored_hashes, upsert_vectors

    texts = item_texts(items)
    stored = stored_hashes(connection, embedder.dimension)
    if full:
        stored = stored.iloc[0:0]
    pending = items_to_embed(texts, stored, embedder.model_name)
    pending_texts = texts[pending.index].tolist()
    started = time.perf_counter()
    vectors = embedder.encode(pending_texts)
    embedding_seconds = time.perf_counter() - started
    upsert_vectors(
        connection,
        pending.index.tolist(),
        pending.tolist(),
        pending_texts,
        vectors,
        embedder.model_name,
        datetime.now(UTC).replace(tzinfo=None),
    )
    return len(pending), embedding_seconds


def main() -> None:
    arguments = parse_arguments()
    quiet_logging()
    import duckdb
    import torch

    from ml.constants import TITLE
    from ml.datasets import movielens_sample
    from ml.embeddings import EmbeddingConfig, TextEmbedder
    from ml.text import content_hash, item_texts
    from orchestration.features.embedding_store import load_vectors, stored_hashes, upsert_vectors

    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    load_before = os.getloadavg()[0]
    items, _ = movielens_sample()
    items = items.head(arguments.limit) if arguments.limit else items
    embedder = TextEmbedder(
        EmbeddingConfig(batch_size=arguments.batch_size, device=arguments.device)
    )
    generator = np.random.default_rng(arguments.seed)
    changed_count = max(1, round(arguments.changed_share * len(items)))
    changed_rows = generator.choice(len(items), size=changed_count, replace=False)
    changed_items = items.copy()
    changed_items.loc[changed_items.index[changed_rows], TITLE] += CHANGE_SUFFIX
    changed_ids = item_texts(changed_items).index[changed_rows]

    # The store before the change, embedded once and copied into every run's fresh database.
    original_texts = item_texts(items)
    started = time.perf_counter()
    original_vectors = embedder.encode(original_texts.tolist())
    seed_seconds = time.perf_counter() - started
    original_hashes = [content_hash(text, embedder.model_name) for text in original_texts]

    def seeded_store(folder: Path, name: str):
        connection = duckdb.connect(":memory:" if arguments.in_memory else folder / f"{name}.db")
        stored_hashes(connection, embedder.dimension)  # creates the schema and the table
        upsert_vectors(
            connection,
            original_texts.index.tolist(),
            original_hashes,
            original_texts.tolist(),
            original_vectors,
            embedder.model_name,
            datetime.now(UTC).replace(tzinfo=None),
        )
        return connection

    figures: dict[str, dict[str, list[float]]] = {
        kind: {"seconds": [], "embedding": [], "embedded": []} for kind in ("full", "incremental")
    }
    final_vectors: dict[str, pd.DataFrame] = {}
    with tempfile.TemporaryDirectory(prefix="freshrank-benchmark-") as folder:
        for repeat in range(arguments.repeats):
            # Alternate who goes first, so a load spike from another process hits both alike.
            kinds = ["full", "incremental"] if repeat % 2 == 0 else ["incremental", "full"]
            for kind in kinds:
                connection = seeded_store(Path(folder), f"{kind}-{repeat}")
                started = time.perf_counter()
                embedded, embedding_seconds = refresh(
                    connection, changed_items, embedder, full=kind == "full"
                )
                seconds = time.perf_counter() - started
                figures[kind]["seconds"].append(seconds)
                figures[kind]["embedding"].append(embedding_seconds)
                figures[kind]["embedded"].append(embedded)
                final_vectors[kind] = load_vectors(connection)
                connection.close()

    full, incremental = final_vectors["full"], final_vectors["incremental"]
    changed_difference = float(
        np.abs(full.loc[changed_ids].to_numpy() - incremental.loc[changed_ids].to_numpy()).max()
    )
    all_difference = float(np.abs(full.to_numpy() - incremental.loc[full.index].to_numpy()).max())
    print(
        f"incremental embedding: {len(items)} MovieLens items, {changed_count} changed "
        f"({arguments.changed_share:.0%}, seed {arguments.seed}, title + {CHANGE_SUFFIX!r}), "
        f"device {embedder.device}, batch size {arguments.batch_size}, "
        f"{torch.get_num_threads()} torch threads, "
        f"{'in-memory' if arguments.in_memory else 'temporary-file'} DuckDB"
    )
    print(
        f"{arguments.repeats} timed runs each, alternating; load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after, on {os.cpu_count()} cores; seed store: "
        f"{len(items)} original texts embedded in {seed_seconds:.1f} s (untimed)"
    )
    rows = [("run", "items embedded", "wall s best", "wall s median", "embedding s best")]
    for kind, label in (("full", "full re-embed"), ("incremental", "incremental")):
        kind_figures = figures[kind]
        rows.append(
            (
                label,
                f"{int(kind_figures['embedded'][-1])}",
                f"{min(kind_figures['seconds']):.3f}",
                f"{statistics.median(kind_figures['seconds']):.3f}",
                f"{min(kind_figures['embedding']):.3f}",
            )
        )
    full_seconds = figures["full"]["seconds"]
    incremental_seconds = figures["incremental"]["seconds"]
    rows.append(
        (
            "ratio full/incremental",
            "",
            f"{min(full_seconds) / min(incremental_seconds):.1f}",
            f"{statistics.median(full_seconds) / statistics.median(incremental_seconds):.1f}",
            "",
        )
    )
    print_table(rows)
    print(
        f"max abs difference, incremental vs full re-embed: {changed_difference:.2e} on the "
        f"{changed_count} changed items, {all_difference:.2e} on all {len(full)} items"
    )
    print("(best: the least disturbed run; other processes on the machine only add time)")


if __name__ == "__main__":
    main()
