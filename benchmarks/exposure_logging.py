"""What logging exposures costs a read: GET /recommendations with and without a running experiment.

A serving store (SQLite, the default) is filled with synthetic lists of --users users (10 items
each) and a trending list; `freshrank serve` runs on it on 127.0.0.1 (a free port). One client
(httpx, one keep-alive connection, requests one after another) reads random published users.
Rounds alternate, so drift on a shared machine hits both sides alike:

- baseline: no experiment; the published list is read;
- experiment: an experiment enrolling every user (two variants, half each) runs; the read
  assigns the user (SHA-256), reads the variant's list and inserts one exposure row.

Each round starts a fresh experiment (names are never reused) and waits out the API's 2-second
lookup of the running experiment before timing. Reported: p50, p99 and mean per side, their
differences, and the exposure rows written against the reads made (they must be equal). Then
the insert alone, in-process: the mean of --inserts ExperimentStore.log_exposure calls.

    .venv/bin/python benchmarks/exposure_logging.py [--users 10000] [--requests 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import sqlalchemy as sa
from api_latency import free_port, start_server, stop_server
from common import print_table, quiet_logging

from ml.experiments.assignment import ExperimentDesign, Variant
from orchestration.experiments.store import RUNNING_LOOKUP_SECONDS, ExperimentStore
from orchestration.serving.store import ServingStore

K = 10
GENERATED = datetime(2026, 1, 1, 12, 0, 0)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000, help="published users")
    parser.add_argument("--requests", type=int, default=1_000, help="timed reads per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side")
    parser.add_argument("--warmup", type=int, default=100, help="untimed reads per round")
    parser.add_argument("--inserts", type=int, default=2_000, help="in-process inserts timed")
    parser.add_argument("--seed", type=int, default=5)
    return parser.parse_args()


def synthetic_lists(users: list[str], label: str) -> pd.DataFrame:
    """K rows per user: items item-<user>-<rank>, falling scores."""
    ranks = np.tile(np.arange(1, K + 1), len(users))
    owners = np.repeat(users, K)
    return pd.DataFrame(
        {
            "user_id": owners,
            "rank": ranks,
            "item_id": [f"item-{owner}-{rank}" for owner, rank in zip(owners, ranks, strict=True)],
            "score": 1.0 / ranks,
            "reason": "popular now",
            "model_version": label,
            "generated_at": GENERATED,
        }
    )


def start_experiment(experiments: ExperimentStore, number: int, users: list[str]) -> str:
    """A fresh experiment enrolling everyone, its two variants' lists published."""
    name = f"bench-{number}"
    design = ExperimentDesign(
        name, (Variant("A", 0.5, "champion", "1"), Variant("B", 0.5, "challenger", "2"))
    )
    experiments.start(design)
    lists = synthetic_lists(users, "freshrank-ranking/1:ranker")
    lists["variant"] = [design.assign(user) for user in lists["user_id"]]
    experiments.publish_lists(name, lists)
    return name


def timed_reads(
    client: httpx.Client, users: list[str], count: int, warmup: int, rng: np.random.Generator
) -> list[float]:
    """Milliseconds of ``count`` reads of random users, after ``warmup`` untimed ones."""
    timings = []
    for number in range(warmup + count):
        user = users[rng.integers(len(users))]
        started = time.perf_counter()
        response = client.get(f"/recommendations/{user}", params={"k": K})
        body = response.json()
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200 or len(body["items"]) != K:
            raise RuntimeError(f"read of {user} failed: HTTP {response.status_code} {body}")
        if number >= warmup:
            timings.append(elapsed)
    return timings


def insert_cost(experiments: ExperimentStore, name: str, inserts: int) -> float:
    """Mean milliseconds of one log_exposure, in-process."""
    assignment = experiments.assigned("u0")
    items = [f"item-u0-{rank}" for rank in range(1, K + 1)]
    started = time.perf_counter()
    for _ in range(inserts):
        experiments.log_exposure(assignment, "u0", items, "freshrank-ranking/1:ranker")
    return (time.perf_counter() - started) * 1000 / inserts


def main() -> None:
    arguments = parse_arguments()
    quiet_logging()
    home = Path(tempfile.mkdtemp(prefix="freshrank-exposures-"))
    server = None
    try:
        users = [f"u{number}" for number in range(arguments.users)]
        store = ServingStore(f"sqlite:///{home / 'serving.db'}")
        trending = synthetic_lists(["t"], "trending").drop(columns="user_id")
        store.publish(synthetic_lists(users, "freshrank-ranking/1:ranker"), trending=trending)
        experiments = ExperimentStore(store.engine)
        port = free_port()
        server = start_server(home, port, home / "serve.log")
        rng = np.random.default_rng(arguments.seed)
        sides: dict[str, list[float]] = {"baseline": [], "experiment": []}
        reads_logged = 0
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as client:
            for number in range(arguments.rounds):
                sides["baseline"] += timed_reads(
                    client, users, arguments.requests, arguments.warmup, rng
                )
                name = start_experiment(experiments, number, users)
                time.sleep(RUNNING_LOOKUP_SECONDS + 0.5)  # the API sees it running
                sides["experiment"] += timed_reads(
                    client, users, arguments.requests, arguments.warmup, rng
                )
                reads_logged += arguments.requests + arguments.warmup
                experiments.stop(name)
                time.sleep(RUNNING_LOOKUP_SECONDS + 0.5)
        with store.engine.connect() as connection:
            (exposures,) = connection.execute(sa.text("select count(*) from exposures")).one()
        stop_server(server)
        server = None
        name = start_experiment(experiments, arguments.rounds, users)
        per_insert = insert_cost(experiments, name, arguments.inserts)
        store.dispose()

        rows = [["side", "reads", "p50 ms", "p99 ms", "mean ms"]]
        figures = {}
        for side, timings in sides.items():
            values = np.asarray(timings)
            figures[side] = (np.percentile(values, 50), np.percentile(values, 99), values.mean())
            rows.append([side, str(len(values)), *(f"{figure:.2f}" for figure in figures[side])])
        difference = [
            experiment - baseline
            for experiment, baseline in zip(figures["experiment"], figures["baseline"], strict=True)
        ]
        rows.append(["difference", "", *(f"{figure:+.2f}" for figure in difference)])
        print(f"{arguments.users} published users, {arguments.rounds} rounds per side:")
        print_table(rows)
        print(f"exposure rows written: {exposures} for {reads_logged} reads in experiments")
        print(
            f"log_exposure alone, in-process: {per_insert:.3f} ms per insert "
            f"(mean of {arguments.inserts})"
        )
    finally:
        if server is not None:
            stop_server(server)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
