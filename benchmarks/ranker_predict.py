"""Ranker prediction: the trees compiled by lleaves (LLVM) against LightGBM's own predict.

A ranker with the default settings (RankerConfig: 150 trees of 7 leaves per model, 3 bagged
models) is trained on seeded synthetic candidate rows shaped like serving's (39 features, some
missing, about 5% chosen), then predicts a block of new rows (200,000 by default: about 1,000
users' candidates) with LightGBM (the baseline) and with the compiled trees, on one thread and on
every core this process may use. Also printed: the first compile of the bagged models, and the
load of the cached objects that a later process does instead. The largest difference between the
two predictions is printed too (they must agree).

    .venv/bin/python benchmarks/ranker_predict.py [--rows 200000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import print_table, quiet_logging  # noqa: E402
from ml.constants import ITEM_ID, USER_ID  # noqa: E402
from ml.pipeline.ranker import LABEL, Ranker, RankerConfig  # noqa: E402

FEATURES = 39
CANDIDATES_PER_USER = 200


def candidate_rows(rows: int, seed: int) -> pd.DataFrame:
    """Seeded rows of CANDIDATES_PER_USER per user; the label follows a few features."""
    random = np.random.default_rng(seed)
    values = random.gamma(0.5, size=(rows, FEATURES))
    values[random.uniform(size=values.shape) < 0.1] = np.nan  # ranks and cosines can be missing
    frame = pd.DataFrame(values, columns=[f"feature_{n:02d}" for n in range(FEATURES)])
    users = rows // CANDIDATES_PER_USER + 1
    frame.insert(0, USER_ID, np.repeat(np.arange(users), CANDIDATES_PER_USER)[:rows].astype(str))
    frame.insert(1, ITEM_ID, np.arange(rows).astype(str))
    signal = np.nan_to_num(values[:, 0] + 0.5 * values[:, 1] - 0.3 * values[:, 2])
    frame[LABEL] = (signal + random.normal(scale=0.5, size=rows) > 1.8).astype(int)
    return frame


def on_threads(ranker: Ranker, threads: int) -> Ranker:
    """The same fitted (and, if so, compiled) ranker, predicting on ``threads`` threads."""
    other = Ranker(RankerConfig(predict_threads=threads))
    other.__dict__.update({**ranker.__dict__, "config": other.config})
    return other


def timed(predict, repeats: int) -> tuple[float, np.ndarray]:
    """(median seconds, the last prediction)."""
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = predict()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows predicted at once")
    parser.add_argument("--training-rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()
    quiet_logging()
    cores = len(os.sched_getaffinity(0))
    config = RankerConfig()
    training = candidate_rows(arguments.training_rows, seed=1)
    features = [column for column in training.columns if column.startswith("feature_")]
    ranker = Ranker(config).fit(training, features)
    block = candidate_rows(arguments.rows, seed=2)
    print(
        f"ranker predict: {config.bagged_models} models x {config.n_estimators} trees of "
        f"{config.num_leaves} leaves, {FEATURES} features; {arguments.rows:,} rows at once; "
        f"median of {arguments.repeats}; {cores} core(s); load average "
        f"{os.getloadavg()[0]:.2f} before"
    )
    results: dict[str, float] = {}
    predictions: dict[str, np.ndarray] = {}
    for threads in sorted({1, cores}):
        name = f"LightGBM, {threads} thread(s)"
        one = on_threads(ranker, threads)
        results[name], predictions[name] = timed(
            lambda one=one: one.predict(block), arguments.repeats
        )
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        ranker.compile(Path(cache))
        compile_seconds = time.perf_counter() - started
        later = pickle.loads(pickle.dumps(ranker))  # what a later process holds: the texts
        started = time.perf_counter()
        later.compile(Path(cache))
        load_seconds = time.perf_counter() - started
        for threads in sorted({1, cores}):
            name = f"lleaves, {threads} thread(s)"
            one = on_threads(ranker, threads)
            results[name], predictions[name] = timed(
                lambda one=one: one.predict(block), arguments.repeats
            )
    baseline = results["LightGBM, 1 thread(s)"]
    rows = [["predict", "seconds", "rows/s", "x LightGBM 1 thread"]]
    for name, seconds in results.items():
        rows.append(
            [
                name,
                f"{seconds:.3f}",
                f"{arguments.rows / seconds:,.0f}",
                f"{baseline / seconds:.2f}",
            ]
        )
    print_table(rows)
    reference = predictions["LightGBM, 1 thread(s)"]
    largest = max(float(np.abs(value - reference).max()) for value in predictions.values())
    print(
        f"compile (first time, {config.bagged_models} models): {compile_seconds:.2f} s; "
        f"a later process loading the cached objects: {load_seconds:.3f} s"
    )
    print(f"largest difference from LightGBM's prediction: {largest:.1e}")
    print(f"load average {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
