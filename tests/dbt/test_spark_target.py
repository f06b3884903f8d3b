"""The dbt project on Spark (`--target spark`, a local SparkSession inside dbt): every node passes
and the marts equal DuckDB's for the same raw batches.

Slow (Spark starts a JVM and runs each node as Spark SQL); skipped without the `distributed`
extra (pyspark, dbt-spark) or Java. CI installs both (.ci/run).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyspark", reason="the distributed extra is not installed (pyspark)")
pytest.importorskip(
    "dbt.adapters.spark", reason="the distributed extra is not installed (dbt-spark)"
)
if shutil.which("java") is None:
    pytest.skip("Spark needs Java: no `java` on PATH", allow_module_level=True)

from tests.dbt.test_dbt_project import (  # noqa: E402
    FIRST_EVENTS,
    FIRST_ITEMS,
    FIRST_LOAD_AT,
    SECOND_EVENTS,
    SECOND_ITEMS,
    SECOND_LOAD_AT,
)
from tests.dbt.warehouse_runs import (  # noqa: E402
    BuildOutcome,
    create_warehouse,
    load_batch,
    orchestration_vars,
    run_dbt,
)

pytestmark = pytest.mark.slow


def build_on(target: str, work_dir: Path) -> BuildOutcome:
    """Both batches loaded, then one `dbt build` on ``target``; the marts read back from DuckDB."""
    warehouse = work_dir / "warehouse.duckdb"
    create_warehouse(warehouse)
    load_batch(warehouse, FIRST_EVENTS, FIRST_ITEMS, "b1", FIRST_LOAD_AT)
    load_batch(warehouse, SECOND_EVENTS, SECOND_ITEMS, "b2", SECOND_LOAD_AT)
    return run_dbt(work_dir, warehouse, arguments=orchestration_vars(), target=target)


def same_row(left: dict[str, Any], right: dict[str, Any]) -> bool:
    if left.keys() != right.keys():
        return False
    for column, value in left.items():
        other = right[column]
        if isinstance(value, float) and isinstance(other, float):
            if not math.isclose(value, other, rel_tol=1e-9, abs_tol=1e-12):
                return False
        elif value != other:
            return False
    return True


def test_dbt_build_on_spark_passes_every_node_and_gives_duckdbs_marts(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    on_duckdb = build_on("duckdb", tmp_path_factory.mktemp("duckdb"))
    on_spark = build_on("spark", tmp_path_factory.mktemp("spark"))
    failed = {node: status for node, status in on_spark.statuses.items() if status == "error"}
    assert not failed, f"nodes that failed on Spark: {failed}"
    # The same nodes with the same outcomes (the batches hold an event of an item not in the
    # catalog, which the relationships tests of severity warn report on both).
    assert on_spark.statuses == on_duckdb.statuses
    assert on_spark.marts.keys() == on_duckdb.marts.keys()
    for mart, rows in on_duckdb.marts.items():
        spark_rows = on_spark.marts[mart]
        assert len(spark_rows) == len(rows), f"{mart}: {len(spark_rows)} rows on Spark, {len(rows)}"
        different = [
            (duckdb_row, spark_row)
            for duckdb_row, spark_row in zip(rows, spark_rows, strict=True)
            if not same_row(duckdb_row, spark_row)
        ]
        assert not different, f"{mart} differs on Spark (DuckDB row, Spark row): {different[:3]}"
