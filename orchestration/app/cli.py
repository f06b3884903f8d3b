"""The `freshrank` command line: every command runs in-process on the settings' FRESHRANK_HOME."""

from __future__ import annotations

import json
import logging
import sys
from contextlib import nullcontext
from pathlib import Path

import click

from orchestration.app.launcher import yield_cpu_to_serving
from orchestration.experiments.commands import experiment
from orchestration.privacy.commands import forget, retention
from orchestration.serving.key_commands import api_key
from orchestration.settings import get_settings

EXIT_REJECTED = 2


class _FreshrankOrWarnings(logging.Filter):
    """Let freshrank's own progress through, and anything else only when it warns."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.startswith("freshrank") or record.levelno >= logging.WARNING


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_FreshrankOrWarnings())


# Commands that answer people rather than do batch work keep the default CPU priority.
INTERACTIVE_COMMANDS = frozenset({"serve"})


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
@click.pass_context
def main(context: click.Context, verbose: bool) -> None:
    """freshrank: batch-plus-refresh recommendations on Dagster, dbt, GX and MLflow."""
    _configure_logging(verbose)
    if context.invoked_subcommand not in INTERACTIVE_COMMANDS:
        try:
            niceness = get_settings().batch_nice
        except ValueError as error:  # a bad FRESHRANK_* value: say which, as commands do
            raise click.ClickException(str(error)) from error
        yield_cpu_to_serving(niceness)


def _delivery_option(flag: str, name: str, what: str):
    """A repeatable --events or --items option: files or folders of part files."""
    return click.option(
        flag,
        name,
        multiple=True,
        type=click.Path(path_type=Path),
        help=f"{what} (CSV, Parquet or JSON Lines; the text ones may be gzipped), or a folder "
        "of part files. Repeatable.",
    )


@main.command()
@_delivery_option("--events", "event_files", "An events file")
@_delivery_option("--items", "item_files", "An item catalog file")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per file.")
def ingest(event_files: tuple[Path, ...], item_files: tuple[Path, ...], as_json: bool) -> None:
    """Land files and load them through the ingest assets (ledger, quarantine, checks)."""
    from orchestration.ingest.commands import ingest_files
    from orchestration.ingest.landing import LOADED

    if not event_files and not item_files:
        raise click.UsageError("give at least one --events or --items file")
    results = ingest_files(get_settings(), {"events": event_files, "items": item_files})
    for result in results:
        if as_json:
            click.echo(json.dumps(result.to_dict()))
        elif result.status == LOADED:  # the message is the counts and where rows broke
            click.echo(f"{result.status:9} {result.file}: {result.message}")
        else:
            click.echo(
                f"{result.status:9} {result.file}: read {result.rows_read}, loaded "
                f"{result.rows_loaded}, quarantined {result.rows_quarantined}"
                + (f" ({result.message})" if result.message else "")
            )
    if any(result.status == "rejected" for result in results):
        sys.exit(EXIT_REJECTED)


@main.command()
def build() -> None:
    """Full build: ingest, dbt models and tests, embeddings, training, registry, rank, publish."""
    from orchestration.app.reporting import build_and_publish

    if not build_and_publish(get_settings()):
        sys.exit(1)


@main.command()
@click.option(
    "--replay-batches",
    type=int,
    default=5,
    show_default=True,
    help="Batches for the closing replay (0 skips it).",
)
@click.option(
    "--experiment",
    is_flag=True,
    help="Run an A/B experiment in the replay too (see `freshrank replay --experiment`).",
)
def demo(replay_batches: int, experiment: bool) -> None:
    """Load the packaged MovieLens sample through ingestion, build, and show what happened."""
    from orchestration.app.demo import run_demo

    if not run_demo(get_settings(), replay_batches, experiment):
        sys.exit(1)


@main.command()
@click.option(
    "--watch",
    is_flag=True,
    help="Stay running: refresh whenever files land or events are loaded (Ctrl-C stops).",
)
@click.option(
    "--interval", type=float, default=1.0, show_default=True, help="Seconds between polls."
)
@click.option("--max-runs", type=int, default=None, help="With --watch: stop after N refreshes.")
@click.option(
    "--idle-timeout",
    type=float,
    default=None,
    help="With --watch: stop after this many seconds with nothing to refresh.",
)
def refresh(watch: bool, interval: float, max_runs: int | None, idle_timeout: float | None) -> None:
    """Load waiting landing files and republish the lists of the users they touch (no training)."""
    from orchestration.app.reporting import run_refresh
    from orchestration.app.watch import refresh_job_for

    settings = get_settings()
    if not watch:
        from orchestration.serving.scoring import ranking_helpers

        # Opened before the run (and the code location's imports): the helpers start seconds
        # sooner than the compute resource would start them, which then leaves this pool be.
        with ranking_helpers(settings):
            succeeded = run_refresh(settings, refresh_job_for(settings))
        if not succeeded:
            sys.exit(1)
        return
    # Import what every refresh needs once, before the first batch arrives.
    import gc

    import mlflow  # noqa: F401
    import torch  # noqa: F401

    import orchestration.definitions  # noqa: F401
    from ml.pipeline.parallel import warm_pool
    from orchestration.app.watch import watch as watch_loop
    from orchestration.instance import open_instance
    from orchestration.jobs import FULL_BUILD_JOB
    from orchestration.serving.scoring import warm_up_ranking
    from orchestration.warehouse.guard import warehouse_held

    click.echo(f"watching {settings.landing_dir} and the raw tables every {interval:g} s")
    # The Dagster instance is opened once, for every refresh; with more than one core, the
    # refreshes rank in worker processes that keep the serving pipeline loaded.
    workers = settings.rank_processes
    pool = warm_pool(workers, settings.compiled_rankers) if workers > 1 else nullcontext()
    with open_instance(settings) as instance, pool as ranking:
        if ranking is not None and warm_up_ranking(settings, ranking):
            click.echo(f"{workers} ranking worker(s) hold the serving pipeline")
        # What exists now lives as long as the process: out of the collector's sight, a full
        # collection during a refresh walks only what the refreshes create (0.4 s -> 0.07 s).
        gc.freeze()

        # One open warehouse for a run's steps (see warehouse_held), unless dbt runs in a
        # process of its own and must open the file itself.
        shared = settings.dbt_in_process or settings.dbt_target == "spark"

        def refresh_once() -> bool:
            job = refresh_job_for(settings)
            # A first refresh that builds runs its backtests' workers, which open the file.
            held = shared and job != FULL_BUILD_JOB
            with warehouse_held(settings.warehouse_path) if held else nullcontext():
                return run_refresh(settings, job, instance)

        runs = watch_loop(
            settings,
            refresh_once,
            interval_seconds=interval,
            max_runs=max_runs,
            idle_timeout_seconds=idle_timeout,
        )
    click.echo(f"stopped after {runs} refresh(es)")


@main.command()
@click.option(
    "--batches", type=int, default=5, show_default=True, help="How many batches to stream."
)
@click.option(
    "--holdout",
    type=float,
    default=0.1,
    show_default=True,
    help="Newest share of the sample that is streamed instead of built.",
)
@click.option(
    "--experiment",
    is_flag=True,
    help="Also run an A/B experiment on the held-out users: the champion against a popularity "
    "ordering of it, exposures, attribution, verdict in MLflow and the Dagster UI.",
)
def replay(batches: int, holdout: float, experiment: bool) -> None:
    """Stream held-out MovieLens behaviour in batches: refreshed against stale lists."""
    from orchestration.app.replay import print_replay

    print_replay(get_settings(), batches, holdout, experiment)


@main.command()
def retrain() -> None:
    """Embed changed items, train and evaluate a challenger; promote it if the gate passes."""
    from orchestration.app.reporting import report_run
    from orchestration.app.watch import built
    from orchestration.jobs import PUBLISH_JOB, RETRAIN_JOB

    settings = get_settings()
    if not built(settings):
        raise click.ClickException(
            "nothing is built yet: run `freshrank build` first (retraining works on the "
            "marts and item vectors a build makes)"
        )
    if not report_run(RETRAIN_JOB, settings) or not report_run(PUBLISH_JOB, settings):
        sys.exit(1)


@main.command()
@click.argument("version")
def promote(version: str) -> None:
    """Make a registered model VERSION the champion (after review in the MLflow UI)."""
    from ml import tracking

    settings = get_settings()
    client = tracking.configure(settings.mlflow_tracking_uri, settings.mlflow_artifact_location)
    try:
        replaced = tracking.promote(client, version)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    click.echo(
        f"{tracking.REGISTERED_MODEL} version {version} is champion (was {replaced or 'none'}). "
        "Run `freshrank build` or let champion_change_sensor rescore every user."
    )


@main.command()
def rollback() -> None:
    """Move the champion alias back to the previous champion."""
    from ml import tracking

    settings = get_settings()
    client = tracking.configure(settings.mlflow_tracking_uri, settings.mlflow_artifact_location)
    try:
        version = tracking.rollback(client)
    except RuntimeError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"{tracking.REGISTERED_MODEL}: champion is back to version {version}")


@main.command()
def evaluate() -> None:
    """Print the newest backtests: every pipeline by segment and cut, the winner against each."""
    from ml import tracking

    settings = get_settings()
    table = tracking.latest_evaluation(
        settings.mlflow_tracking_uri, settings.mlflow_artifact_location
    )
    if table is None:
        raise click.ClickException("no backtest run yet: run `freshrank build` first")
    click.echo(table)


@main.command()
@click.argument("user_id")
@click.option("-k", "k", type=int, default=None, help="How many items (default: all published).")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def recommend(user_id: str, k: int | None, as_json: bool) -> None:
    """Show a user's published list from the serving store."""
    from orchestration.serving.store import ServingStore

    settings = get_settings()
    pseudonymiser = settings.pseudonymiser  # stored lists are keyed by the pseudonym
    stored_id = user_id if pseudonymiser is None else pseudonymiser.pseudonym(user_id)
    store = ServingStore(settings.serving_url)
    lists = store.recommendations(stored_id, k)
    if as_json:
        click.echo(json.dumps(_list_payload(user_id, lists)))
        return
    if lists.empty:
        if store.summary()["rows"]:
            click.echo(
                f"no published list of user {user_id!r}'s own (unknown, or no events yet): the "
                "HTTP API serves them the trending list"
            )
        else:
            click.echo("nothing is published yet (run `freshrank build`)")
        sys.exit(1)
    click.echo(_format_list(user_id, lists))


