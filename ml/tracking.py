"""MLflow: log a backtest run, register its winning pipeline as `challenger`, gate, move `champion`.

Aliases on the registered model carry the review state: a new version is `challenger`; it becomes
`champion` only through `promote` (by the gate or a person), which keeps the one it replaced as
`previous-champion`, so `rollback` is moving the alias back.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml.environment import environment_restored
from ml.pipeline.backtest import BacktestConfig, BacktestResult
from ml.pipeline.pipeline import PipelineConfig, RankingPipeline

logger = logging.getLogger("freshrank.tracking")

REGISTERED_MODEL = "freshrank-ranking"
EXPERIMENT = "freshrank"
CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous-champion"
GATE_METRIC = "backtest_ndcg"  # the winner's mean NDCG@k over the cuts
PIPELINE_TAG = "pipeline"
PIPELINE_FILE = "pipeline.pkl"
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")  # the registered model's wrapper
URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")  # MLflow writes them
PROGRESS_BAR_VARIABLE = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
# What `freshrank evaluate` shows of the newest backtest run: (artifact, heading).
EVALUATION_PARTS = (
    ("backtests/summary.md", ""),
    (
        "backtests/winner_versus_others.md",
        "The winner minus every other pipeline, NDCG over the same (cut, user) pairs "
        "(95% paired-bootstrap interval):",
    ),
    ("backtests/notes.txt", "Notes:"),
)


@dataclass(frozen=True)
class TrackedRun:
    run_id: str
    version: str
    url_hint: str


@dataclass(frozen=True)
class GateDecision:
    """Whether a challenger may become champion, and why (one line per criterion)."""

    passed: bool
    reasons: list[str]


def _point_mlflow_at(tracking_uri: str) -> None:
    """MLflow's tracking and registry store for this process, leaving the environment as it
    was: MLflow also writes the URI into URI_VARIABLES (for child processes), and a process
    that works on a second deployment (the replay) must not change what the settings of the
    first read from there. In this process MLflow uses the URI it was set, not the variables."""
    import mlflow

    with environment_restored(URI_VARIABLES):
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)


def configure(tracking_uri: str, artifact_location: str) -> Any:
    """Point MLflow at the tracking store and make sure the experiment exists; returns a client."""
    import mlflow
    from mlflow import MlflowClient

    _point_mlflow_at(tracking_uri)
    # Artifacts here are a few local files: a progress bar per read only clutters what the CLI
    # prints (`freshrank evaluate`, the build report). Set the variable to true to see it.
    os.environ.setdefault(PROGRESS_BAR_VARIABLE, "false")
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    if client.get_experiment_by_name(EXPERIMENT) is None:
        client.create_experiment(EXPERIMENT, artifact_location=artifact_location)
    mlflow.set_experiment(EXPERIMENT)
    return client


def _metric_name(*parts: str) -> str:
    """MLflow accepts letters, digits, `_ - . / ` and spaces in metric names."""
    name = ".".join(part.replace("@", "_at_") for part in parts)
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", name)


def _ndcg_by_cut_plot(result: BacktestResult):
    """NDCG@k per cut, one line per pipeline (the winner drawn thick)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    column = f"ndcg@{result.k}"
    overall = result.table[result.table["segment"] == "overall"]
    figure, axis = plt.subplots(figsize=(9, 5))
    for name, rows in overall.groupby("pipeline"):
        axis.plot(
            rows["cut"].str.slice(0, 10),
            rows[column],
            marker="o",
            linewidth=3 if name == result.winner else 1,
            label=name,
        )
    axis.set_xlabel("cut (event time)")
    axis.set_ylabel(column)
    axis.set_title("rolling-origin backtests: every pipeline at every cut")
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    return figure


def _importance_plot(result: BacktestResult):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = result.importance.head(20)[::-1]
    figure, axis = plt.subplots(figsize=(7, 6))
    axis.barh(top.index, top.to_numpy())
    axis.set_xlabel("total gain")
    axis.set_title("what the ranker leans on")
    figure.tight_layout()
    return figure


