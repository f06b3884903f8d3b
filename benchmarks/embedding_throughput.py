"""Text embedding throughput: freshrank's TextEmbedder against sentence-transformers.

Both embed the same MovieLens item texts with the same packaged all-MiniLM-L6-v2 weights, on the
same device, batch size and torch thread count, in one process. Model loading is timed apart from
encoding; both models embed a few texts first so that one-off warm-up costs stay out of the
figures. The runs alternate between the two so that a busy machine slows both alike; with
--slices the texts are timed in consecutive slices, alternating per slice, which pairs the two
more closely when the load changes from second to second. The printed ratio is ours / theirs in
texts per second (above 1: ours is faster), and the largest absolute difference between the two
sets of vectors shows they compute the same thing. Best and median of the repeats are printed; on
a shared machine the best is the least disturbed figure. Ours computes in the configured precision
(--precision; auto: bfloat16 on a CPU with bfloat16 instructions), sentence-transformers in
float32 (float16 on CUDA), and the lowest cosine between the two vectors of a text is printed.

    .venv/bin/python benchmarks/embedding_throughput.py [--limit N] [--device auto|cpu|cuda]
        [--precision auto|float32|bfloat16|float16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
from common import print_table, quiet_logging

from ml.embeddings import PRECISIONS

Encoder = Callable[[list[str]], np.ndarray]


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="embed only the first N texts")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128, help="tokens kept per text")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help="ours")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (torch's default)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each implementation")
    parser.add_argument(
        "--slices",
        type=int,
        default=1,
        help="time the texts in this many consecutive slices, alternating the two per slice "
        "(finer pairing on a busy machine; 1: all texts in one encode call)",
    )
    parser.add_argument("--warmup", type=int, default=32, help="texts embedded before timing")
    parser.add_argument(
        "--their-float32",
        action="store_true",
        help="on CUDA, leave sentence-transformers in float32 instead of matching our float16",
    )
    return parser.parse_args()


def main() -> None:
    arguments = parse_arguments()
    quiet_logging()
    import torch
    from sentence_transformers import SentenceTransformer

    from ml.datasets import movielens_sample
    from ml.embeddings import PACKAGED_MODEL, EmbeddingConfig, TextEmbedder, resolve_model_path
    from ml.text import item_texts

    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    load_before = os.getloadavg()[0]
    items, _ = movielens_sample()
    texts = item_texts(items).tolist()[: arguments.limit]

    started = time.perf_counter()
    ours = TextEmbedder(
        EmbeddingConfig(
            batch_size=arguments.batch_size,
            max_length=arguments.max_length,
            device=arguments.device,
            precision=arguments.precision,
        )
    )
    our_load = time.perf_counter() - started
    device = ours.device

    started = time.perf_counter()
    theirs = SentenceTransformer(str(resolve_model_path(PACKAGED_MODEL)), device=str(device))
    theirs.max_seq_length = arguments.max_length
    if device.type == "cuda" and not arguments.their_float32:
        theirs.half()
    their_load = time.perf_counter() - started

    def encode_ours(batch: list[str]) -> np.ndarray:
        return ours.encode(batch)

    def encode_theirs(batch: list[str]) -> np.ndarray:
        vectors = theirs.encode(
            batch,
            batch_size=arguments.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def timed(encode: Encoder, batch: list[str]) -> tuple[float, np.ndarray]:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        began = time.perf_counter()
        vectors = encode(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - began, vectors

    encoders = {"ours": encode_ours, "theirs": encode_theirs}
    for encode in encoders.values():
        encode(texts[: arguments.warmup])
    bounds = np.linspace(0, len(texts), arguments.slices + 1).astype(int)
    seconds: dict[str, list[float]] = {name: [] for name in encoders}
    vectors: dict[str, np.ndarray] = {}
    turn = 0
    for _ in range(arguments.repeats):
        totals = dict.fromkeys(encoders, 0.0)
        parts: dict[str, list[np.ndarray]] = {name: [] for name in encoders}
        for start, end in zip(bounds[:-1], bounds[1:], strict=True):
            # Alternate who goes first, so a load spike from another process hits both alike.
            names = list(encoders) if turn % 2 == 0 else list(encoders)[::-1]
            turn += 1
            for name in names:
                took, part = timed(encoders[name], texts[start:end])
                totals[name] += took
                parts[name].append(part)
        for name in encoders:
            seconds[name].append(totals[name])
            vectors[name] = np.vstack(parts[name])
    our_seconds, their_seconds = seconds["ours"], seconds["theirs"]
    difference = float(np.abs(vectors["ours"] - vectors["theirs"]).max())
    lowest_cosine = float(np.min(np.sum(vectors["ours"] * vectors["theirs"], axis=1)))

    def rates(runs: list[float]) -> tuple[float, float]:
        return len(texts) / statistics.median(runs), len(texts) / min(runs)

    our_median, our_best = rates(our_seconds)
    their_median, their_best = rates(their_seconds)
    our_dtype = ours.precision
    their_dtype = str(next(theirs.parameters()).dtype).removeprefix("torch.")
    print(
        f"embedding throughput: {len(texts)} MovieLens item texts, model {PACKAGED_MODEL}, "
        f"device {device}, batch size {arguments.batch_size}, max length {arguments.max_length}, "
        f"{torch.get_num_threads()} torch threads"
    )
    print(
        f"{arguments.repeats} timed runs each in {arguments.slices} slice(s), alternating, after "
        f"{arguments.warmup} warm-up texts; load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after, on {os.cpu_count()} cores"
    )
    print_table(
        [
            ("implementation", "dtype", "load s", "texts/s best", "texts/s median"),
            (
                "freshrank TextEmbedder",
                our_dtype,
                f"{our_load:.2f}",
                f"{our_best:.1f}",
                f"{our_median:.1f}",
            ),
            (
                "sentence-transformers",
                their_dtype,
                f"{their_load:.2f}",
                f"{their_best:.1f}",
                f"{their_median:.1f}",
            ),
            (
                "ratio ours/theirs",
                "",
                "",
                f"{our_best / their_best:.2f}",
                f"{our_median / their_median:.2f}",
            ),
        ]
    )
    print(
        f"max abs difference between the two embeddings: {difference:.2e}; "
        f"lowest cosine of a text's two vectors: {lowest_cosine:.6f}"
    )
    print("(best: the least disturbed run; other processes on the machine only add time)")


if __name__ == "__main__":
    main()
