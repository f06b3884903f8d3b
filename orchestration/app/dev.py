"""`make dev`: the Dagster UI (with its daemon, so sensors and schedules run) and the MLflow UI."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from orchestration.app.launcher import yield_cpu_to_serving
from orchestration.instance import prepare_dagster_home
from orchestration.settings import PROJECT_ROOT, get_settings


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def _interrupt(signum: int, frame: object) -> None:
    """Stop both servers on SIGTERM too, not only on Ctrl-C."""
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--dagster-port", type=int, default=3000)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    # MLflow's default is four server processes (about 250 MB each, and their start-up takes
    # the cores the first sensor run needs); one serves a person reviewing runs.
    parser.add_argument("--mlflow-workers", type=int, default=1)
    arguments = parser.parse_args()

    settings = get_settings()
    # The UI, the daemon and their runs open the deployment's instance from the environment.
    os.environ["DAGSTER_HOME"] = str(prepare_dagster_home(settings))
    # The daemon's runs are batch work: they and the UIs give way to `freshrank serve`.
    yield_cpu_to_serving(settings.batch_nice)
    signal.signal(signal.SIGTERM, _interrupt)
    bin_dir = Path(sys.executable).parent
    # The servers' own subprocesses (code server, dbt) must find this environment's programs.
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ["FRESHRANK_WAREHOUSE_PATH"] = str(settings.warehouse_path)
    mlflow = subprocess.Popen(
        [
            str(bin_dir / "mlflow"),
            "ui",
            "--backend-store-uri",
            settings.mlflow_tracking_uri,
            "--default-artifact-root",
            settings.mlflow_artifact_location,
            "--host",
            arguments.host,
            "--port",
            str(arguments.mlflow_port),
            "--workers",
            str(arguments.mlflow_workers),
        ],
        start_new_session=True,
    )
    dagster = subprocess.Popen(
        [
            str(bin_dir / "dagster"),
            "dev",
            "-w",
            str(PROJECT_ROOT / "workspace.yaml"),
            "-h",
            arguments.host,
            "-p",
            str(arguments.dagster_port),
        ],
        cwd=PROJECT_ROOT,
        start_new_session=True,
    )
    sys.stdout.write(
        f"\nDagster UI: http://{arguments.host}:{arguments.dagster_port}  (asset graph, checks, "
        f"runs, sensors, schedules)\nMLflow UI:  http://{arguments.host}:{arguments.mlflow_port}  "
        f"(runs, model registry)\nFRESHRANK_HOME={settings.home}\nCtrl-C stops both.\n\n"
    )
    sys.stdout.flush()
    try:
        while dagster.poll() is None and mlflow.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        _stop(dagster)
        _stop(mlflow)


if __name__ == "__main__":
    main()