@main.command()
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Where to write: .csv or .parquet.",
)
def export(out_path: Path) -> None:
    """Write every published list to a CSV or Parquet file."""
    from orchestration.serving.store import ServingStore

    suffix = out_path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise click.BadParameter("the file name must end in .csv or .parquet", param_hint="--out")
    lists = ServingStore(get_settings().serving_url).all_lists()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        lists.to_csv(out_path, index=False)
    else:
        lists.to_parquet(out_path, index=False)
    click.echo(f"wrote {len(lists)} rows for {lists['user_id'].nunique()} users to {out_path}")


def _list_payload(user_id: str, lists) -> dict:
    items = [
        {"item_id": row.item_id, "score": float(row.score), "reason": row.reason}
        for row in lists.itertuples()
    ]
    return {
        "user_id": user_id,
        "items": items,
        "model_version": lists["model_version"].iloc[0] if len(lists) else None,
        "generated_at": str(lists["generated_at"].iloc[0]) if len(lists) else None,
    }


def _format_list(user_id: str, lists) -> str:
    header = (
        f"user {user_id}: model {lists['model_version'].iloc[0]}, "
        f"generated {lists['generated_at'].iloc[0]}"
    )
    rows = [
        f"{row.rank:3d}. {row.item_id:>10}  {row.score:8.4f}  {row.reason}"
        for row in lists.itertuples()
    ]
    return "\n".join([header, *rows])


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="Port."
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Worker processes [default: FRESHRANK_API_WORKERS, else 1]. Each opens its own "
    "serving-store connections; SQLite's WAL mode lets them all read at once.",
)
def serve(host: str, port: int, workers: int | None) -> None:
    """Serve the HTTP API: users' lists, event intake into the landing zone, health."""
    import sqlalchemy as sa
    import uvicorn

    from orchestration.serving.api import create_app

    try:
        settings = get_settings()
        app = create_app(settings)
    except ValueError as error:  # a bad FRESHRANK_API_* value
        raise click.ClickException(str(error)) from error
    except (sa.exc.SQLAlchemyError, OSError) as error:
        raise click.ClickException(
            f"cannot open the serving store (FRESHRANK_SERVING_URL): {error}"
        ) from error
    shown_host = f"[{host}]" if ":" in host else host
    workers = workers or settings.api_workers
    click.echo(
        f"freshrank API on http://{shown_host}:{port}, {workers} worker(s) "
        "(docs at /docs; Ctrl+C stops it)"
    )
    served = dict(host=host, port=port, log_level="info", access_log=settings.api_access_log)
    if workers == 1:
        uvicorn.run(app, **served)
        return
    # Each worker process builds its own app from the same environment; this one only checked it.
    app.state.store.dispose()
    uvicorn.run("orchestration.serving.api:create_app", factory=True, workers=workers, **served)


main.add_command(experiment)
main.add_command(forget)
main.add_command(retention)
main.add_command(api_key)

if __name__ == "__main__":
    main()
