"""Run the dbt project against a throwaway DuckDB warehouse: load raw batches, build, read marts.

dbt runs as a subprocess (the `dbt` beside this interpreter) with its target and log folders in
the given work folder, so nothing is written into the repository.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from orchestration.settings import DBT_PROJECT_DIR, Settings
from orchestration.warehouse.dbt import dbt_vars
from orchestration.warehouse.spark import export_raw_tables, import_marts

DBT_EXECUTABLE = Path(sys.executable).with_name("dbt")

RAW_TABLES_DDL = """
create schema if not exists raw;
create table raw.events (
    event_id varchar, user_id varchar, item_id varchar, event_type varchar,
    occurred_at timestamp, value double, session_id varchar, context varchar,
    attributes varchar, source_file varchar, source_row bigint, batch_id varchar,
    loaded_at timestamp
);
create table raw.items (
    item_id varchar, title varchar, description varchar, categories varchar,
    created_at timestamp, available boolean, attributes varchar, source_file varchar,
    source_row bigint, batch_id varchar, loaded_at timestamp
);
"""


@dataclass(frozen=True)
class BuildOutcome:
    """What one `dbt build` reported and what the marts held afterwards."""

    statuses: dict[str, str]
    marts: dict[str, list[dict[str, Any]]]
    views: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # read by a test


def orchestration_vars(**overrides: Any) -> list[str]:
    """The --vars orchestration passes with default settings (not the environment's), overridden."""
    unused = Path("unused")
    defaults = Settings(
        home=unused,
        landing_dir=unused,
        warehouse_path=unused,
        serving_url="",
        mlflow_tracking_uri="",
        mlflow_artifact_location="",
        dagster_home=unused,
    )
    return ["--vars", json.dumps({**dbt_vars(defaults), **overrides})]


def create_warehouse(warehouse: Path) -> None:
    """An empty warehouse with the raw tables the ingest assets write."""
    assert DBT_EXECUTABLE.exists(), f"no dbt beside {sys.executable}: install dbt-duckdb"
    with duckdb.connect(str(warehouse)) as connection:
        connection.execute(RAW_TABLES_DDL)


def load_batch(
    warehouse: Path,
    events: list[tuple[Any, ...]],
    items: list[tuple[Any, ...]],
    batch_id: str,
    loaded_at: datetime,
) -> None:
    """Append one load batch to the raw tables, the way the ingest assets do.

    events: (event_id, user_id, item_id, event_type, occurred_at, value);
    items: (item_id, title, available).
    """
    lineage = (batch_id, loaded_at)
    with duckdb.connect(str(warehouse)) as connection:
        if events:
            connection.executemany(
                """
                insert into raw.events (
                    event_id, user_id, item_id, event_type, occurred_at, value,
                    source_file, source_row, batch_id, loaded_at
                )
                values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
                [
                    (*event, f"events_{batch_id}.csv", row, *lineage)
                    for row, event in enumerate(events, start=1)
                ],
            )
        if items:
            connection.executemany(
                """
                insert into raw.items (
                    item_id, title, available, source_file, source_row, batch_id, loaded_at
                )
                values (?, ?, ?, ?, ?, ?, ?)
                """,
                [
                    (*item, f"items_{batch_id}.csv", row, *lineage)
                    for row, item in enumerate(items, start=1)
                ],
            )


def read_marts(warehouse: Path) -> dict[str, list[dict[str, Any]]]:
    """Every mart as a list of row dicts, in a stable order."""
    marts: dict[str, list[dict[str, Any]]] = {}
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        names = connection.sql(
            "select table_name from information_schema.tables where table_schema = 'marts'"
        ).fetchall()
        for (name,) in names:
            relation = connection.sql(f"select * from marts.{name} order by all")
            marts[name] = [
                dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()
            ]
    return marts


def run_dbt(
    work_dir: Path,
    warehouse: Path,
    command: str = "build",
    arguments: Sequence[str] = (),
    target: str = "duckdb",
) -> BuildOutcome:
    """Run a dbt command on the project against `warehouse`; fail with dbt's output if it fails.

    On the spark target the raw tables go to Spark as Parquet and the marts come back into
    `warehouse` (orchestration/warehouse/spark.py), Spark's files under work_dir/spark.
    """
    spark_dir = work_dir / "spark"
    if target == "spark":
        with duckdb.connect(str(warehouse)) as connection:
            export_raw_tables(connection, spark_dir)
    target_path = work_dir / "target"
    completed = subprocess.run(
        [
            str(DBT_EXECUTABLE),
            command,
            "--project-dir",
            str(DBT_PROJECT_DIR),
            "--profiles-dir",
            str(DBT_PROJECT_DIR),
            "--target-path",
            str(target_path),
            "--log-path",
            str(work_dir / "logs"),
            "--target",
            target,
            *arguments,
        ],
        cwd=work_dir,
        env={
            **os.environ,
            "FRESHRANK_WAREHOUSE_PATH": str(warehouse),
            "FRESHRANK_SPARK_DIR": str(spark_dir),
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, f"dbt {command} failed:\n{completed.stdout[-6000:]}"
    run_results = json.loads((target_path / "run_results.json").read_text())
    statuses = {result["unique_id"]: result["status"] for result in run_results["results"]}
    if target == "spark":
        with duckdb.connect(str(warehouse)) as connection:
            import_marts(connection, spark_dir)
    return BuildOutcome(statuses=statuses, marts=read_marts(warehouse))