def log_backtest_run(
    result: BacktestResult,
    pipeline_config: PipelineConfig,
    backtest_config: BacktestConfig,
    data: dict[str, Any],
    tracking_uri: str,
    artifact_location: str,
) -> TrackedRun:
    """Log params, per-cut tables, plots and the winning pipeline; register it as challenger."""
    import mlflow

    client = configure(tracking_uri, artifact_location)
    with mlflow.start_run(run_name=f"backtests-{result.winner}") as run:
        params = {
            f"pipeline.{name}": str(value)
            for name, value in asdict(pipeline_config).items()
            if name != "rules"
        }
        params.update(
            {f"backtest.{name}": str(value) for name, value in asdict(backtest_config).items()}
        )
        params["winner"] = result.winner
        params["level_with"] = ", ".join(result.level_with) or "none"
        mlflow.log_params(params)
        mlflow.set_tags({f"data.{name}": str(value) for name, value in data.items()})
        for name in result.pipelines:
            for segment in ("overall", "new_user", "returning_user", "new_item_targets"):
                value = result.mean_ndcg(name, segment)
                if np.isfinite(value):
                    mlflow.log_metric(_metric_name(name, segment, f"ndcg@{result.k}"), value)
        if np.isfinite(result.mean_ndcg(result.winner)):
            mlflow.log_metric(GATE_METRIC, result.mean_ndcg(result.winner))
        mlflow.log_text(result.table.to_csv(index=False), "backtests/per_cut.csv")
        mlflow.log_text(result.summary.round(4).to_markdown(), "backtests/summary.md")
        if not result.comparisons.empty:
            mlflow.log_text(
                result.comparisons.to_markdown(index=False), "backtests/winner_versus_others.md"
            )
        if result.notes:
            mlflow.log_text("\n".join(result.notes), "backtests/notes.txt")
        if not result.table.empty:
            mlflow.log_figure(_ndcg_by_cut_plot(result), "plots/ndcg_by_cut.png")
        if not result.importance.empty:
            mlflow.log_text(result.importance.to_csv(), "ranker/feature_importance.csv")
            mlflow.log_figure(_importance_plot(result), "plots/feature_importance.png")
        model_uri = _log_pipeline_model(result.pipeline)
        run_id = run.info.run_id
    version = _register(client, model_uri, result.winner)
    client.set_model_version_tag(
        REGISTERED_MODEL, version, GATE_METRIC, f"{result.mean_ndcg(result.winner):.6f}"
    )
    client.set_registered_model_alias(REGISTERED_MODEL, CHALLENGER, version)
    logger.info(
        "logged run %s and registered %s version %s (%s) as %s",
        run_id,
        REGISTERED_MODEL,
        version,
        result.winner,
        CHALLENGER,
    )
    return TrackedRun(
        run_id=run_id, version=version, url_hint=f"experiment {EXPERIMENT}, run {run_id}"
    )


def register_pipeline(
    pipeline: RankingPipeline,
    tracking_uri: str,
    artifact_location: str,
    run_name: str,
    experiment: str,
    alias: str | None = CHALLENGER,
) -> str:
    """Log and register an already fitted pipeline as a new version (no backtests); its number.

    For pipelines made outside a training run, e.g. a baseline ordering of the champion's
    fitted sources to test against it online. The run goes to MLflow experiment
    ``experiment``: not EXPERIMENT, whose newest run `latest_evaluation` reads as a backtest.
    The version gets ``alias`` (None: none).
    """
    import mlflow

    client = configure(tracking_uri, artifact_location)
    experiment_id = experiment_named(client, experiment, artifact_location)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name):
        mlflow.log_param("pipeline", pipeline.name)
        model_uri = _log_pipeline_model(pipeline)
    version = _register(client, model_uri, pipeline.name)
    if alias is not None:
        client.set_registered_model_alias(REGISTERED_MODEL, alias, version)
    return version


def experiment_named(client: Any, name: str, artifact_location: str) -> str:
    """The id of MLflow experiment ``name``, created (with the artifact location) if missing."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location)


def _log_pipeline_model(pipeline: RankingPipeline) -> str:
    """Log the fitted pipeline as the active run's pyfunc `model`; its model URI."""
    import mlflow

    with tempfile.TemporaryDirectory() as folder:
        pipeline_path = Path(folder) / PIPELINE_FILE
        with pipeline_path.open("wb") as handle:
            pickle.dump(pipeline, handle)
        logged = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_CODE),  # models from code: the wrapper is not pickled
            artifacts={"pipeline": str(pipeline_path)},
            pip_requirements=_requirements(),
        )
    return logged.model_uri


def _register(client: Any, model_uri: str, pipeline_name: str) -> str:
    """Register a logged model (its URI, `models:/...`: MLflow 3 keeps logged models apart from
    the run's artifacts) as a new version tagged with its pipeline's name; its number."""
    import mlflow

    registered = mlflow.register_model(model_uri, REGISTERED_MODEL)
    version = str(registered.version)
    client.set_model_version_tag(REGISTERED_MODEL, version, PIPELINE_TAG, pipeline_name)
    return version


