"""Seconds a block of users' text features cost as the catalog grows.

Ranking gives every (user, candidate) pair three text features: the cosine with the user's
query (the recency-weighted sum of their recent items' vectors, what the FAISS index searches
with) and the mean and max cosine with their recent items. `TextNeighbourSource.pair_similarity`
takes all three from one small product per user, their candidates against their own recent
items. The baseline, in the same run on the same pairs, is what the query's cosine cost before:
one product of every user's query with every distinct candidate of the block (users x distinct
items x dimensions, which grows with the catalog), plus the same per-user products for the mean
and the max. Both are timed on one thread, as a ranking worker runs.

Synthetic unit vectors (clustered, 384 dimensions), 1,000 users with 10 recent items each and
250 candidates drawn by a power law of popularity, at 10,000 and 100,000 items (the catalogs of
`scale.py`'s 1 and 10 million events). Prints the best of ``--repeats`` seconds per block, the
ratio this code / baseline, and the largest difference between the two query cosines. The draw
spreads wider than real candidates do: a 1,000-user block of the 10-million deployment held
33,613 distinct candidates, not 66,000, so the ratio at 100,000 items overstates the gain there
(scoring that log was not measurably faster).

    .venv/bin/python benchmarks/text_features.py [--items 10000 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from common import print_table
from threadpoolctl import threadpool_limits

from ml.constants import ITEM_ID, USER_ID
from ml.pipeline.sources import RECENCY, TextNeighbourSource

DIMENSIONS = 384
USERS = 1_000
RECENT = 10
CANDIDATES = 250


def fitted_source(items: int, rng: np.random.Generator) -> TextNeighbourSource:
    """A text source over `items` clustered unit vectors (an exact index: the search is not
    what is measured)."""
    centres = rng.standard_normal((max(items // 500, 1), DIMENSIONS))
    vectors = centres[rng.integers(0, len(centres), items)]
    vectors += 0.7 * rng.standard_normal((items, DIMENSIONS))
    ids = pd.Index([f"i{n}" for n in range(items)], name=ITEM_ID)
    source = TextNeighbourSource()
    source.vectors = np.ascontiguousarray(
        (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    )
    source.item_ids = ids.to_numpy(dtype=object)
    source._positions = ids
    source.index = True  # anything but None: the features need vectors, not a search
    return source


def block(source: TextNeighbourSource, rng: np.random.Generator) -> tuple[pd.DataFrame, ...]:
    """(pairs, recent) of one block of users, items drawn by a power law of popularity."""
    items = len(source.item_ids)
    weights = 1.0 / np.arange(1, items + 1) ** 0.8
    weights /= weights.sum()
    users = np.array([f"u{n:05d}" for n in range(USERS)], dtype=object)
    drawn = rng.choice(items, size=(USERS, CANDIDATES), p=weights)
    pairs = pd.DataFrame(
        {USER_ID: np.repeat(users, CANDIDATES), ITEM_ID: source.item_ids[drawn.ravel()]}
    )
    pairs = pairs.drop_duplicates().reset_index(drop=True)
    recent = pd.DataFrame(
        {
            USER_ID: np.repeat(users, RECENT),
            ITEM_ID: source.item_ids[rng.choice(items, USERS * RECENT, p=weights)],
            RECENCY: np.tile(np.arange(RECENT), USERS),
        }
    )
    return pairs, recent


def baseline(source: TextNeighbourSource, pairs: pd.DataFrame, recent: pd.DataFrame) -> np.ndarray:
    """The query cosines as a product of every query with every distinct candidate, and the
    per-user products of the mean and the max beside it (the earlier code's work)."""
    users, queries = source.queries(recent)
    item_rows = source.rows(pairs[ITEM_ID])
    user_rows = pd.Index(users).get_indexer(pairs[USER_ID])
    distinct, codes = np.unique(item_rows, return_inverse=True)
    products = queries @ source.vectors[distinct].T
    history = recent[recent[RECENCY] < source.query_length]
    source.recent_similarity(pairs, history)
    return products[user_rows, codes]


def best_seconds(run, arguments: tuple, repeats: int) -> tuple[float, object]:
    """The fastest of ``repeats`` calls of run(*arguments), and its result."""
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run(*arguments)
        seconds.append(time.perf_counter() - started)
    return min(seconds), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = [["catalog items", "pairs", "distinct candidates", "this code s", "baseline s",
             "ratio", "largest difference"]]  # fmt: skip
    with threadpool_limits(limits=1):
        for items in args.items:
            source = fitted_source(items, rng)
            pairs, recent = block(source, rng)
            ours, features = best_seconds(source.pair_similarity, (pairs, recent), args.repeats)
            theirs, query = best_seconds(baseline, (source, pairs, recent), args.repeats)
            difference = np.nanmax(np.abs(features["text"].to_numpy() - query))
            rows.append(
                [
                    f"{items:,}",
                    f"{len(pairs):,}",
                    f"{pairs[ITEM_ID].nunique():,}",
                    f"{ours:.3f}",
                    f"{theirs:.3f}",
                    f"{ours / theirs:.2f}",
                    f"{difference:.1e}",
                ]
            )
    print(f"text features of one block of {USERS:,} users ({CANDIDATES} drawn candidates each,")
    print(f"{RECENT} recent items), best of {args.repeats}, one thread; baseline: every query x")
    print("every distinct candidate, then the per-user mean and max")
    print_table(rows)


if __name__ == "__main__":
    main()
