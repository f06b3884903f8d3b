"""The replay's experiment: the champion against a popularity ordering of it, on held-out behaviour.

`freshrank replay --experiment` runs the whole loop on the packaged sample: after the replay's
build, the champion's fitted pipeline ordered by all-time popularity is registered as a second
version; an experiment splits users between the two and both variants' lists are published;
every refresh rescores them; at each step every user about to continue a session is served as
the API serves them, just before their next event (event time), and the exposure logged; the
continuations land with the next step; at the end the analysis job credits them and logs the
verdict to MLflow and the Dagster UI.
"""

from __future__ import annotations

import click
import pandas as pd

from ml.constants import ITEM_ID, MODEL_VERSION, TIMESTAMP, USER_ID
from ml.experiments.assignment import ExperimentDesign, Variant
from ml.experiments.tracking import AB_TESTS
from ml.pipeline.backtest import FALLBACK_PIPELINE
from orchestration.experiments.lists import publish_experiment_lists
from orchestration.experiments.store import ExperimentStore
from orchestration.ingest.commands import ingest_files
from orchestration.instance import run_job_in_process
from orchestration.jobs import EXPERIMENT_RESULTS_JOB, REFRESH_JOB
from orchestration.serving.store import ServingStore
from orchestration.settings import Settings

REPLAY_EXPERIMENT = "replay-champion-vs-popularity"
CHALLENGER_ORDERING = FALLBACK_PIPELINE  # all-time popularity over the champion's candidates


def start_replay_experiment(settings: Settings, experiments: ExperimentStore) -> ExperimentDesign:
    """Register the challenger, start the experiment (half and half) and publish its lists."""
    from ml import tracking

    client = tracking.configure(settings.mlflow_tracking_uri, settings.mlflow_artifact_location)
    champion = tracking.alias_version(client, tracking.CHAMPION)
    if champion is None:
        raise click.ClickException("the replay's build registered no champion to experiment on")
    pipeline = tracking.load_version(settings.mlflow_tracking_uri, champion)
    challenger = tracking.register_pipeline(
        pipeline.with_ordering(CHALLENGER_ORDERING),
        settings.mlflow_tracking_uri,
        settings.mlflow_artifact_location,
        run_name=f"replay-challenger-{CHALLENGER_ORDERING}",
        experiment=AB_TESTS,
    )
    design = ExperimentDesign(
        REPLAY_EXPERIMENT,
        (
            Variant("champion", 0.5, tracking.CHAMPION, champion),
            Variant(CHALLENGER_ORDERING, 0.5, challenger, challenger),
        ),
    )
    experiments.start(design)
    published = publish_experiment_lists(settings)
    click.echo(
        f"  experiment {REPLAY_EXPERIMENT}: champion (version {champion}) against "
        f"{CHALLENGER_ORDERING} (version {challenger}), half the users each; "
        f"{published.rows} list rows published"
    )
    return design


def expose(
    experiments: ExperimentStore, store: ServingStore, continuing: pd.DataFrame, k: int
) -> int:
    """Serve each user about to continue, one second before their next event; log it.

    The list is the one GET /recommendations returns an enrolled user: their variant's, else
    the trending list. Returns the exposures logged.
    """
    trending = store.trending(k)
    next_event = continuing.groupby(USER_ID)[TIMESTAMP].min()
    logged = 0
    for user, moment in next_event.items():
        assigned = experiments.assigned(str(user))
        if assigned is None:
            continue
        lists = experiments.recommendations(assigned, str(user), k)
        if lists.empty:
            lists = trending
        if lists.empty:
            continue
        served_at = pd.to_datetime(moment, unit="s") - pd.Timedelta(seconds=1)
        experiments.log_exposure(
            assigned, str(user), lists[ITEM_ID].tolist(), lists[MODEL_VERSION].iat[0], served_at
        )
        logged += 1
    return logged


def finish_replay_experiment(settings: Settings, last_continuations: pd.DataFrame, inputs) -> bool:
    """Land the last step's continuations, refresh, analyse; print the verdict. True if it ran."""
    path = inputs / "experiment_outcomes.csv"
    last_continuations.to_csv(path, index=False)
    ingest_files(settings, {"events": [path]})
    if not run_job_in_process(REFRESH_JOB, settings).success:
        click.echo("  the last refresh failed: the experiment was not analysed")
        return False
    result = run_job_in_process(
        EXPERIMENT_RESULTS_JOB,
        settings,
        ops={"experiment_results": {"config": {"name": REPLAY_EXPERIMENT}}},
    )
    if not result.success:
        click.echo("  the experiment's analysis failed (see the Dagster UI)")
        return False
    metadata = result.asset_materializations_for_node("experiment_results")[0].metadata
    click.echo(f"\nexperiment {REPLAY_EXPERIMENT} on the held-out behaviour (per exposed user):")
    click.echo(str(metadata["variants"].value))
    click.echo(str(metadata["against_control"].value))
    click.echo(f"verdict: {metadata['verdict'].value}")
    click.echo(f"MLflow run {metadata['mlflow_run_id'].value} (experiment {AB_TESTS})")
    return True
