"""The dbt models of the behaviour tables as Dagster assets (dbt tests become asset checks)."""

import contextlib
import importlib.metadata
import json
import os
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import duckdb
from dagster import AssetExecutionContext, ResourceParam
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)
from packaging import version

from ml.environment import environment_restored
from orchestration.settings import DBT_PROJECT_DIR, Settings, get_settings
from orchestration.warehouse.guard import warehouse_writer
from orchestration.warehouse.spark import export_raw_tables, import_marts

WAREHOUSE_GROUP = "warehouse"

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)

PARTIAL_PARSE = "partial_parse.msgpack"
# Folders of a dbt project that hold no source of its manifest.
NOT_PARSED = frozenset({"target", "logs", "dbt_packages", "__pycache__"})


def project_fingerprint(project_dir: Path) -> tuple[int, int]:
    """(files, newest change time) of the dbt project's sources (NOT_PARSED folders aside)."""
    files, newest = 0, 0
    for path in Path(project_dir).rglob("*"):
        parts = path.relative_to(project_dir).parts
        if parts[0] in NOT_PARSED or not path.is_file():
            continue
        files += 1
        newest = max(newest, path.stat().st_mtime_ns)
    return files, newest


def manifest_is_current(project_dir: Path, manifest: Path) -> bool:
    """Whether ``manifest`` was written after every file of the dbt project changed last."""
    if not manifest.exists():
        return False
    return project_fingerprint(project_dir)[1] <= manifest.stat().st_mtime_ns


def dbt_executable() -> str:
    """The dbt of this environment, so an un-activated venv (or a code server) still finds it."""
    for candidate in (Path(sys.prefix) / "bin" / "dbt", Path(sys.executable).with_name("dbt")):
        if candidate.exists():
            return str(candidate)
    return shutil.which("dbt") or "dbt"


class FreshrankDbtCliResource(DbtCliResource):
    """dagster-dbt's dbt resource without two start-up costs freshrank has no use for.

    Before every dbt command dagster-dbt runs `dbt --version` in a subprocess and builds a dbt
    adapter in-process (for column metadata and row counts, which freshrank does not fetch):
    about six seconds of a refresh that would otherwise take a few. The version comes from the
    installed dbt-core instead (the executable is this environment's, see dbt_executable).
    """

    @cached_property
    def _cli_version(self) -> version.Version:
        return version.parse(importlib.metadata.version("dbt-core"))

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> None:
        return None

    def build_in_process(
        self, args: Sequence[str], context: AssetExecutionContext, settings: Settings
    ) -> tuple[list[Any], Path]:
        """(the Dagster events of `dbt.cli(args, context=context).stream()`, the command's
        target folder), run by dbt's Python API in this process for the deployment of
        ``settings``.

        A dbt process costs a refresh about two seconds before dbt does anything (its
        interpreter and imports; the work itself is under a second on a refresh's rows). This
        runs the same command on the same selection with dbt's `dbtRunner`, then turns its
        result events into Dagster events with dagster-dbt's own translation, so the assets
        and checks recorded are the same. Events come after dbt finishes, as with `stream()`
        here; a failed command raises after them, naming dbt's errors.
        """
        from dagster import Failure
        from dagster_dbt.asset_utils import (
            extract_runtime_selection_from_args,
            get_updated_cli_invocation_params_for_context,
        )
        from dagster_dbt.core.dbt_cli_event import DbtCoreCliEventMessage
        from dbt.cli.main import dbtRunner
        from dbt_common.events.functions import msg_to_dict

        cleaned, selects, excludes = extract_runtime_selection_from_args(args)
        params = get_updated_cli_invocation_params_for_context(
            context=context,
            manifest={},
            dagster_dbt_translator=translator,
            runtime_selects=selects,
            runtime_excludes=excludes,
        )
        project_dir = Path(self.project_dir)
        target_path = project_dir / self._get_unique_target_path(context=context)
        seed_partial_parse(target_path, settings)
        indirect = ["--indirect-selection", params.indirect_selection]
        locations = dbt_locations(project_dir, Path(self.profiles_dir), target_path)
        command = [
            # What dagster-dbt's environment says to a dbt process: no usage reports.
            "--no-send-anonymous-usage-stats",
            *cleaned,
            *params.selection_args,
            *(indirect if params.indirect_selection else []),
            *locations,
        ]
        raw_events: list[dict[str, Any]] = []
        manifest = parsed_manifest(cleaned, locations, project_dir)
        result = dbtRunner(
            manifest=manifest, callbacks=[lambda event: raw_events.append(msg_to_dict(event))]
        ).invoke(command)
        release_duckdb()
        events = [
            event
            for raw_event in raw_events
            for event in DbtCoreCliEventMessage(
                raw_event=raw_event, event_history_metadata={}
            ).to_default_asset_events(
                manifest=params.manifest,
                dagster_dbt_translator=params.dagster_dbt_translator,
                context=context,
                target_path=target_path,
                project=params.dbt_project,
            )
        ]
        if not result.success:
            errors = [
                event["info"]["msg"] for event in raw_events if event["info"]["level"] == "error"
            ]
            if result.exception is not None:
                errors.append(str(result.exception))
            raise Failure(
                f"dbt {' '.join(cleaned[:1])} failed in-process:\n" + "\n".join(errors or ["?"])
            )
        return events, target_path


