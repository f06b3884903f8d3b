"""MLflow: log a training run, register it as `challenger`, gate and move the `champion` alias.

Aliases on the registered model carry the review state: a new version is `challenger`; it becomes
`champion` only through `promote` (by the gate or a person), which keeps the one it replaced as
`previous-champion`, so `rollback` is moving the alias back.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml.models.sequential import SequentialEnsemble, SequentialRecommender, model_from_state
from ml.training import BASELINES, BLENDED_MODEL, TrainingConfig, TrainingResult

logger = logging.getLogger("freshrank.tracking")

REGISTERED_MODEL = "freshrank-sequential"
EXPERIMENT = "freshrank"
CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous-champion"
GATE_METRIC = "ndcg_at_10"
STATE_FILE = "state.pt"
SERVING_FILE = "serving.json"


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


def configure(tracking_uri: str, artifact_location: str) -> Any:
    """Point MLflow at the tracking store and make sure the experiment exists; returns a client."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    if client.get_experiment_by_name(EXPERIMENT) is None:
        client.create_experiment(EXPERIMENT, artifact_location=artifact_location)
    mlflow.set_experiment(EXPERIMENT)
    return client


def _metric_name(model: str, segment: str, column: str) -> str:
    """MLflow accepts letters, digits, `_ - . / ` and spaces in metric names."""
    name = f"{model}.{segment}.{column.replace('@', '_at_')}"
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", name)


def _learning_curve(result: TrainingResult):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(record["epoch"]) for record in result.epochs]
    figure, loss_axis = plt.subplots(figsize=(7, 4))
    loss_axis.plot(epochs, [record["loss"] for record in result.epochs], "o-", color="tab:blue")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss", color="tab:blue")
    if any("validation" in record for record in result.epochs):
        ndcg_axis = loss_axis.twinx()
        ndcg_axis.plot(
            epochs,
            [record.get("validation", np.nan) for record in result.epochs],
            "s-",
            color="tab:orange",
        )
        ndcg_axis.set_ylabel("early-stopping NDCG@10", color="tab:orange")
        ndcg_axis.axvline(result.best_epoch, color="grey", linestyle=":")
    loss_axis.set_title("sequential recommender: learning curve")
    figure.tight_layout()
    return figure


