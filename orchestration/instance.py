"""The Dagster instance under FRESHRANK_HOME, and in-process job runs on it (CLI, tests)."""

from __future__ import annotations

import shutil
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from dagster import DagsterInstance, Definitions, ExecuteInProcessResult

from orchestration.resources import run_resources
from orchestration.settings import Settings

INSTANCE_TEMPLATE = Path(__file__).with_name("dagster.yaml")
# In-process runs print only warnings from Dagster's console logger (freshrank's own progress
# logs go through the `freshrank` logger); the full event log is on the instance and in the UI.
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def prepare_dagster_home(settings: Settings) -> Path:
    """Create the deployment's DAGSTER_HOME with freshrank's instance config."""
    settings.ensure_dirs()
    config = settings.dagster_home / "dagster.yaml"
    if not config.exists():
        shutil.copyfile(INSTANCE_TEMPLATE, config)
    return settings.dagster_home


def open_instance(settings: Settings) -> DagsterInstance:
    """The deployment's Dagster instance (close it after use: ``with open_instance(...)``)."""
    return DagsterInstance.from_config(str(prepare_dagster_home(settings)))


def run_job_in_process(
    job_name: str,
    settings: Settings,
    tags: dict[str, str] | None = None,
    definitions: Definitions | None = None,
    ops: dict[str, dict] | None = None,
    instance: DagsterInstance | None = None,
) -> ExecuteInProcessResult:
    """Run one of the code location's jobs in this process, recorded on the real instance.

    ``definitions`` narrows what is imported (the ingest job's own, say); by default the whole
    code location. ``ops`` is the run config's `ops` section (assets' Config values).
    ``instance``: the deployment's instance, already open (a caller that reads the run back
    afterwards opens it once: each opening checks the storage's schema, about 0.3 s).
    """
    if definitions is None:
        from orchestration.definitions import defs

        definitions = defs
    job = definitions.resolve_job_def(job_name)
    with opened(instance, settings) as active:
        return job.execute_in_process(
            instance=active,
            raise_on_error=False,
            tags=tags,
            run_config={**QUIET_CONSOLE, "ops": ops} if ops else QUIET_CONSOLE,
            resources=run_resources(settings),
        )


def opened(
    instance: DagsterInstance | None, settings: Settings
) -> AbstractContextManager[DagsterInstance]:
    """``instance`` as it is (the caller keeps it open), or the deployment's instance opened
    for the block."""
    return nullcontext(instance) if instance is not None else open_instance(settings)
