"""`freshrank experiment start|status|analyse|stop`: run an A/B test between registered versions.

Heavy imports (MLflow, Dagster, the ranking stack) happen inside the commands, so `freshrank
--help` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import pandas as pd

from ml.experiments.assignment import VARIANT_SPEC_EXAMPLE, ExperimentDesign, Variant, parse_variant
from orchestration.settings import Settings, get_settings

if TYPE_CHECKING:
    from orchestration.experiments.store import ExperimentRecord, ExperimentStore


def resolve_versions(settings: Settings, design: ExperimentDesign) -> ExperimentDesign:
    """The design with every variant's model (a version or an alias) resolved to a version."""
    from ml import tracking

    client = tracking.configure(settings.mlflow_tracking_uri, settings.mlflow_artifact_location)
    resolved = []
    for variant in design.variants:
        if variant.model.isdigit():
            version = variant.model
            try:
                client.get_model_version(tracking.REGISTERED_MODEL, version)
            except Exception as error:  # MlflowException: the version does not exist
                raise ValueError(
                    f"variant {variant.name!r}: {tracking.REGISTERED_MODEL} has no version "
                    f"{version} ({type(error).__name__})"
                ) from None
        else:
            version = tracking.alias_version(client, variant.model)
            if version is None:
                raise ValueError(
                    f"variant {variant.name!r}: no version of {tracking.REGISTERED_MODEL} has the "
                    f"alias {variant.model!r}; give a version number (NAME:VERSION=SHARE) or an "
                    "alias that exists (see the MLflow UI)"
                )
        resolved.append(Variant(variant.name, variant.share, variant.model, version))
    return ExperimentDesign(design.name, tuple(resolved))


def _experiments(settings: Settings) -> ExperimentStore:
    """The experiments on the serving store's engine (SQLite in WAL mode, as the API reads it)."""
    from orchestration.experiments.store import ExperimentStore
    from orchestration.serving.store import ServingStore

    return ExperimentStore(ServingStore(settings.serving_url).engine)


def describe(record: ExperimentRecord, counts: pd.DataFrame) -> str:
    """An experiment's definition, exposures per variant and newest verdict, for a person."""
    counts = counts.set_index("variant") if not counts.empty else counts
    rows = [
        {
            "variant": variant.name,
            "model": variant.model,
            "version": variant.version,
            "share": variant.share,
            "exposures": int(counts["exposures"].get(variant.name, 0)) if len(counts) else 0,
            "users": int(counts["users"].get(variant.name, 0)) if len(counts) else 0,
        }
        for variant in record.design.variants
    ]
    lines = [
        f"experiment {record.name}: {record.status}, started {record.started_at:%Y-%m-%d %H:%M} UTC"
        + (f", stopped {record.stopped_at:%Y-%m-%d %H:%M} UTC" if record.stopped_at else "")
        + (f", promoted {record.promoted}" if record.promoted else ""),
        pd.DataFrame(rows).to_markdown(index=False),
    ]
    if record.verdict:
        lines.append(f"verdict ({record.analysed_at:%Y-%m-%d %H:%M} UTC): {record.verdict}")
    else:
        lines.append("no analysis yet: `freshrank experiment analyse`")
    return "\n".join(lines)


@click.group()
def experiment() -> None:
    """A/B experiments between registered model versions (see the README's Experiments)."""


