"""The build's own backtests on earlier time cuts of the packaged sample: the ranker against the
best single baseline, overall and for new users, at every evaluated cut.

A model tuned on one split has not won until it wins on others. For each share (default 0.6,
0.8 and 1.0), the oldest share of the sample's events, with the whole catalog, is ingested and
built in DIR/share-NN the way a person would (`freshrank ingest` and `freshrank build`; the
whole sample through `freshrank demo --replay-batches 0`; a built home is reused), and the
build's backtest table (its MLflow run's backtests/per_cut.csv) is read back. Printed per share
and segment: the champion's mean NDCG@10 and each cut's (the build's winner, its MLflow run's
`winner` param: the ranker alone or fused with a baseline as often as not), the best single
baseline of that segment (by its mean) beside it, and the champion's figures as ratios of the
baseline's.

    .venv/bin/python benchmarks/history_cuts.py --dir /tmp/history [--shares 0.6 0.8 1.0]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import print_table, quiet_logging  # noqa: E402
from benchmarks.deployment import LOCATION_VARIABLES, prepare  # noqa: E402

RANKER = "ranker"  # every pipeline whose name starts so orders by the ranker
SEGMENTS = ("overall", "new_user")


def backtest_table(home: Path) -> tuple[pd.DataFrame, str]:
    """The newest backtest table of the deployment in ``home``, and the pipeline it chose."""
    from ml import tracking
    from orchestration.settings import get_settings

    for name in LOCATION_VARIABLES:
        os.environ.pop(name, None)
    os.environ["FRESHRANK_HOME"] = str(home)
    settings = get_settings()
    where = (settings.mlflow_tracking_uri, settings.mlflow_artifact_location)
    table, winner = tracking.latest_backtest_table(*where), tracking.latest_winner(*where)
    if table is None or winner is None:
        raise SystemExit(f"{home} has no backtest run")
    return table, winner


def by_cut(table: pd.DataFrame, pipeline: str, segment: str, k: int = 10) -> pd.Series:
    """The pipeline's NDCG@k at each cut (oldest first) in the segment."""
    rows = table[(table["pipeline"] == pipeline) & (table["segment"] == segment)]
    return rows.set_index("cut")[f"ndcg@{k}"].sort_index()


def comparison(share: float, table: pd.DataFrame, winner: str, segment: str) -> list[list[str]]:
    """The champion's row, the segment's best baseline's row, and the ratios."""
    names = table["pipeline"].unique()
    baselines = [name for name in names if not str(name).startswith(RANKER)]
    best = max(baselines, key=lambda name: (by_cut(table, name, segment).mean(), name))
    mine, theirs = by_cut(table, winner, segment), by_cut(table, best, segment)
    users = table[(table["pipeline"] == winner) & (table["segment"] == segment)]
    label = f"{share:.0%} {segment}"
    ahead = int((mine > theirs).sum())

    def figures(values: pd.Series) -> list[float]:
        return [values.mean(), *values]

    ratios = [
        a / b if b else float("nan") for a, b in zip(figures(mine), figures(theirs), strict=True)
    ]
    return [
        [f"{label}: {winner}", *(f"{value:.4f}" for value in figures(mine)), ""],
        [f"{label}: {best}", *(f"{value:.4f}" for value in figures(theirs)), ""],
        [
            f"{label}: ratio",
            *(f"{value:.2f}" for value in ratios),
            f"ahead at {ahead} of {len(mine)} cuts; users {', '.join(map(str, users['users']))}",
        ],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="where the deployments live")
    parser.add_argument("--shares", nargs="+", type=float, default=[0.6, 0.8, 1.0])
    arguments = parser.parse_args()
    quiet_logging()
    rows = []
    for share in arguments.shares:
        home = arguments.dir / f"share-{round(share * 100):02d}"
        prepare(home, share)
        table, winner = backtest_table(home)
        for segment in SEGMENTS:
            rows.extend(comparison(share, table, winner, segment))
    # Builds may evaluate different numbers of cuts (a cut with too few users is skipped).
    cuts = max(len(row) for row in rows) - 3
    rows = [[*row[:-1], *[""] * (cuts + 3 - len(row)), row[-1]] for row in rows]
    header = ["history share, segment, pipeline", "mean", *(f"cut {n + 1}" for n in range(cuts))]
    print("\nNDCG@10 of each build's backtests (cuts oldest first)")
    print_table([[*header, ""], *rows])


if __name__ == "__main__":
    main()
