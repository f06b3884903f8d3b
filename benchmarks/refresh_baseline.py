"""The cold refresh path with this code against an earlier commit's, alternating on one deployment.

A shared 2-core machine's speed drifts by a quarter within an hour, so a refresh timed today
cannot be set against one timed yesterday. Here both codes run the same path on the same
deployment in the same minutes: `freshrank ingest --events batch.csv`, then `freshrank
refresh`, each a subprocess (start-up included), for a new 1,000-event batch each time (seeded,
drawn as refresh_latency.py draws them). The codes alternate round by round, so a busy spell
falls on both; the first round of each code is a warm-up (each code's dbt project starts from
its own parse) and is left out. Printed: the medians of ingest, refresh and their sum per code,
the stages that cost most, and the ratio this code / baseline (below 1: this code is faster).

The baseline is a worktree of the earlier commit, e.g. `git worktree add /tmp/base <commit>`;
its dbt project gets this checkout's manifest.json when it has none. The deployment is any
built one (`refresh_latency.py --home DIR` builds and keeps one); every batch stays in it.

    .venv/bin/python benchmarks/refresh_baseline.py --home DIR --baseline DIR [--rounds 4]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import print_table
from deployment import CommandRun, run, write_batch

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = Path("dbt_project") / "target" / "manifest.json"
STAGES_SHOWN = ("warehouse_dbt_models", "recommendation_lists", "published_recommendations")


def cli(home: Path, code: Path, *arguments: object) -> CommandRun:
    """`freshrank ARGUMENTS` on ``home`` with the code in ``code``: the module its console
    script runs, wherever that code keeps it."""
    return run(home, [sys.executable, "-m", console_module(code), *arguments], code=code)


def console_module(code: Path) -> str:
    """The module behind `freshrank` in the checkout ``code``: `orchestration.app.launcher`;
    `orchestration.launcher` before the app had a package of its own; `orchestration.cli`
    in code older than the launcher."""
    for module in ("orchestration.app.launcher", "orchestration.launcher"):
        if (code / (module.replace(".", "/") + ".py")).exists():
            return module
    return "orchestration.cli"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="a built FRESHRANK_HOME")
    parser.add_argument("--baseline", type=Path, required=True, help="the earlier code (worktree)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds (first: warm-up)")
    parser.add_argument("--size", type=int, default=1_000, help="events per batch")
    parser.add_argument("--seed", type=int, default=11)
    arguments = parser.parse_args()
    if arguments.rounds < 2:
        parser.error("--rounds must be at least 2: the first round is a warm-up")
    manifest = arguments.baseline / MANIFEST
    if not manifest.exists():
        manifest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / MANIFEST, manifest)
    codes = {"this code": ROOT, "baseline": arguments.baseline.resolve()}
    rng = np.random.default_rng(arguments.seed)
    scratch = Path(tempfile.mkdtemp(prefix="freshrank-refresh-baseline-"))
    timings: dict[str, list[dict[str, float]]] = {label: [] for label in codes}
    try:
        for round_number in range(arguments.rounds):
            for label, code in codes.items():
                batch = scratch / f"batch-{round_number}-{len(timings[label])}.csv"
                write_batch(arguments.home, batch, arguments.size, rng)
                ingest = cli(arguments.home, code, "ingest", "--events", batch)
                refresh = cli(arguments.home, code, "refresh")
                figures = {"ingest": ingest.seconds, "refresh": refresh.seconds}
                figures.update({step: seconds for step, _, seconds in refresh.stages()})
                print(
                    f"  round {round_number + 1} {label}: ingest {ingest.seconds:.2f} s + "
                    f"refresh {refresh.seconds:.2f} s",
                    flush=True,
                )
                if round_number > 0:
                    timings[label].append(figures)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    def median(label: str, name: str) -> float:
        return statistics.median(run.get(name, 0.0) for run in timings[label])

    names = ["ingest", "refresh", *STAGES_SHOWN]
    totals = {
        label: statistics.median(run["ingest"] + run["refresh"] for run in runs)
        for label, runs in timings.items()
    }
    rows = [["code", *(f"{name} s" for name in names), "ingest + refresh s", "ratio"]]
    for label in codes:
        rows.append(
            [
                label,
                *(f"{median(label, name):.2f}" for name in names),
                f"{totals[label]:.2f}",
                f"{totals[label] / totals['baseline']:.2f}",
            ]
        )
    print(
        f"\ncold ingest + refresh of {arguments.size:,}-event batches on {arguments.home}, "
        f"medians of {arguments.rounds - 1} alternating rounds after a warm-up; baseline "
        f"{arguments.baseline}"
    )
    print_table(rows)


if __name__ == "__main__":
    main()