def _requirements() -> list[str]:
    import importlib.metadata

    packages = ("pandas", "numpy", "scipy", "lightgbm", "faiss-cpu", "mlflow", "torch")
    return [f"{name}=={importlib.metadata.version(name).split('+')[0]}" for name in packages]


def alias_version(client: Any, alias: str) -> str | None:
    """The version an alias points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(REGISTERED_MODEL, alias).version)
    except MlflowException:
        return None


def registry_stamp(tracking_uri: str) -> str | None:
    """A fingerprint that changes whenever a SQLite tracking store commits anything (an alias
    move included), read without MLflow: the file's size and modification time, SQLite's own
    file change counter (header bytes 24-27, bumped by every commit outside WAL mode) and the
    write-ahead log's size and time. None: not a SQLite store, so there is nothing this cheap
    to compare, and the registry must be asked."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    parts = []
    for path in (database, database.with_name(database.name + "-wal")):
        try:
            status = path.stat()
        except FileNotFoundError:
            parts.append("-")
            continue
        parts.append(f"{status.st_size}:{status.st_mtime_ns}")
    try:
        with database.open("rb") as handle:
            header = handle.read(28)
    except FileNotFoundError:
        return None
    parts.append(header[24:28].hex())
    return "/".join(parts)


def load_version(tracking_uri: str, version: str, cache_dir: Path | None = None) -> RankingPipeline:
    """A registered version's fitted ranking pipeline.

    With ``cache_dir``, the version's files are downloaded once into it and reused: a registered
    version's artifacts never change, and a refresh should not copy the model every time.
    """

    _point_mlflow_at(tracking_uri)
    folder = _version_files(version, cache_dir)
    with next(folder.rglob(PIPELINE_FILE)).open("rb") as handle:
        return pickle.load(handle)


def version_pipeline(client: Any, version: str) -> str | None:
    """The pipeline name a registered version was tagged with (e.g. "ranker"), or None."""
    tags = client.get_model_version(REGISTERED_MODEL, version).tags
    return tags.get(PIPELINE_TAG)


def _version_files(version: str, cache_dir: Path | None) -> Path:
    import mlflow

    uri = f"models:/{REGISTERED_MODEL}/{version}"
    if cache_dir is None:
        return Path(mlflow.artifacts.download_artifacts(uri))
    cached = Path(cache_dir) / f"{REGISTERED_MODEL}-{version}"
    if not cached.exists():
        staging = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".download-"))
        mlflow.artifacts.download_artifacts(uri, dst_path=str(staging))
        try:
            staging.rename(cached)  # atomic: readers see the whole folder or none of it
        except OSError:  # another process cached this version first
            shutil.rmtree(staging, ignore_errors=True)
    return cached


def gate(
    challenger: str,
    figures: dict[str, float],
    champion: str | None,
    margin: float,
    level_with: Iterable[str] = (),
) -> GateDecision:
    """May the challenger pipeline replace the champion, judged on the same backtests?

    ``figures`` holds every pipeline's mean backtest NDCG@10 from one run. The challenger must
    be the best of them (so serving is never worse than a baseline), or level with those ahead
    of it (``level_with``: the backtests chose it over them, ml.pipeline.backtest.choose).
    Against a champion of another kind it must also lead by ``margin``; a champion of the same
    kind is the approved design retrained on newer data, which the challenger replaces when it
    still wins.
    """
    level_with = set(level_with)
    if not figures:
        reason = "no backtest could be evaluated (too little behaviour)"
        if champion is None:
            return GateDecision(True, [f"{reason}; the fallback pipeline serves until one can"])
        return GateDecision(False, [f"{reason}; the champion ({champion}) stays"])
    if challenger not in figures or not np.isfinite(figures[challenger]):
        return GateDecision(False, [f"no backtest figure for the challenger {challenger!r}"])
    mine = figures[challenger]
    reasons, passed = [], True
    for name, value in sorted(figures.items()):
        if name == challenger or not np.isfinite(value):
            continue
        if mine < value and name in level_with:
            reasons.append(
                f"level with {name} ({mine:.4f} vs {value:.4f}: within the paired-bootstrap "
                "interval) and, unlike it, ahead of the strongest baseline at every cut"
            )
            continue
        ok = mine >= value
        passed &= ok
        reasons.append(f"{'beats' if ok else 'does not beat'} {name}: {mine:.4f} vs {value:.4f}")
    if champion is None:
        reasons.append("no champion yet: the best pipeline becomes champion")
    elif champion == challenger:
        reasons.append(f"champion is the same pipeline ({champion}), retrained on newer data")
    elif champion not in figures:
        reasons.append(f"champion pipeline {champion!r} was not in these backtests")
        passed = False
    else:
        ok = mine >= figures[champion] + margin
        passed &= ok
        reasons.append(
            f"{'beats' if ok else 'does not beat'} champion ({champion}) by the margin: "
            f"{mine:.4f} vs {figures[champion]:.4f} + {margin:.4f}"
        )
    return GateDecision(bool(passed), reasons)


