"""`freshrank replay`: what real-time refresh buys over a stale batch, measured on real behaviour.

The packaged MovieLens sample is cut in time. The part before the cut is loaded and built (model
trained, lists published) in a deployment of its own under FRESHRANK_HOME/replay; those lists are
kept as the stale batch system. The held-out part then streams through the landing zone in
batches, each followed by a refresh. Before each batch lands, both systems' lists are scored on
what users did in that batch (NDCG@10, by segment), and each refresh's latency is recorded.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager

import click
import numpy as np
import pandas as pd

from ml.constants import ITEM_ID, RANK, TIMESTAMP, USER_ID
from ml.datasets import movielens_sample
from ml.evaluation.metrics import ndcg_at_k, recall_at_k
from orchestration.ingest.commands import ingest_files
from orchestration.instance import run_job_in_process
from orchestration.jobs import REFRESH_JOB
from orchestration.reporting import build_and_publish
from orchestration.serving.store import ServingStore
from orchestration.settings import Settings


@contextmanager
def _deployment(home) -> Iterator[Settings]:
    """Settings of a separate deployment under ``home`` (environment restored afterwards)."""
    names = (
        "FRESHRANK_HOME",
        "FRESHRANK_LANDING_DIR",
        "FRESHRANK_WAREHOUSE_PATH",
        "FRESHRANK_SERVING_URL",
        "MLFLOW_TRACKING_URI",
        "FRESHRANK_MLFLOW_ARTIFACTS",
        "DAGSTER_HOME",
        "FRESHRANK_TRAINING_ABLATIONS",
        "FRESHRANK_TRAINING_MAX_EPOCHS",
    )
    saved = {name: os.environ.get(name) for name in names}
    try:
        for name in names:
            os.environ.pop(name, None)
        os.environ["FRESHRANK_HOME"] = str(home)
        # Both systems serve the same model: the replay measures freshness, not training, so a
        # short training without ablations is enough.
        os.environ["FRESHRANK_TRAINING_ABLATIONS"] = "0"
        os.environ["FRESHRANK_TRAINING_MAX_EPOCHS"] = saved["FRESHRANK_TRAINING_MAX_EPOCHS"] or "8"
        settings = Settings.from_env()
        settings.ensure_dirs()
        yield settings
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _served(lists: pd.DataFrame, trending: pd.DataFrame, users: list[str], k: int) -> pd.DataFrame:
    """What each user would be shown: their list, or the trending list when they have none."""
    own = lists[lists[USER_ID].isin(users)][[USER_ID, ITEM_ID, RANK]]
    missing = sorted(set(users) - set(own[USER_ID]))
    top = trending.sort_values(RANK).head(k)
    fallback = pd.DataFrame(
        {
            USER_ID: np.repeat(missing, len(top)),
            ITEM_ID: np.tile(top[ITEM_ID].to_numpy(), len(missing)),
            RANK: np.tile(top[RANK].to_numpy(), len(missing)),
        }
    )
    return pd.concat([own, fallback], ignore_index=True)


def _score(shown: pd.DataFrame, truth: pd.DataFrame, k: int) -> tuple[float, float]:
    if truth.empty:
        return float("nan"), float("nan")
    return ndcg_at_k(shown, truth, k), recall_at_k(shown, truth, k)


def run_replay(settings: Settings, batches: int = 5, holdout_fraction: float = 0.1) -> pd.DataFrame:
    """Stream the newest ``holdout_fraction`` of the sample in ``batches``; compare the lists."""
    home = settings.home / "replay"
    shutil.rmtree(home, ignore_errors=True)
    items, events = movielens_sample()
    cutoff = events[TIMESTAMP].quantile(1.0 - holdout_fraction)
    history = events[events[TIMESTAMP] <= cutoff]
    stream = events[events[TIMESTAMP] > cutoff].sort_values(TIMESTAMP, kind="stable")
    rows = []
    with _deployment(home) as replay:
        k = replay.top_k
        inputs = replay.home / "inputs"
        inputs.mkdir(parents=True, exist_ok=True)
        items.to_csv(inputs / "items.csv", index=False)
        history.to_csv(inputs / "history.csv", index=False)
        click.echo(
            f"replay: {len(history)} events before the cut, {len(stream)} streamed in "
            f"{batches} batches (deployment in {home})"
        )
        ingest_files(replay, {"items": [inputs / "items.csv"], "events": [inputs / "history.csv"]})
        if not build_and_publish(replay):
            raise click.ClickException("the replay's initial build failed")
        store = ServingStore(replay.serving_url)
        stale_lists, stale_trending = store.all_lists(), store.trending()
        history_users = set(history[USER_ID])
        consumed = set(zip(history[USER_ID], history[ITEM_ID], strict=True))
        for number, batch in enumerate(np.array_split(stream, batches), start=1):
            pairs = batch[[USER_ID, ITEM_ID]].drop_duplicates()
            fresh = [
                pair not in consumed for pair in zip(pairs[USER_ID], pairs[ITEM_ID], strict=True)
            ]
            truth = pairs[fresh]
            users = sorted(truth[USER_ID].unique())
            refreshed = _served(store.all_lists(), store.trending(), users, k)
            stale = _served(stale_lists, stale_trending, users, k)
            for segment, members in (
                ("all users", users),
                ("new users", [user for user in users if user not in history_users]),
                ("returning users", [user for user in users if user in history_users]),
            ):
                segment_truth = truth[truth[USER_ID].isin(members)]
                stale_ndcg, stale_recall = _score(stale, segment_truth, k)
                fresh_ndcg, fresh_recall = _score(refreshed, segment_truth, k)
                rows.append(
                    {
                        "batch": number,
                        "segment": segment,
                        "users": len(members),
                        "stale_ndcg@10": stale_ndcg,
                        "refreshed_ndcg@10": fresh_ndcg,
                        "stale_recall@10": stale_recall,
                        "refreshed_recall@10": fresh_recall,
                    }
                )
            # Now the batch lands and is refreshed, as it would be live.
            path = inputs / f"batch_{number:03d}.csv"
            batch.to_csv(path, index=False)
            started = time.perf_counter()
            ingest_files(replay, {"events": [path]})
            result = run_job_in_process(REFRESH_JOB, replay)
            latency = time.perf_counter() - started
            for row in rows[-3:]:
                row["refresh_seconds"] = round(latency, 2)
            consumed.update(zip(batch[USER_ID], batch[ITEM_ID], strict=True))
            click.echo(
                f"  batch {number}: {len(batch)} events, {len(users)} users scored, "
                f"landed-to-published {latency:.1f} s ({'ok' if result.success else 'FAILED'})"
            )
        store.dispose()
    return pd.DataFrame(rows)


def summarise(report: pd.DataFrame) -> pd.DataFrame:
    """Per segment, user-weighted means over batches after the first (the first is identical)."""
    later = report[report["batch"] > 1].dropna(subset=["stale_ndcg@10"])
    rows = []
    for segment, part in later.groupby("segment", sort=False):
        weights = part["users"].to_numpy(dtype=float)
        row = {"segment": segment, "user-batches": int(weights.sum())}
        for column in (
            "stale_ndcg@10",
            "refreshed_ndcg@10",
            "stale_recall@10",
            "refreshed_recall@10",
        ):
            row[column] = float(np.average(part[column], weights=weights)) if weights.sum() else 0.0
        row["ndcg_lift"] = (
            row["refreshed_ndcg@10"] / row["stale_ndcg@10"] if row["stale_ndcg@10"] else np.inf
        )
        rows.append(row)
    summary = pd.DataFrame(rows)
    summary["median_refresh_seconds"] = float(report["refresh_seconds"].median())
    return summary


def print_replay(settings: Settings, batches: int, holdout_fraction: float) -> pd.DataFrame:
    """Run the replay and print the per-batch report and the summary."""
    report = run_replay(settings, batches, holdout_fraction)
    click.echo(
        "\nreplay, per batch (scored before the batch lands; batch 1 is before any refresh):"
    )
    click.echo(report.round(4).to_markdown(index=False))
    summary = summarise(report)
    click.echo("\nrefreshed against stale batch lists, batches 2 onwards (user-weighted):")
    click.echo(summary.round(4).to_markdown(index=False))
    return summary
