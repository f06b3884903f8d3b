"""`freshrank replay`: what real-time refresh buys over a stale batch, measured on real behaviour.

The packaged MovieLens sample is cut in time. The part before the cut is loaded and built (model
trained, lists published) in a deployment of its own under FRESHRANK_HOME/replay; those lists are
kept as the stale batch system. The held-out part then streams through the landing zone in
steps, each landed batch followed by a refresh. Sessions are cut across a refresh, as they are
live: a step lands the opening events of the sessions in its time slice, refreshes, and scores
both systems' lists on how those sessions continued (NDCG@10, by segment). A third system keeps
the stale lists but applies, at request time, every event landed since they were published (as
GET /recommendations does: orchestration/serving/personalise.py), which says what request-time
personalisation adds without a refresh. Each refresh's landed-to-published latency is recorded.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

import click
import numpy as np
import pandas as pd

from ml.constants import EVENT_TYPE, ITEM_ID, OCCURRED_AT, RANK, TIMESTAMP, USER_ID, VALUE
from ml.datasets import movielens_sample
from ml.evaluation.metrics import ndcg_at_k, recall_at_k
from ml.evaluation.protocol import DEFAULT_REVEAL_FRACTION
from ml.rules import RankingRules
from orchestration.app.reporting import build_and_publish
from orchestration.app.watch import refresh_job_for
from orchestration.experiments.replay import (
    expose,
    finish_replay_experiment,
    start_replay_experiment,
)
from orchestration.experiments.store import ExperimentStore
from orchestration.features.embedding_store import TABLE as EMBEDDINGS_TABLE
from orchestration.ingest.commands import ingest_files
from orchestration.instance import run_job_in_process
from orchestration.serving.personalise import RELATED_PER_ITEM, fill_up, personalise
from orchestration.serving.pools import POOL, unpack_pool
from orchestration.serving.store import (
    CANDIDATES_TABLE_NAME,
    RELATED_TABLE_NAME,
    ServingStore,
)
from orchestration.settings import Settings
from orchestration.warehouse.guard import open_warehouse, warehouse_writer


def replay_settings(settings: Settings, home: Path) -> Settings:
    """The replay's own deployment under ``home``: ``settings`` with every store there."""
    replay = replace(
        settings.at_home(home),
        # Both systems serve the same pipeline: the replay measures freshness, not selection.
        ablations=False,
        # The replay serves the pipeline its build chose, whatever the margin would say.
        promotion_margin=-1.0,
        # One evaluated cut, trained on two earlier ones, is enough to choose by.
        backtest_cuts=1,
        backtest_training_cuts=2,
    )
    replay.ensure_dirs()
    return replay


def reuse_item_embeddings(source: Settings, target: Settings) -> int:
    """Copy the source deployment's item vectors into the target's warehouse; how many.

    The replay's catalog is the demo's, so its items need no second pass through the
    transformer: the embedding asset skips every item whose text and model hash are unchanged.
    """
    if not source.warehouse_path.exists() or source.warehouse_path == target.warehouse_path:
        return 0
    with (
        warehouse_writer(source.warehouse_path),
        open_warehouse(target.warehouse_path) as target_db,
    ):
        target_db.execute(f"attach '{source.warehouse_path}' as source_warehouse (read_only)")
        try:
            (found,) = target_db.execute(
                "select count(*) from information_schema.tables where table_catalog = "
                "'source_warehouse' and table_schema = 'ml' and table_name = 'item_embeddings'"
            ).fetchall()[0]
            if not found:
                return 0
            target_db.execute("create schema if not exists ml")
            target_db.execute(
                f"create or replace table {EMBEDDINGS_TABLE} as "
                "select * from source_warehouse.ml.item_embeddings"
            )
            (copied,) = target_db.execute(f"select count(*) from {EMBEDDINGS_TABLE}").fetchall()[0]
        finally:
            target_db.execute("detach source_warehouse")
    return int(copied)


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


def _personalised(
    lists: pd.DataFrame,
    pools: dict[str, str],
    related: pd.DataFrame,
    trending: pd.DataFrame,
    events: pd.DataFrame,
    users: list[str],
    settings: Settings,
) -> pd.DataFrame:
    """What each user would be shown by GET /recommendations with ``events`` (landed since
    ``lists`` were published) applied at request time, as _served shows it. ``pools``: each
    user's packed candidate pool, as published with the lists."""
    k, rules = settings.top_k, RankingRules()
    related_rows = related[related[RANK] <= RELATED_PER_ITEM].to_dict("records")
    by_item: dict[str, list[dict]] = {}
    for row in related_rows:
        by_item.setdefault(row[ITEM_ID], []).append(row)
    fallback = trending.sort_values(RANK).to_dict("records")
    shown = []
    for user in users:
        mine = events[events[USER_ID] == user].sort_values(OCCURRED_AT, kind="stable")
        recent = mine.tail(settings.recent_events_per_user).to_dict("records")
        published = lists[lists[USER_ID] == user].sort_values(RANK).to_dict("records")
        pool = unpack_pool(pools.get(user))
        if not recent:
            items = published[:k] or fallback[:k]
        else:
            rows = [row for event in recent for row in by_item.get(event[ITEM_ID], ())]
            items = personalise(
                published,
                pool if published else [],
                recent,
                rows,
                {},
                event_weights=settings.event_weights,
                rules=rules,
                k=k,
            )
            items = fill_up(items, fallback, recent, rules, k)
        shown.extend((user, row[ITEM_ID], rank) for rank, row in enumerate(items, start=1))
    return pd.DataFrame(shown, columns=[USER_ID, ITEM_ID, RANK])


