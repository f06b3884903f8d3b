"""The code location's resources: the deployment's settings, dbt, the compute engine, and the
ranking helpers a refresh run starts with.

Assets, checks, sensors and schedules take the settings as a resource (``settings:
ResourceParam[Settings]``) and read nothing from the environment. A run the daemon or the UI
launches reads them once, from its process's environment, as its resources start; a run this
process starts (orchestration.instance.run_job_in_process: every command, the replay, the
tests) is handed the caller's settings object, so a second deployment in one process (the
replay's) is a second Settings, not a rewritten environment.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from dagster import InitResourceContext, resource

from orchestration.settings import Settings

if TYPE_CHECKING:
    from ml.pipeline.parallel import WarmPool
    from orchestration.compute import ComputeResource

SETTINGS = "settings"
RANKING_HELPERS = "ranking_helpers"


@resource(description="The deployment's settings (orchestration/settings.py), read once a run.")
def settings_resource(_: InitResourceContext) -> Settings:
    return Settings.from_env()


@resource(
    required_resource_keys={SETTINGS, "compute"},
    description="Worker processes that rank beside a refresh run (none for other runs).",
)
def ranking_helpers_resource(context: InitResourceContext) -> Iterator[WarmPool | None]:
    """A refresh run's ranking helpers for the length of the run (orchestration.serving.scoring.
    ranking_helpers): they start with the run, so they have read the saved serving state by the
    time the run has loaded its files and built dbt's models. A run the daemon launches is a
    new process, as a cold `freshrank refresh` is. None for other jobs, on Ray, and when this
    process already has a pool open (a `--watch` refresher's, or the one `freshrank refresh`
    opens before its run)."""
    from ml.pipeline.parallel import active_warm_pool
    from orchestration.compute import LOCAL
    from orchestration.jobs import REFRESH_JOBS
    from orchestration.serving.scoring import ranking_helpers

    run = context.run
    settings: Settings = context.resources.settings
    compute: ComputeResource = context.resources.compute
    if (
        run is None
        or run.job_name not in REFRESH_JOBS
        or active_warm_pool() is not None
        or compute.engine_for(settings) != LOCAL
    ):
        yield None
        return
    with ranking_helpers(settings) as helpers:
        yield helpers


def code_location_resources() -> dict[str, object]:
    """The resources of the code location, as the UI and the daemon's runs get them."""
    from orchestration.compute import ComputeResource
    from orchestration.warehouse.dbt import dbt_resource

    return {
        SETTINGS: settings_resource,
        "dbt": dbt_resource(),
        "compute": ComputeResource(),
        RANKING_HELPERS: ranking_helpers_resource,
    }


def run_resources(settings: Settings) -> dict[str, object]:
    """What a run started in this process is handed in place of the code location's: these
    settings."""
    return {SETTINGS: settings}
