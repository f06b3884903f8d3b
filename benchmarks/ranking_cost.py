"""Milliseconds a user of ranking: the serving pipeline on a built deployment, beside other code.

What a refresh and a full publish spend most of their time on is `RankingPipeline.
recommend_with_candidates` (candidates, features, the ranker, rules, reasons, each user's
candidate pool). This loads a built FRESHRANK_HOME's serving state (the champion's pipeline as
the last publish left it) and ranks the same users several times in one process, after one
untimed warm-up, and prints the best and the median seconds and milliseconds a user. With a
baseline, the runs alternate (``--rounds``, 2 by default) so that a busy spell of a shared
machine falls on both codes; each code keeps its best and its lowest median.

The baseline, in the same run with --baseline DIR: the same child with the code in DIR (a
worktree of an earlier commit) on PYTHONPATH, on the same home and users. The two runs' lists
and candidate pools are compared row by row (same users, items, ranks, scores and reasons);
the ratio is this code's best over the baseline's.

With --busy N, N processes that only spin keep the cores busy while both codes rank: what a
refresh's ranking meets beside its helper loading the state, dbt, or the Dagster daemon (threaded
BLAS and OpenMP code slows down many times over there, and the median says it).

    .venv/bin/python benchmarks/ranking_cost.py --home DIR [--users 500] [--baseline DIR] [--busy 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common import print_table

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, statistics, sys, time
import pandas as pd
from orchestration.serving.scoring import champion_version
from orchestration.serving.state import load_state
from orchestration.settings import get_settings
from orchestration.warehouse.guard import open_warehouse
from orchestration.warehouse.reads import read_user_behaviour

count, repeats, output = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
settings = get_settings()
with open_warehouse(settings.warehouse_path, read_only=True) as connection:
    state = load_state(settings, champion_version(settings), connection)
    if state is None:
        raise SystemExit("no current serving state: run `freshrank build` (or a refresh) first")
    users = [row[0] for row in connection.execute(
        "select distinct user_id from marts.interactions order by user_id").fetchall()]
    # Every k-th user, so the sample spreads over the id range.
    chosen = users[:: max(1, len(users) // count)][:count]
    behaviour = read_user_behaviour(connection, chosen)
pipeline = state.pipeline
pipeline.compile_ranker(settings.compiled_rankers)
pipeline.recommend_with_candidates(behaviour, candidates=settings.serving_candidates)
seconds = []
for _ in range(repeats):
    started = time.perf_counter()
    lists, pool = pipeline.recommend_with_candidates(
        behaviour, candidates=settings.serving_candidates)
    seconds.append(time.perf_counter() - started)
pd.to_pickle((lists, pool), output)
print("RESULT " + json.dumps({"users": len(chosen), "best": min(seconds),
                              "median": statistics.median(seconds)}), flush=True)
"""


def measure(home: Path, code: Path, users: int, repeats: int, output: Path) -> dict:
    """Rank ``users`` users of ``home`` with the code in ``code``; the lists go to ``output``."""
    environment = {**os.environ, "FRESHRANK_HOME": str(home), "PYTHONPATH": str(code)}
    completed = subprocess.run(
        [sys.executable, "-c", CHILD, str(users), str(repeats), str(output)],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise SystemExit(f"ranking with {code} failed:\n{completed.stderr[-3000:]}")
    (line,) = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(line[len("RESULT ") :])


@contextmanager
def busy_neighbours(count: int) -> Iterator[None]:
    """``count`` processes that spin on a core each while the block runs (ended by PID)."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def same_lists(first: Path, second: Path) -> str:
    """Whether two runs' (lists, pools) are the same, row by row; what differs if not."""
    import pandas as pd

    verdicts = []
    for name, ours, theirs in zip(
        ("lists", "candidate pools"), pd.read_pickle(first), pd.read_pickle(second), strict=True
    ):
        ours, theirs = ours.reset_index(drop=True), theirs.reset_index(drop=True)
        if ours.equals(theirs):
            verdicts.append(f"{name} identical ({len(ours):,} rows)")
        else:
            verdicts.append(f"{name} DIFFER ({len(ours):,} rows against {len(theirs):,})")
    return "; ".join(verdicts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="a built FRESHRANK_HOME")
    parser.add_argument("--users", type=int, default=500, help="users ranked per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="alternating child runs per code")
    parser.add_argument("--baseline", type=Path, help="the code to compare with (a worktree)")
    parser.add_argument("--busy", type=int, default=0, help="spinning neighbour processes")
    arguments = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="freshrank-ranking-"))
    codes = {"this code": ROOT}
    if arguments.baseline is not None:
        codes["baseline"] = arguments.baseline
    # Rounds alternate between the codes, so a busy spell of the machine falls on both.
    runs: dict[str, dict] = {}
    with busy_neighbours(arguments.busy):
        for _ in range(arguments.rounds):
            for index, (label, code) in enumerate(codes.items()):
                run = measure(
                    arguments.home,
                    code,
                    arguments.users,
                    arguments.repeats,
                    scratch / f"{index}.pkl",
                )
                if label in runs:
                    run["best"] = min(run["best"], runs[label]["best"])
                    run["median"] = min(run["median"], runs[label]["median"])
                runs[label] = run
    rows = [["code", "users", "best s", "median s", "best ms/user", "ratio"]]
    for label, run in runs.items():
        ratio = run["best"] / runs["baseline"]["best"] if "baseline" in runs else 1.0
        rows.append(
            [
                label,
                f"{run['users']:,}",
                f"{run['best']:.2f}",
                f"{run['median']:.2f}",
                f"{1000 * run['best'] / run['users']:.2f}",
                f"{ratio:.2f}",
            ]
        )
    print(
        f"ranking cost on {arguments.home}: {arguments.rounds} alternating rounds of "
        f"{arguments.repeats} repeats after a warm-up (best and lowest median of the rounds), "
        f"{arguments.busy} busy neighbour process(es)"
    )
    print_table(rows)
    if "baseline" in runs:
        print(same_lists(scratch / "0.pkl", scratch / "1.pkl"))


if __name__ == "__main__":
    main()