def _as_recent_events(landed: pd.DataFrame) -> pd.DataFrame:
    """Landed sample events (epoch-second timestamps) as recent events: user, item, type,
    value (None when absent) and naive UTC time."""
    values = pd.to_numeric(landed[VALUE], errors="coerce") if VALUE in landed else np.nan
    frame = pd.DataFrame(
        {
            USER_ID: landed[USER_ID].astype(str),
            ITEM_ID: landed[ITEM_ID].astype(str),
            EVENT_TYPE: landed[EVENT_TYPE].astype(str),
            VALUE: values,
            OCCURRED_AT: pd.to_datetime(landed[TIMESTAMP], unit="s"),
        }
    )
    frame[VALUE] = frame[VALUE].astype(object).where(frame[VALUE].notna(), None)
    return frame


def _score(shown: pd.DataFrame, truth: pd.DataFrame, k: int) -> tuple[float, float]:
    if truth.empty:
        return float("nan"), float("nan")
    return ndcg_at_k(shown, truth, k), recall_at_k(shown, truth, k)


def session_steps(
    stream: pd.DataFrame, batches: int, reveal_fraction: float = DEFAULT_REVEAL_FRACTION
) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """(landed, evaluated) event frames per replay step, sessions split across a refresh.

    The stream is cut, in time order, into ``batches`` slices. In each slice every user's events
    are split in time order: the first floor(n * reveal_fraction) open their session, the rest
    continue it. Step s lands slice s-1's continuations with slice s's openings (one refresh),
    then scores the lists on slice s's continuations: the user who clicked a few items a minute
    ago and is still browsing. A user with a single event in a slice arrives cold.
    """
    if batches < 1:
        raise ValueError(f"batches must be at least 1, got {batches!r}")
    ordered = stream.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)
    openings, continuations = [], []
    for rows in np.array_split(np.arange(len(ordered)), batches):
        piece = ordered.iloc[rows].sort_values([USER_ID, TIMESTAMP], kind="stable")
        position = piece.groupby(USER_ID).cumcount()
        size = piece.groupby(USER_ID)[ITEM_ID].transform("size")
        opening = position < np.floor(size * reveal_fraction)
        openings.append(piece[opening].sort_values(TIMESTAMP, kind="stable"))
        continuations.append(piece[~opening].sort_values(TIMESTAMP, kind="stable"))
    steps = []
    for number, (opening, continuation) in enumerate(zip(openings, continuations, strict=True)):
        landed = opening if number == 0 else pd.concat([continuations[number - 1], opening])
        steps.append((landed.reset_index(drop=True), continuation.reset_index(drop=True)))
    return steps