@experiment.command()
@click.argument("name")
@click.option(
    "--variant",
    "specs",
    multiple=True,
    required=True,
    help=f"NAME[:MODEL]=SHARE, repeatable, the first is the control; MODEL is a version "
    f"number or an alias (default: NAME itself), e.g. {VARIANT_SPEC_EXAMPLE}. Shares add up "
    "to at most 1; users beyond them are not enrolled.",
)
@click.option(
    "--publish/--no-publish",
    default=True,
    show_default=True,
    help="Write every variant's lists now (else with the next publish or refresh).",
)
def start(name: str, specs: tuple[str, ...], publish: bool) -> None:
    """Start experiment NAME: users are split by a stable hash of NAME and their id."""
    settings = get_settings()
    try:
        design = ExperimentDesign(name, tuple(parse_variant(spec) for spec in specs))
        design = resolve_versions(settings, design)
        experiments = _experiments(settings)
        experiments.start(design)
        experiments.engine.dispose()
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    click.echo(
        f"experiment {name} starting: "
        + ", ".join(f"{v.name} = version {v.version} ({v.share:.0%})" for v in design.variants)
    )
    if not publish:
        click.echo("its lists are written with the next publish; users are served once they are")
        return
    from orchestration.experiments.lists import publish_experiment_lists

    published = publish_experiment_lists(settings)
    click.echo(f"published {published.rows} rows; the API now serves the variants:")
    click.echo(published.variants.to_markdown(index=False))


@experiment.command()
@click.argument("name", required=False)
def status(name: str | None) -> None:
    """Show experiment NAME (default: every experiment, newest first)."""
    experiments = _experiments(get_settings())
    try:
        records = [experiments.get(name)] if name else experiments.all()
        if not records:
            click.echo("no experiments yet: `freshrank experiment start NAME --variant ...`")
        for record in records:
            click.echo(describe(record, experiments.exposure_counts(record.name)) + "\n")
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    finally:
        experiments.engine.dispose()


@experiment.command()
@click.argument("name", required=False)
def analyse(name: str | None) -> None:
    """Attribute outcomes, test the variants, log the verdict to MLflow and the Dagster UI."""
    from orchestration.instance import run_job_in_process
    from orchestration.jobs import EXPERIMENT_RESULTS_JOB

    settings = get_settings()
    result = run_job_in_process(
        EXPERIMENT_RESULTS_JOB,
        settings,
        ops={"experiment_results": {"config": {"name": name or ""}}},
    )
    if not result.success:
        failures = result.get_step_failure_events()
        message = failures[0].event_specific_data.error.message if failures else "failed"
        raise click.ClickException(f"the analysis failed: {message.strip()}")
    metadata = {
        key: value.value
        for key, value in result.asset_materializations_for_node("experiment_results")[
            0
        ].metadata.items()
    }
    click.echo(f"experiment {metadata['experiment']} ({metadata['status']}):")
    click.echo(metadata["variants"])
    click.echo("\nagainst the control:")
    click.echo(metadata["against_control"])
    click.echo(f"\nverdict: {metadata['verdict']}")
    click.echo(f"MLflow run {metadata['mlflow_run_id']}; plot in the Dagster UI and MLflow")


@experiment.command()
@click.argument("name")
@click.option("--promote", "promoted", default=None, help="Make this variant's version champion.")
def stop(name: str, promoted: str | None) -> None:
    """Stop experiment NAME; everyone gets the champion's list again."""
    settings = get_settings()
    experiments = _experiments(settings)
    try:
        record = experiments.get(name)
        version = None if promoted is None else record.design.variant(promoted).version
        experiments.stop(name, promoted=promoted)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    finally:
        experiments.engine.dispose()
    from orchestration.experiments.lists import state_name
    from orchestration.serving.state import state_path

    for variant in record.design.variants:  # the variants' fitted pipelines are no longer used
        state_path(settings, state_name(name, variant.name)).unlink(missing_ok=True)
    click.echo(f"experiment {name} stopped; its exposures stay for `freshrank experiment analyse`")
    if version is None:
        return
    from ml import tracking

    client = tracking.configure(settings.mlflow_tracking_uri, settings.mlflow_artifact_location)
    replaced = tracking.promote(client, version)
    click.echo(
        f"{tracking.REGISTERED_MODEL} version {version} ({promoted}) is champion (was "
        f"{replaced or 'none'}); champion_change_sensor or `freshrank build` rescores everyone"
    )
