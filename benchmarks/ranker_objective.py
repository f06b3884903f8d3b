"""The ranker's LightGBM objectives side by side: LambdaRank, XE-NDCG, and the two mixed in one
bag (the default: the bagged models alternate between them); or one objective over several
seeds, to see how far a figure moves with the seed alone.

On a built deployment (FRESHRANK_HOME, or --home), the build's own backtests run once per
objective and seed, everything else as the deployment's settings say (set
FRESHRANK_BACKTEST_WINDOW_FRACTION to move the cuts); every variant bags the same number of
models. Printed per variant: backtest seconds, the ranker's mean NDCG@10 overall, for new and
returning users and for new-item targets (with their hit rate), each cut's overall and new-user
figures, and the best single baseline's beside them; then each figure as a ratio of the first
variant's (the baseline: LambdaRank by default).

    .venv/bin/python benchmarks/ranker_objective.py --home DIR [--seeds 7]
    .venv/bin/python benchmarks/ranker_objective.py --home DIR \
        --objectives lambdarank+rank_xendcg --seeds 1 2 3 4 5
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import print_table, quiet_logging  # noqa: E402

OBJECTIVES = ("lambdarank", "rank_xendcg", "lambdarank+rank_xendcg")
SEGMENTS = ("overall", "new_user", "returning_user", "new_item_targets")


def figures(result, pipeline: str) -> dict[str, float]:
    """The pipeline's means by segment, new-item hit rate and each cut's NDCG@k."""
    k = result.k
    table = result.table[result.table["pipeline"] == pipeline]
    row = {segment: result.mean_ndcg(pipeline, segment) for segment in SEGMENTS}
    new_items = table[table["segment"] == "new_item_targets"]
    row["new-item hit rate"] = float(new_items[f"hit_rate@{k}"].mean())
    cuts = sorted(table["cut"].unique())
    for segment, short in (("overall", "all"), ("new_user", "new")):
        for number, cut in enumerate(cuts, start=1):
            at = table[(table["cut"] == cut) & (table["segment"] == segment)]
            row[f"cut {number} {short}"] = float(at[f"ndcg@{k}"].mean())
    return row


def ratio(mine: float, theirs: float) -> str:
    return f"{mine / theirs:.2f}" if theirs else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="a built deployment (default FRESHRANK_HOME)")
    parser.add_argument(
        "--objectives", nargs="+", default=list(OBJECTIVES), help="objectives, baseline first"
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[7], help="the ranker's first bagged seed(s)"
    )
    arguments = parser.parse_args()
    if arguments.home:
        os.environ["FRESHRANK_HOME"] = str(arguments.home)
    quiet_logging()

    from ml.pipeline.backtest import run_backtests
    from orchestration.compute import ComputeResource
    from orchestration.model.assets import backtest_config, pipeline_config
    from orchestration.settings import get_settings
    from orchestration.warehouse.reads import load_snapshot

    settings = get_settings()
    snapshot = load_snapshot(settings)
    pipeline = ComputeResource().training(settings, pipeline_config(settings))
    base = backtest_config(settings)
    several_seeds = len(arguments.seeds) > 1
    results = {}
    for objective in arguments.objectives:
        for seed in arguments.seeds:
            name = f"{objective} seed {seed}" if several_seeds else objective
            ranker = replace(base.ranker, objective=objective, seed=seed)
            results[name] = run_backtests(snapshot, pipeline, replace(base, ranker=ranker))
            print(f"{name}: backtests {results[name].seconds:.1f} s", flush=True)

    names = list(results)
    first = results[names[0]]
    # The baselines: every single-source pipeline (not the ranker, alone or fused).
    baselines = first.summary[~first.summary.index.str.startswith("ranker")]
    best = str(baselines.index[0])
    rows = {name: figures(result, "ranker") for name, result in results.items()}
    rows[f"best baseline ({best})"] = figures(first, best)
    columns = list(rows[names[0]])
    table = [["pipeline", "backtest s", *columns]]
    for name, row in rows.items():
        seconds = f"{results[name].seconds:.1f}" if name in results else ""
        table.append([name, seconds, *(f"{row[column]:.4f}" for column in columns)])
    theirs = rows[names[0]]
    for name in names[1:]:
        mine = rows[name]
        table.append(
            [
                f"{name} / {names[0]}",
                ratio(results[name].seconds, first.seconds),
                *(ratio(mine[column], theirs[column]) for column in columns),
            ]
        )
    print(
        f"\nranker objectives on {settings.home} (cuts {', '.join(map(str, first.cuts))}; "
        f"load average {os.getloadavg()[0]:.2f})"
    )
    print_table(table)


if __name__ == "__main__":
    main()
