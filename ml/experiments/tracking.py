"""An experiment's analysis in MLflow: one run with per-variant metrics, tables, a plot, verdict.

Runs go to their own MLflow experiment (AB_TESTS), apart from the backtest runs whose newest
one `freshrank evaluate` reads.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from ml.experiments.analysis import CLICK_THROUGH, CONVERSION, VARIANT, ExperimentResults
from ml.experiments.assignment import ExperimentDesign

AB_TESTS = "freshrank-ab-tests"
PLOT_PATH = "plots/variants.png"


def results_plot(results: ExperimentResults, title: str):
    """Click-through, conversion and NDCG per variant, with 95% intervals for the rates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = results.variants
    ndcg = next(column for column in table.columns if column.startswith("ndcg@"))
    figure, axes = plt.subplots(1, 3, figsize=(11, 3.6))
    users = table["users"].clip(lower=1).to_numpy(dtype=float)
    for axis, column in zip(axes, (CLICK_THROUGH, CONVERSION, ndcg), strict=True):
        values = table[column].fillna(0.0).to_numpy(dtype=float)
        spread = None
        if column != ndcg:  # normal-approximation interval of a proportion
            spread = 1.96 * np.sqrt(values * (1 - values) / users)
        axis.bar(table[VARIANT], values, yerr=spread, capsize=6, color="#4C72B0")
        axis.set_title(column.replace("_", "-"))
        axis.set_ylim(bottom=0)
    figure.suptitle(f"{title}: {results.verdict.text}", fontsize=8, wrap=True)
    figure.tight_layout()
    return figure


def plot_png(figure) -> bytes:
    """The figure as PNG bytes (closed afterwards)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


def log_results(
    design: ExperimentDesign,
    results: ExperimentResults,
    settings: dict[str, Any],
    tracking_uri: str,
    artifact_location: str,
) -> str:
    """Log one analysis as an MLflow run; returns its run id."""
    import mlflow

    from ml import tracking

    client = tracking.configure(tracking_uri, artifact_location)
    experiment_id = tracking.experiment_named(client, AB_TESTS, artifact_location)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"ab-{design.name}") as run:
        mlflow.log_params(
            {
                "experiment": design.name,
                "variants": ", ".join(
                    f"{variant.name}:{variant.version}={variant.share:g}"
                    for variant in design.variants
                ),
                **{name: str(value) for name, value in settings.items()},
            }
        )
        metrics = {}
        for row in results.variants.to_dict("records"):
            for column, value in row.items():
                if column != VARIANT and value is not None and np.isfinite(value):
                    metrics[f"{row[VARIANT]}.{column.replace('@', '_at_')}"] = float(value)
        for row in results.comparisons.to_dict("records"):
            metrics[f"{row['treatment']}.{row['metric']}.p_value"] = float(row["p_value"])
        metrics["attributed_events"] = float(results.attributed_events)
        mlflow.log_metrics(metrics)
        mlflow.set_tags(
            {
                "verdict": results.verdict.text,
                "decision": results.verdict.decision,
                "serve": results.verdict.variant,
            }
        )
        mlflow.log_text(results.variants.to_csv(index=False), "results/variants.csv")
        mlflow.log_text(results.variants.round(4).to_markdown(index=False), "results/variants.md")
        mlflow.log_text(
            results.comparisons.round(4).to_markdown(index=False), "results/comparisons.md"
        )
        mlflow.log_text(results.verdict.text, "results/verdict.txt")
        mlflow.log_figure(results_plot(results, design.name), PLOT_PATH)
        return run.info.run_id