def _metric_by_segment(result: TrainingResult, column: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = result.evaluation.pivot(index="model", columns="segment", values=column)
    figure, axis = plt.subplots(figsize=(9, 4.5))
    table.plot.bar(ax=axis)
    axis.set_ylabel(column)
    axis.set_title(f"{column} by model and segment (temporal holdout)")
    axis.tick_params(axis="x", rotation=30)
    figure.tight_layout()
    return figure


def log_training_run(
    result: TrainingResult,
    config: TrainingConfig,
    data: dict[str, Any],
    tracking_uri: str,
    artifact_location: str,
) -> TrackedRun:
    """Log params, per-epoch metrics, the evaluation table, plots and the model; register it."""
    import mlflow
    import torch

    client = configure(tracking_uri, artifact_location)
    with mlflow.start_run(run_name="sequential-training") as run:
        params = {f"sequential.{name}": value for name, value in asdict(config.sequential).items()}
        params.update(
            k=config.k,
            reveal_fraction=config.reveal_fraction,
            early_stopping_fraction=config.early_stopping_fraction,
            trending_blend=result.trending_blend,
            best_epoch=result.best_epoch,
        )
        mlflow.log_params(params)
        mlflow.set_tags({f"data.{name}": str(value) for name, value in data.items()})
        for record in result.epochs:
            step = int(record["epoch"])
            mlflow.log_metric("train_loss", record["loss"], step=step)
            if "validation" in record:
                mlflow.log_metric("early_stopping_ndcg_at_10", record["validation"], step=step)
        metric_columns = [c for c in result.evaluation.columns if c not in ("model", "segment")]
        for row in result.evaluation.to_dict("records"):
            for column in metric_columns:
                value = row.get(column)
                if value is not None and np.isfinite(value):
                    mlflow.log_metric(_metric_name(row["model"], row["segment"], column), value)
        mlflow.log_metric(GATE_METRIC, result.metric(BLENDED_MODEL))
        mlflow.log_text(result.evaluation.to_csv(index=False), "evaluation/evaluation.csv")
        if not result.comparisons.empty:
            mlflow.log_text(
                result.comparisons.to_markdown(index=False), "evaluation/versus_baselines.md"
            )
        mlflow.log_text(
            result.evaluation.round(4).to_markdown(index=False), "evaluation/evaluation.md"
        )
        mlflow.log_figure(_learning_curve(result), "plots/learning_curve.png")
        ndcg_column = next(c for c in result.evaluation.columns if c.startswith("ndcg@"))
        mlflow.log_figure(_metric_by_segment(result, ndcg_column), "plots/ndcg_by_segment.png")

        with tempfile.TemporaryDirectory() as folder:
            state_path = Path(folder) / STATE_FILE
            torch.save(result.model.state(), state_path)
            serving_path = Path(folder) / SERVING_FILE
            serving_path.write_text(json.dumps({"trending_blend": result.trending_blend}))
            index_path = Path(folder) / "item_index.csv"
            pd.Series(result.model.item_ids, name="item_id").to_csv(index_path, index=False)
            mlflow.pyfunc.log_model(
                name="model",
                python_model=_pyfunc_model(),
                artifacts={
                    "state": str(state_path),
                    "serving": str(serving_path),
                    "item_index": str(index_path),
                },
                pip_requirements=[
                    f"torch=={torch.__version__.split('+')[0]}",
                    f"pandas=={pd.__version__}",
                    f"numpy=={np.__version__}",
                    f"mlflow=={mlflow.__version__}",
                ],
            )
        run_id = run.info.run_id
    registered = mlflow.register_model(f"runs:/{run_id}/model", REGISTERED_MODEL)
    version = str(registered.version)
    client.set_model_version_tag(
        REGISTERED_MODEL, version, GATE_METRIC, f"{result.metric(BLENDED_MODEL):.6f}"
    )
    client.set_registered_model_alias(REGISTERED_MODEL, CHALLENGER, version)
    logger.info(
        "logged run %s and registered %s version %s as %s",
        run_id,
        REGISTERED_MODEL,
        version,
        CHALLENGER,
    )
    return TrackedRun(
        run_id=run_id, version=version, url_hint=f"experiment {EXPERIMENT}, run {run_id}"
    )


def _pyfunc_model() -> Any:
    """An mlflow.pyfunc.PythonModel that scores histories into top-k lists.

    Built on call so that importing this module does not import MLflow (seconds of start-up).
    """
    import mlflow.pyfunc

    class SequentialPyfunc(mlflow.pyfunc.PythonModel):
        def load_context(self, context) -> None:
            import torch

            state = torch.load(context.artifacts["state"], weights_only=False)
            self.model = model_from_state(state)

        def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
            from ml.evaluation.protocol import recommend_from_scores

            k = int((params or {}).get("k", 10))
            users, scores = self.model.score(model_input)
            return recommend_from_scores(scores, users, self.model.item_ids, model_input, k)

    return SequentialPyfunc()


def alias_version(client: Any, alias: str) -> str | None:
    """The version an alias points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(REGISTERED_MODEL, alias).version)
    except MlflowException:
        return None


def load_version(
    tracking_uri: str, version: str, cache_dir: Path | None = None
) -> tuple[SequentialRecommender | SequentialEnsemble, float]:
    """A registered version's model and the trending blend it was chosen with.

    With ``cache_dir``, the version's files are downloaded once into it and reused: a registered
    version's artifacts never change, and a refresh should not copy the model every time.
    """
    import mlflow
    import torch

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    folder = _version_files(version, cache_dir)
    state_path = next(folder.rglob(STATE_FILE))
    serving = json.loads(next(folder.rglob(SERVING_FILE)).read_text())
    state = torch.load(state_path, weights_only=False)
    return model_from_state(state), float(serving["trending_blend"])


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
    challenger: float,
    baselines: dict[str, float],
    champion: float | None,
    margin: float,
) -> GateDecision:
    """Challenger NDCG@10 must beat every baseline and the champion (if any) by ``margin``."""
    reasons, passed = [], True
    if not np.isfinite(challenger):
        return GateDecision(False, ["challenger NDCG@10 is not a number"])
    for name, value in sorted(baselines.items()):
        ok = challenger >= value + margin
        passed &= ok
        reasons.append(
            f"{'beats' if ok else 'does not beat'} {name}: {challenger:.4f} vs {value:.4f} "
            f"+ margin {margin:.4f}"
        )
    if champion is None:
        reasons.append("no champion yet")
    else:
        ok = challenger >= champion + margin
        passed &= ok
        reasons.append(
            f"{'beats' if ok else 'does not beat'} champion: {challenger:.4f} vs {champion:.4f} "
            f"+ margin {margin:.4f}"
        )
    return GateDecision(bool(passed), reasons)


def promote(client: Any, version: str) -> str | None:
    """Make ``version`` champion; the replaced champion becomes previous-champion. Returns it."""
    current = alias_version(client, CHAMPION)
    client.get_model_version(REGISTERED_MODEL, version)  # a clear error for an unknown version
    if current == version:
        return current
    if current is not None:
        client.set_registered_model_alias(REGISTERED_MODEL, PREVIOUS_CHAMPION, current)
    client.set_registered_model_alias(REGISTERED_MODEL, CHAMPION, version)
    if alias_version(client, CHALLENGER) == version:
        client.delete_registered_model_alias(REGISTERED_MODEL, CHALLENGER)
    logger.info("champion is now version %s (was %s)", version, current)
    return current


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


def baseline_ndcgs(result: TrainingResult) -> dict[str, float]:
    return {name: result.metric(name) for name in BASELINES if np.isfinite(result.metric(name))}


def latest_evaluation(tracking_uri: str, artifact_location: str) -> str | None:
    """The evaluation table (markdown) of the newest training run, or None."""
    import mlflow

    client = configure(tracking_uri, artifact_location)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )
    if not runs:
        return None
    path = mlflow.artifacts.download_artifacts(
        run_id=runs[0].info.run_id, artifact_path="evaluation/evaluation.md"
    )
    return Path(path).read_text()
