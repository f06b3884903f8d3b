"""The text source's vector search: recall and milliseconds a query, HNSW settings against exact.

Above EXACT_INDEX_MAX_ITEMS catalog items the text source searches an HNSW graph (FAISS) for
each user's query (the recency-weighted mean of their recent items' vectors). This loads a built
FRESHRANK_HOME's serving state, makes the queries of --users users the way ranking makes them,
and searches them (one thread, as a ranking worker does) with:

- exact search (IndexFlatIP): the truth recall is measured against, and a cost baseline;
- the serving state's own graph, at its efSearch and at others (a search-time setting);
- the same graph shape over 8-bit scalar-quantised vectors (IndexHNSWSQ), built here.

Each row gives recall@W (W = the neighbours ranking asks for: per_user + query_length), the
milliseconds a query, and the ratio of its time to the served setting's, in the same run.

    .venv/bin/python benchmarks/text_index.py --home DIR [--users 2000]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from common import print_table, quiet_logging


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="a built FRESHRANK_HOME")
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument(
        "--ef", type=int, nargs="+", default=[64, 96, 256], help="other efSearch values"
    )
    return parser.parse_args()


def served_text_source(home: Path, users: int):
    """(the serving state's text source, the chosen users' query vectors)."""
    os.environ["FRESHRANK_HOME"] = str(home)
    from orchestration.serving.scoring import champion_version
    from orchestration.serving.state import load_state
    from orchestration.settings import get_settings
    from orchestration.warehouse.guard import open_warehouse
    from orchestration.warehouse.reads import read_user_behaviour

    settings = get_settings()
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        state = load_state(settings, champion_version(settings), connection)
        if state is None:
            raise SystemExit("no current serving state: run `freshrank build` first")
        ids = [
            row[0]
            for row in connection.execute(
                "select distinct user_id from marts.interactions order by user_id"
            ).fetchall()
        ]
        chosen = ids[:: max(1, len(ids) // users)][:users]
        behaviour = read_user_behaviour(connection, chosen)
    text = state.pipeline.sources.get("text")
    if text is None or text.index is None:
        raise SystemExit("the serving pipeline has no text source with an index")
    recent = behaviour.recent_items(state.pipeline.config.history_length)
    _, queries = text.queries(recent)
    return text, queries


def timed_search(index, queries: np.ndarray, width: int) -> tuple[np.ndarray, float]:
    """(neighbours, milliseconds a query), best of two passes."""
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        _, neighbours = index.search(queries, width)
        best = min(best, time.perf_counter() - started)
    return neighbours, 1_000 * best / len(queries)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's true neighbours that were found."""
    hits = [
        len(np.intersect1d(mine, true[true >= 0])) for mine, true in zip(found, truth, strict=True)
    ]
    return float(np.sum(hits) / max(int((truth >= 0).sum()), 1))


def main() -> None:
    quiet_logging()
    arguments = parse_arguments()
    import faiss

    text, queries = served_text_source(arguments.home, arguments.users)
    faiss.omp_set_num_threads(1)  # a ranking worker searches on one thread
    width = min(text.per_user + text.query_length, len(text.item_ids))
    vectors = text.vectors
    dimension = vectors.shape[1]
    exact = faiss.IndexFlatIP(dimension)
    exact.add(vectors)
    truth, exact_ms = timed_search(exact, queries, width)

    served = text.index
    results: list[tuple[str, float, float]] = [("exact (IndexFlatIP)", 1.0, exact_ms)]
    if isinstance(served, faiss.IndexHNSW):
        served_ef = served.hnsw.efSearch
        found, served_ms = timed_search(served, queries, width)
        results.append((f"served HNSW, efSearch {served_ef}", recall(found, truth), served_ms))
        for ef in arguments.ef:
            served.hnsw.efSearch = ef  # FAISS returns W results even when efSearch < W
            found, ms = timed_search(served, queries, width)
            label = f"served HNSW, efSearch {served.hnsw.efSearch}"
            results.append((label, recall(found, truth), ms))
        served.hnsw.efSearch = served_ef
        started = time.perf_counter()
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        quantised = faiss.IndexHNSWSQ(
            dimension,
            faiss.ScalarQuantizer.QT_8bit,
            served.hnsw.nb_neighbors(1),
            faiss.METRIC_INNER_PRODUCT,
        )
        quantised.train(vectors)
        quantised.add(vectors)
        built = time.perf_counter() - started
        faiss.omp_set_num_threads(1)
        quantised.hnsw.efSearch = served_ef
        found, ms = timed_search(quantised, queries, width)
        results.append((f"HNSW over 8-bit vectors, efSearch {served_ef}", recall(found, truth), ms))
    else:
        served_ms = exact_ms
        built = 0.0

    print(
        f"\ntext index on {arguments.home}: {len(text.item_ids):,} items x {dimension}, "
        f"{len(queries):,} user queries, {width} neighbours a query, one thread"
        + (f"; the 8-bit graph took {built:.1f} s to build" if built else "")
    )
    rows = [("index", f"recall@{width}", "ms/query", "x served")]
    rows += [
        (label, f"{found:.4f}", f"{ms:.3f}", f"{ms / served_ms:.2f}")
        for label, found, ms in results
    ]
    print_table(rows)


if __name__ == "__main__":
    main()