# The last parse of this process: (what it depends on, dbt's Manifest). A warm refresher (`freshrank
# refresh --watch`) builds the same project with the same vars every batch; its later builds
# start from this parse instead of dbt's partial parse (reading and hashing every project file).
_parsed: tuple[tuple, Any] | None = None


def dbt_locations(project_dir: Path, profiles_dir: Path, target_path: Path) -> list[str]:
    """Where an in-process dbt command reads the project and writes its target and logs."""
    return [
        "--project-dir",
        str(project_dir),
        "--profiles-dir",
        str(profiles_dir),
        "--target-path",
        str(target_path),
        "--log-path",
        str(target_path),
        # No manifest.json or run_results.json: nothing reads them, and writing the manifest
        # costs a refresh a quarter of a second.
        "--no-write-json",
    ]


def parsed_manifest(args: Sequence[str], locations: Sequence[str], project_dir: Path):
    """dbt's Manifest of the project for a command with ``args`` (its vars and target) run at
    ``locations`` (dbt_locations), parsed once per process while the project's files, the vars,
    the target, the profiles and the warehouse path stay the same: dbt's documented reuse of a
    parsed manifest across invocations."""
    global _parsed
    parsing = [
        part
        for name in ("--vars", "--target")
        if _option(args, name) is not None
        for part in (name, _option(args, name))
    ]
    key = (
        tuple(parsing),
        _option(locations, "--profiles-dir"),
        os.environ.get("FRESHRANK_WAREHOUSE_PATH"),
        project_fingerprint(project_dir),
    )
    if _parsed is not None and _parsed[0] == key:
        return _parsed[1]
    from dbt.cli.main import dbtRunner

    command = ["parse", "--no-send-anonymous-usage-stats", *parsing, *locations]
    result = dbtRunner().invoke(command)
    if not result.success:  # the build that follows parses again and names the error
        return None
    _parsed = (key, result.result)
    return result.result


def _option(args: Sequence[str], name: str) -> str | None:
    """The value after ``name`` in a dbt command line (None: not given)."""
    args = list(args)
    return args[args.index(name) + 1] if name in args[:-1] else None


def dbt_resource() -> DbtCliResource:
    return FreshrankDbtCliResource(
        project_dir=dbt_project, profiles_dir=str(DBT_PROJECT_DIR), dbt_executable=dbt_executable()
    )


def dbt_vars(settings: Settings) -> dict[str, Any]:
    """Every var dbt_project.yml declares, from the settings: they override the file's defaults."""
    return {
        "event_weights": settings.event_weights,
        "rating_max": settings.rating_max,
        "trending_short_window_days": settings.trending_short_window_days,
        "trending_long_window_days": settings.trending_long_window_days,
        "trending_half_life_days": settings.trending_half_life_days,
        "history_length": settings.history_length,
        "covisitation_window_events": settings.covisitation_window_events,
        "covisitation_window_hours": settings.covisitation_window_hours,
        "covisitation_backward_weight": settings.covisitation_backward_weight,
    }


class FreshrankDbtTranslator(DagsterDbtTranslator):
    """Puts every dbt model in the warehouse group; sources map to the ingest assets by meta."""

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if dbt_resource_props["resource_type"] == "source":
            return None
        return WAREHOUSE_GROUP


translator = FreshrankDbtTranslator(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))


