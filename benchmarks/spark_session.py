"""What the `spark` dbt target's Spark session costs on this machine: start-up and memory.

Starts a SparkSession in this process with the settings of the `spark` target in
dbt_project/profiles.yml (`local[2]`, bound to 127.0.0.1, Derby metastore and warehouse in a
scratch folder), as dbt's `method: session` does, and prints the seconds until it answers a
query, the resident memory of the JVM it started (at rest, from /proc) and, after stopping it,
any process left running.

    .venv/bin/python benchmarks/spark_session.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.scale_out import resident_mb  # noqa: E402
from ml.distributed.session import descendant_processes  # noqa: E402
from orchestration.settings import DBT_PROJECT_DIR  # noqa: E402

SPARK_DIR_VARIABLE = "{{ env_var('FRESHRANK_SPARK_DIR') }}"


def profile_settings(spark_dir: Path) -> dict[str, str]:
    """The spark target's Spark settings, its folder variable pointed at ``spark_dir``."""
    profiles = yaml.safe_load((DBT_PROJECT_DIR / "profiles.yml").read_text())
    settings = profiles["freshrank"]["outputs"]["spark"]["server_side_parameters"]
    return {
        key: str(value).replace(SPARK_DIR_VARIABLE, str(spark_dir))
        for key, value in settings.items()
    }


def main() -> None:
    from pyspark.sql import SparkSession

    load = os.getloadavg()[0]
    spark_dir = Path(tempfile.mkdtemp(prefix="freshrank-spark-session-"))
    builder = SparkSession.builder.appName("freshrank-spark-session-benchmark")
    for key, value in profile_settings(spark_dir).items():
        builder = builder.config(key, value)
    before = set(descendant_processes())
    started = time.perf_counter()
    session = builder.getOrCreate()
    session.sql("select 1").collect()
    start_up = time.perf_counter() - started
    time.sleep(2)  # let the JVM settle before reading its memory
    memory = resident_mb(set(descendant_processes()) - before)
    session.stop()
    # pyspark's JVM outlives session.stop() and ends with this process, as it ends with dbt's.
    left = sorted(set(descendant_processes().values()))
    print(f"load average {load:.1f}")
    print(
        f"Spark session (local[2]) start-up {start_up:.1f} s, its JVM holds {memory:.0f} MB at rest"
    )
    print(f"after session.stop(), running until this process ends: {', '.join(left) or 'nothing'}")


if __name__ == "__main__":
    main()
