"""The same build three ways: default, `FRESHRANK_COMPUTE=ray`, `FRESHRANK_DBT_TARGET=spark`.

Each is `freshrank ingest` of the packaged sample and `freshrank build` in a fresh FRESHRANK_HOME
(subprocesses, start-up included, the default three backtest cuts as in build_time.py), then
`freshrank export` of the published lists. Prints each build's seconds against the default's,
whether the lists are the same (user, rank, item identical; largest score difference) and any
process a build left behind (Ray or Spark would show up here).

    .venv/bin/python benchmarks/scale_out_builds.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.build_time import build, write_sample  # noqa: E402
from benchmarks.common import print_table  # noqa: E402
from benchmarks.deployment import freshrank  # noqa: E402
from ml.distributed.session import descendant_processes  # noqa: E402

VARIANTS = {
    "default": {},
    "FRESHRANK_COMPUTE=ray": {"FRESHRANK_COMPUTE": "ray", "FRESHRANK_RAY_NUM_CPUS": "2"},
    "FRESHRANK_DBT_TARGET=spark": {"FRESHRANK_DBT_TARGET": "spark"},
}
KEY = ["user_id", "rank", "item_id"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="build under this folder and keep it")
    arguments = parser.parse_args()
    root = arguments.keep or Path(tempfile.mkdtemp(prefix="freshrank-scale-out-"))
    items, events = write_sample(root / "inputs")
    rows = [("build", "seconds", "vs default", "same lists", "max score diff", "left running")]
    reference, reference_seconds = None, None
    for name, variables in VARIANTS.items():
        home = root / name.split("=")[-1]
        before = descendant_processes()
        os.environ.update(variables)
        try:
            _, built = build(home, items, events)
            freshrank(home, "export", "--out", home / "lists.parquet")
        finally:
            for variable in variables:
                os.environ.pop(variable)
        left = sorted({n for pid, n in descendant_processes().items() if pid not in before})
        lists = pd.read_parquet(home / "lists.parquet").sort_values(KEY, ignore_index=True)
        if reference is None:
            reference, reference_seconds = lists, built.seconds
        same = lists[KEY].equals(reference[KEY])
        difference = (lists["score"] - reference["score"]).abs().max() if same else float("nan")
        rows.append(
            (
                name,
                f"{built.seconds:.0f}",
                f"{built.seconds / reference_seconds:.2f}",
                f"{same} ({lists['user_id'].nunique()} users)",
                f"{difference:.1e}",
                ", ".join(left) or "nothing",
            )
        )
        print(f"{name}: stages {built.stages()}", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}; builds under {root}")
    print_table(rows)


if __name__ == "__main__":
    main()