def run_replay(
    settings: Settings, batches: int = 5, holdout_fraction: float = 0.1, experiment: bool = False
) -> pd.DataFrame:
    """Stream the newest ``holdout_fraction`` of the sample in ``batches``; compare the lists.

    With ``experiment``, an A/B experiment runs on the held-out users as well
    (orchestration/experiments/replay.py).
    """
    home = settings.home / "replay"
    shutil.rmtree(home, ignore_errors=True)
    items, events = movielens_sample()
    cutoff = events[TIMESTAMP].quantile(1.0 - holdout_fraction)
    history = events[events[TIMESTAMP] <= cutoff]
    stream = events[events[TIMESTAMP] > cutoff]
    rows = []
    replay = replay_settings(settings, home)
    k = replay.top_k
    inputs = replay.home / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    items.to_csv(inputs / "items.csv", index=False)
    history.to_csv(inputs / "history.csv", index=False)
    click.echo(
        f"replay: {len(history)} events before the cut, {len(stream)} streamed in "
        f"{batches} steps (deployment in {home})"
    )
    ingest_files(replay, {"items": [inputs / "items.csv"], "events": [inputs / "history.csv"]})
    reused = reuse_item_embeddings(settings, replay)
    if reused:
        click.echo(f"  reusing {reused} item vectors of {settings.warehouse_path}")
    if not build_and_publish(replay):
        raise click.ClickException("the replay's initial build failed")
    store = ServingStore(replay.serving_url)
    stale_lists, stale_trending = store.all_lists(), store.trending()
    served_pools = store.served_table(CANDIDATES_TABLE_NAME)
    stale_pools = dict(zip(served_pools[USER_ID], served_pools[POOL], strict=True))
    related = store.served_table(RELATED_TABLE_NAME)
    landed_since_publish = []
    experiments = ExperimentStore(store.engine) if experiment else None
    if experiments is not None:
        start_replay_experiment(replay, experiments)
    history_users = set(history[USER_ID])
    consumed = set(zip(history[USER_ID], history[ITEM_ID], strict=True))
    for number, (landed, evaluated) in enumerate(session_steps(stream, batches), start=1):
        # The batch lands and is refreshed, as it would be live...
        path = inputs / f"batch_{number:03d}.csv"
        landed.to_csv(path, index=False)
        started = time.perf_counter()
        ingest_files(replay, {"events": [path]})
        result = run_job_in_process(refresh_job_for(replay), replay)
        latency = time.perf_counter() - started
        consumed.update(zip(landed[USER_ID], landed[ITEM_ID], strict=True))
        landed_since_publish.append(_as_recent_events(landed))
        # ...then both systems' lists meet what users did next.
        pairs = evaluated[[USER_ID, ITEM_ID]].drop_duplicates()
        fresh = [pair not in consumed for pair in zip(pairs[USER_ID], pairs[ITEM_ID], strict=True)]
        truth = pairs[fresh]
        users = sorted(truth[USER_ID].unique())
        refreshed = _served(store.all_lists(), store.trending(), users, k)
        stale = _served(stale_lists, stale_trending, users, k)
        request_time = _personalised(
            stale_lists,
            stale_pools,
            related,
            stale_trending,
            pd.concat(landed_since_publish, ignore_index=True),
            users,
            replay,
        )
        for segment, members in (
            ("all users", users),
            ("new users", [user for user in users if user not in history_users]),
            ("returning users", [user for user in users if user in history_users]),
        ):
            segment_truth = truth[truth[USER_ID].isin(members)]
            stale_ndcg, stale_recall = _score(stale, segment_truth, k)
            fresh_ndcg, fresh_recall = _score(refreshed, segment_truth, k)
            request_ndcg, request_recall = _score(request_time, segment_truth, k)
            rows.append(
                {
                    "batch": number,
                    "segment": segment,
                    "users": len(members),
                    "stale_ndcg@10": stale_ndcg,
                    "refreshed_ndcg@10": fresh_ndcg,
                    "request_time_ndcg@10": request_ndcg,
                    "stale_recall@10": stale_recall,
                    "refreshed_recall@10": fresh_recall,
                    "request_time_recall@10": request_recall,
                    "refresh_seconds": round(latency, 2),
                }
            )
        consumed.update(zip(evaluated[USER_ID], evaluated[ITEM_ID], strict=True))
        if experiments is not None:
            exposed = expose(experiments, store, evaluated, k)
            click.echo(f"  step {number}: {exposed} enrolled users served and logged")
        click.echo(
            f"  step {number}: landed {len(landed)} events, refreshed in {latency:.1f} s "
            f"({'ok' if result.success else 'FAILED'}); scored {len(users)} users on their "
            f"next {len(truth)} items"
        )
    if experiments is not None:
        finish_replay_experiment(replay, evaluated, inputs)
    store.dispose()
    return pd.DataFrame(rows)


def summarise(report: pd.DataFrame) -> pd.DataFrame:
    """Per segment, user-weighted means over the steps (every step is scored after a refresh)."""
    later = report.dropna(subset=["stale_ndcg@10"])
    rows = []
    for segment, part in later.groupby("segment", sort=False):
        weights = part["users"].to_numpy(dtype=float)
        row = {"segment": segment, "user-batches": int(weights.sum())}
        for column in (
            "stale_ndcg@10",
            "refreshed_ndcg@10",
            "request_time_ndcg@10",
            "stale_recall@10",
            "refreshed_recall@10",
            "request_time_recall@10",
        ):
            row[column] = float(np.average(part[column], weights=weights)) if weights.sum() else 0.0
        for system in ("refreshed", "request_time"):
            lift = "ndcg_lift" if system == "refreshed" else f"{system}_ndcg_lift"
            row[lift] = (
                row[f"{system}_ndcg@10"] / row["stale_ndcg@10"] if row["stale_ndcg@10"] else np.inf
            )
        rows.append(row)
    summary = pd.DataFrame(rows)
    summary["median_refresh_seconds"] = float(report["refresh_seconds"].median())
    return summary


def print_replay(
    settings: Settings, batches: int, holdout_fraction: float, experiment: bool = False
) -> pd.DataFrame:
    """Run the replay and print the per-batch report and the summary."""
    report = run_replay(settings, batches, holdout_fraction, experiment)
    click.echo(
        "\nreplay, per step (lists scored after the step's refresh, on how sessions continued):"
    )
    click.echo(report.round(4).to_markdown(index=False))
    summary = summarise(report)
    click.echo(
        "\nrefreshed, and stale with request-time personalisation, against stale batch lists, "
        "all steps (user-weighted):"
    )
    click.echo(summary.round(4).to_markdown(index=False))
    return summary