@dbt_assets(manifest=dbt_project.manifest_path, dagster_dbt_translator=translator, pool="warehouse")
def warehouse_dbt_models(
    context: AssetExecutionContext, dbt: DbtCliResource, settings: ResourceParam[Settings]
) -> Iterator[Any]:
    """Staging, intermediate and mart models of the behaviour tables, built and tested by dbt."""
    log_path = settings.home / "logs" / f"dbt-{context.run_id}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # dagster-dbt echoes every dbt event to stdout; keep that in a log file so the CLI stays
    # readable. Events are yielded after dbt finishes (the build takes seconds).
    with (
        profile_environment(settings),
        warehouse_writer(settings.warehouse_path),
        open(log_path, "w") as log_file,
        contextlib.redirect_stdout(log_file),
    ):
        on_spark = settings.dbt_target == "spark"
        if on_spark:
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # not the machine's address
            with duckdb.connect(str(settings.warehouse_path)) as connection:
                export_raw_tables(connection, settings.spark_dir)
        command = ["build", "--target", settings.dbt_target]
        command += ["--vars", json.dumps(dbt_vars(settings))]
        if not context.selected_asset_check_keys:
            # A run without the data tests (a refresh) leaves out the unit tests of the models'
            # SQL too: they test the code, not the data, and every full build runs them.
            command += ["--exclude-resource-type", "unit_test"]
        # Spark's session would outlive the command in this process: it keeps a dbt process.
        if settings.dbt_in_process and not on_spark and isinstance(dbt, FreshrankDbtCliResource):
            events, run_target = dbt.build_in_process(command, context, settings)
        else:
            invocation = dbt.cli(command, context=context)
            events = list(invocation.stream())
            run_target = invocation.target_path
        if on_spark:
            with duckdb.connect(str(settings.warehouse_path)) as connection:
                import_marts(connection, settings.spark_dir)
    keep_partial_parse(run_target, settings)
    context.log.info(f"dbt build finished; its log is in {log_path}")
    yield from events


@contextlib.contextmanager
def profile_environment(settings: Settings) -> Iterator[None]:
    """The deployment's paths in the variables profiles.yml reads, for the block: dbt's
    profile (in this process or a dbt process) reads them from the environment, and a process
    that runs a second deployment (the replay) must not leave them pointing at it."""
    values = {
        "FRESHRANK_WAREHOUSE_PATH": str(settings.warehouse_path),
        "FRESHRANK_SPARK_DIR": str(settings.spark_dir),
    }
    with environment_restored(values):
        os.environ.update(values)
        yield


def keep_partial_parse(run_target: Path, settings: Settings) -> None:
    """Make this run's parse the one the next run starts from, then drop the run's target folder.

    dagster-dbt gives each invocation a target folder of its own and seeds it with the project's
    partial_parse.msgpack. That file must come from a parse with the same --vars and profile
    (the profile names the deployment's warehouse file), or dbt parses the whole project again
    (seconds, on every refresh). So the parse is kept twice: in the project's target folder,
    which dagster-dbt seeds a dbt process from, and in this deployment's cache, which the
    in-process runs start from (seed_partial_parse): two deployments on one checkout (tests, a
    second FRESHRANK_HOME) would otherwise invalidate each other's parse on every run. Each
    run's folder would also pile up.
    """
    parsed = run_target / PARTIAL_PARSE
    if parsed.exists():
        for kept in (_deployment_partial_parse(settings), _project_partial_parse()):
            kept.parent.mkdir(parents=True, exist_ok=True)
            staged = kept.with_suffix(f".{os.getpid()}.tmp")
            shutil.copyfile(parsed, staged)
            os.replace(staged, kept)  # atomic: a concurrent run reads the old file or the new one
    shutil.rmtree(run_target, ignore_errors=True)


def seed_partial_parse(run_target: Path, settings: Settings) -> None:
    """Start a run's target folder from this deployment's last parse, else the project's (see
    keep_partial_parse)."""
    for kept in (_deployment_partial_parse(settings), _project_partial_parse()):
        if kept.exists():
            run_target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(kept, run_target / PARTIAL_PARSE)
            return


def _project_partial_parse() -> Path:
    """The project target folder's partial_parse.msgpack (what dagster-dbt seeds from)."""
    return Path(dbt_project.project_dir) / dbt_project.target_path / PARTIAL_PARSE


def _deployment_partial_parse(settings: Settings) -> Path:
    """This deployment's last parse (FRESHRANK_HOME's cache)."""
    return settings.home / "cache" / "dbt" / PARTIAL_PARSE


def release_duckdb() -> None:
    """Close the DuckDB database dbt-duckdb keeps open in this process after a command, so
    that the warehouse can be opened again (read-only, say) by the rest of the run."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    DuckDBConnectionManager.close_all_connections()


# Under `dagster dev`, dagster-dbt re-parses the project (a dbt process of a few seconds) in every
# process that loads these definitions: the code server, and each run's worker before the run
# starts. Only a project edited since its manifest needs it, and only that parse reads the
# settings as the module loads (profiles.yml names the warehouse).
if dbt_project.preparer.using_dagster_dev() and not manifest_is_current(
    DBT_PROJECT_DIR, Path(dbt_project.manifest_path)
):
    with profile_environment(get_settings()):
        dbt_project.prepare_if_dev()  # re-parses (dbt must be on PATH)
