"""The build's backtests alone on a built deployment: seconds, and peak memory of all processes.

`freshrank build` runs every stage; at 10 million events the backtests are the stage whose
memory decides whether the build fits the machine (their cut workers each hold the snapshot).
This runs just that stage, as the model asset configures it (`backtest_config`,
`pipeline_config`), on the warehouse of an existing FRESHRANK_HOME (a `scale.py --keep` home,
say), in a child process whose tree's resident memory is sampled as scale.py samples it. It
prints the snapshot read, the backtests' seconds, the winner, the peak of the largest process
and of all processes together, and the backtest summary.

The baseline, in the same run with --baseline DIR: the same command with the code in DIR (a
worktree of an earlier commit) on PYTHONPATH; the ratios are this code's over the baseline's.

    .venv/bin/python benchmarks/backtest_memory.py --home DIR [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import print_table
from scale import TreeMemory

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, logging, resource, time
from ml.pipeline.backtest import run_backtests
from orchestration.model.assets import backtest_config, pipeline_config
from orchestration.settings import get_settings
from orchestration.warehouse.reads import load_snapshot

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
settings = get_settings()
started = time.perf_counter()
snapshot = load_snapshot(settings)
read = time.perf_counter() - started
result = run_backtests(snapshot, pipeline_config(settings), backtest_config(settings))
print(result.summary.iloc[:, :5].to_string(), flush=True)
print("RESULT " + json.dumps({
    "events": len(snapshot.interactions),
    "read_seconds": read,
    "backtest_seconds": result.seconds,
    "winner": result.winner,
    "largest_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}), flush=True)
"""


def measure(home: Path, code: Path, limit_mb: float) -> dict:
    """The backtests on ``home`` with the code in ``code``; their figures and the tree's peak."""
    environment = {**os.environ, "FRESHRANK_HOME": str(home), "PYTHONPATH": str(code)}
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        env=environment,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    memory = TreeMemory(child.pid, limit_mb=limit_mb)
    memory.start()
    output, _ = child.communicate()
    peak = memory.stop()
    if child.returncode != 0:
        raise SystemExit(f"the backtests with {code} exited {child.returncode}")
    lines = output.splitlines()
    print("\n".join(line for line in lines if not line.startswith("RESULT ")), flush=True)
    (result,) = [json.loads(line[7:]) for line in lines if line.startswith("RESULT ")]
    # Sampled every half second, the tree's peak can miss the child's own exact one.
    all_mb = max(peak, result["largest_mb"])
    return {**result, "wall_seconds": time.perf_counter() - started, "all_mb": all_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="a built FRESHRANK_HOME")
    parser.add_argument("--baseline", type=Path, help="the code to compare with (a worktree)")
    parser.add_argument("--memory-limit-mb", type=float, default=20_000)
    arguments = parser.parse_args()
    runs = {"this code": measure(arguments.home, ROOT, arguments.memory_limit_mb)}
    if arguments.baseline is not None:
        runs["baseline"] = measure(arguments.home, arguments.baseline, arguments.memory_limit_mb)
    rows = [["code", "events", "read s", "backtests s", "winner", "largest MB", "all MB"]]
    for label, run in runs.items():
        rows.append(
            [
                label,
                f"{run['events']:,}",
                f"{run['read_seconds']:.1f}",
                f"{run['backtest_seconds']:.1f}",
                run["winner"],
                f"{run['largest_mb']:,.0f}",
                f"{run['all_mb']:,.0f}",
            ]
        )
    print()
    print_table(rows)
    if "baseline" in runs:
        ours, theirs = runs["this code"], runs["baseline"]
        time_ratio = ours["backtest_seconds"] / theirs["backtest_seconds"]
        memory_ratio = ours["all_mb"] / theirs["all_mb"]
        print(
            f"this code / baseline: backtests {time_ratio:.2f}x time, {memory_ratio:.2f}x memory "
            "(all processes)"
        )


if __name__ == "__main__":
    main()