def promote(client: Any, version: str) -> str | None:
    """Make ``version`` champion; the replaced champion becomes previous-champion. Returns it."""
    current = alias_version(client, CHAMPION)
    known = registered_versions(client)
    if version not in known:
        listed = ", ".join(known) or "none yet: run `freshrank build` first"
        raise ValueError(f"{REGISTERED_MODEL} has no version {version!r} (versions: {listed})")
    if current == version:
        return current
    if current is not None:
        client.set_registered_model_alias(REGISTERED_MODEL, PREVIOUS_CHAMPION, current)
    client.set_registered_model_alias(REGISTERED_MODEL, CHAMPION, version)
    if alias_version(client, CHALLENGER) == version:
        client.delete_registered_model_alias(REGISTERED_MODEL, CHALLENGER)
    logger.info("champion is now version %s (was %s)", version, current)
    return current


def registered_versions(client: Any) -> list[str]:
    """The registered model's version numbers, oldest first ([] before the first build)."""
    versions = client.search_model_versions(f"name = '{REGISTERED_MODEL}'")
    return [str(number) for number in sorted(int(found.version) for found in versions)]


def rollback(client: Any) -> str:
    """Move champion back to previous-champion; returns the version now serving."""
    previous = alias_version(client, PREVIOUS_CHAMPION)
    if previous is None:
        raise RuntimeError(
            f"{REGISTERED_MODEL} has no {PREVIOUS_CHAMPION}: nothing to roll back to"
        )
    current = alias_version(client, CHAMPION)
    client.set_registered_model_alias(REGISTERED_MODEL, CHAMPION, previous)
    client.delete_registered_model_alias(REGISTERED_MODEL, PREVIOUS_CHAMPION)
    if current is not None:
        client.set_model_version_tag(REGISTERED_MODEL, current, "rolled_back", "true")
    logger.info("rolled back champion from %s to %s", current, previous)
    return previous


def latest_evaluation(tracking_uri: str, artifact_location: str) -> str | None:
    """The newest backtest run as text: the winner, the summary (markdown), the winner against
    every other pipeline with paired-bootstrap intervals, and the run's notes (each when
    logged); None without a run."""
    client = configure(tracking_uri, artifact_location)
    run_id = _latest_run_id(client)
    if run_id is None:
        return None
    winner = client.get_run(run_id).data.params.get("winner")
    parts = [f"Winner: {winner}"] if winner else []
    for artifact, heading in EVALUATION_PARTS:
        path = _artifact(client, run_id, artifact)
        if path is not None:
            text = path.read_text().strip()
            parts.append(f"{heading}\n\n{text}" if heading else text)
    return "\n\n".join(parts)


def latest_backtest_table(tracking_uri: str, artifact_location: str) -> pd.DataFrame | None:
    """The newest run's backtest table (pipeline, cut, segment, users, metrics), or None."""
    client = configure(tracking_uri, artifact_location)
    run_id = _latest_run_id(client)
    path = _artifact(client, run_id, "backtests/per_cut.csv") if run_id is not None else None
    return pd.read_csv(path) if path is not None else None


def latest_winner(tracking_uri: str, artifact_location: str) -> str | None:
    """The pipeline the newest backtest run chose (its ``winner`` param), or None."""
    client = configure(tracking_uri, artifact_location)
    run_id = _latest_run_id(client)
    return client.get_run(run_id).data.params.get("winner") if run_id is not None else None


def _latest_run_id(client: Any) -> str | None:
    """The newest backtest run's id, or None before the first."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0].info.run_id if runs else None


def _artifact(client: Any, run_id: str, artifact: str) -> Path | None:
    """A local copy of the run's ``artifact``, or None where the run did not log it."""
    import mlflow

    folder, _, name = artifact.rpartition("/")
    logged = {Path(entry.path).name for entry in client.list_artifacts(run_id, folder)}
    if name not in logged:
        return None
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact))
