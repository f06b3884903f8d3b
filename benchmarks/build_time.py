"""How long the full build and `make demo` take on the packaged MovieLens sample, per stage.

Each command runs as a person runs it, in a fresh FRESHRANK_HOME, start-up included, with the
default settings (three evaluated backtest cuts, unlike the latency benchmarks' one):
`freshrank ingest` of the sample files, then `freshrank build` (dbt, checks, item embeddings,
backtests of every pipeline, registry, publish). The baseline in the same run is the same build
with only the popularity source (FRESHRANK_CANDIDATE_SOURCES=popularity): no co-visitation, text
index, item-kNN, EASE or ranker, so the ratio is what retrieve-and-rank costs. With --demo,
`freshrank demo` (ingest, build, publish, then the replay) runs too, against its 5-minute target.

    .venv/bin/python benchmarks/build_time.py [--demo] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import print_table  # noqa: E402
from benchmarks.deployment import CommandRun, freshrank  # noqa: E402

BUILD_TARGET_S = 180.0
DEMO_TARGET_S = 300.0


def write_sample(folder: Path) -> tuple[Path, Path]:
    from ml.datasets import movielens_sample

    items, events = movielens_sample()
    folder.mkdir(parents=True, exist_ok=True)
    items.to_csv(folder / "items.csv", index=False)
    events.to_csv(folder / "events.csv", index=False)
    return folder / "items.csv", folder / "events.csv"


def build(home: Path, items: Path, events: Path) -> tuple[CommandRun, CommandRun]:
    ingest = freshrank(home, "ingest", "--items", items, "--events", events)
    return ingest, freshrank(home, "build")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="also time `freshrank demo`")
    parser.add_argument("--keep", type=Path, help="build under this folder and keep it")
    arguments = parser.parse_args()
    root = arguments.keep or Path(tempfile.mkdtemp(prefix="freshrank-build-"))
    load = os.getloadavg()[0]
    items, events = write_sample(root / "inputs")

    os.environ.pop("FRESHRANK_CANDIDATE_SOURCES", None)
    ingest, full = build(root / "retrieve-and-rank", items, events)
    os.environ["FRESHRANK_CANDIDATE_SOURCES"] = "popularity"
    _, baseline = build(root / "popularity-only", items, events)
    os.environ.pop("FRESHRANK_CANDIDATE_SOURCES")
    demo = freshrank(root / "demo", "demo") if arguments.demo else None

    print(f"\nbuild time, packaged MovieLens sample (load average at start {load:.2f})")
    rows = [["command", "seconds", "target", "x popularity-only build"]]
    rows.append(["freshrank ingest", f"{ingest.seconds:.1f}", "", ""])
    rows.append(
        [
            "freshrank build",
            f"{full.seconds:.1f}",
            f"{BUILD_TARGET_S:.0f}",
            f"{full.seconds / baseline.seconds:.2f}",
        ]
    )
    rows.append(["freshrank build, popularity only", f"{baseline.seconds:.1f}", "", "1.00"])
    if demo is not None:
        rows.append(
            ["freshrank demo (with replay)", f"{demo.seconds:.1f}", f"{DEMO_TARGET_S:.0f}", ""]
        )
    print_table(rows)
    print("\nstages of `freshrank build` (seconds; popularity-only beside it)")
    baseline_stages = {step: seconds for step, _, seconds in baseline.stages()}
    stage_rows = [["stage", "status", "seconds", "popularity only"]]
    for step, status, seconds in full.stages():
        other = baseline_stages.get(step)
        stage_rows.append([step, status, f"{seconds:.1f}", "" if other is None else f"{other:.1f}"])
    print_table(stage_rows)
    if demo is not None:
        print("\nstages of `freshrank demo`")
        print_table(
            [["stage", "status", "seconds"]] + [[s, st, f"{x:.1f}"] for s, st, x in demo.stages()]
        )
    if arguments.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
