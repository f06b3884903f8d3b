"""The dbt project on Spark (`--target spark`, a local SparkSession inside dbt): every node passes,
the marts equal DuckDB's for the same raw batches, and the lists ranked from them are the same.

Slow (Spark starts a JVM and runs each node as Spark SQL); skipped without the `distributed`
extra (pyspark, dbt-spark) or Java. CI installs both (.ci/run).
"""

from __future__ import annotations

import math
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest

pytest.importorskip("pyspark", reason="the distributed extra is not installed (pyspark)")
pytest.importorskip(
    "dbt.adapters.spark", reason="the distributed extra is not installed (dbt-spark)"
)
if shutil.which("java") is None:
    pytest.skip("Spark needs Java: no `java` on PATH", allow_module_level=True)

from ml.constants import ITEM_ID, RANK, USER_ID  # noqa: E402
from ml.datasets import movielens_sample  # noqa: E402
from ml.pipeline.backtest import BacktestConfig, run_backtests  # noqa: E402
from ml.pipeline.pipeline import PipelineConfig  # noqa: E402
from ml.pipeline.ranker import RankerConfig  # noqa: E402
from orchestration.warehouse.reads import read_behaviour, read_snapshot  # noqa: E402
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

TARGETS = ("duckdb", "spark")
# Enough of the packaged sample for co-visitation sums over many days, near-equal scores and
# backtests with a ranker; Spark's start-up, not the rows, sets the build's time.
SAMPLE_USERS = 40
SAMPLE_LOAD_AT = datetime(2024, 1, 12)
# Float marts are rounded to 9 places (macros/portability.sql, fixed_decimals): a value on a
# rounding boundary may land one step (1e-9) apart on the two engines; the rest differ by
# float noise (about 1e-15 relative) at most.
ROUNDING_STEP = 1e-9
# Text is left out: the embedding model is not what this test is about.
PIPELINE = PipelineConfig(sources=("popularity", "covisitation", "item_knn"), k=10)
BACKTEST = BacktestConfig(
    cuts=1,
    training_cuts=1,
    min_users=3,
    min_ranker_users=5,
    ranker=RankerConfig(n_estimators=20, min_child_samples=5, bagged_models=1, threads=1),
)


def sample_batch() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The packaged sample's events of its first SAMPLE_USERS users and their items, as
    load_batch takes them."""
    items, events = movielens_sample()
    chosen = events[events[USER_ID].isin(pd.unique(events[USER_ID])[:SAMPLE_USERS])]
    event_rows = [
        (
            f"s{position}",
            row.user_id,
            row.item_id,
            row.event_type,
            datetime.fromtimestamp(row.timestamp, UTC).replace(tzinfo=None),
            row.value,
        )
        for position, row in enumerate(chosen.itertuples(index=False))
    ]
    catalog = items[items[ITEM_ID].isin(chosen[ITEM_ID])]
    item_rows = [(row.item_id, row.title, True) for row in catalog.itertuples(index=False)]
    return event_rows, item_rows


def build_on(target: str, work_dir: Path) -> tuple[BuildOutcome, Path]:
    """Three batches loaded, then one `dbt build` on ``target``; the marts read back from DuckDB."""
    warehouse = work_dir / "warehouse.duckdb"
    create_warehouse(warehouse)
    load_batch(warehouse, FIRST_EVENTS, FIRST_ITEMS, "b1", FIRST_LOAD_AT)
    load_batch(warehouse, SECOND_EVENTS, SECOND_ITEMS, "b2", SECOND_LOAD_AT)
    load_batch(warehouse, *sample_batch(), "b3", SAMPLE_LOAD_AT)
    outcome = run_dbt(work_dir, warehouse, arguments=orchestration_vars(), target=target)
    return outcome, warehouse


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[BuildOutcome, Path]]:
    return {target: build_on(target, tmp_path_factory.mktemp(target)) for target in TARGETS}


def same_row(left: dict[str, Any], right: dict[str, Any]) -> bool:
    if left.keys() != right.keys():
        return False
    for column, value in left.items():
        other = right[column]
        if isinstance(value, float) and isinstance(other, float):
            if not math.isclose(value, other, rel_tol=1e-9, abs_tol=2 * ROUNDING_STEP):
                return False
        elif value != other:
            return False
    return True


def test_dbt_build_on_spark_passes_every_node_and_gives_duckdbs_marts(
    builds: dict[str, tuple[BuildOutcome, Path]],
) -> None:
    on_duckdb, on_spark = builds["duckdb"][0], builds["spark"][0]
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


def test_lists_from_sparks_marts_equal_the_lists_from_duckdbs(
    builds: dict[str, tuple[BuildOutcome, Path]],
) -> None:
    """What a build publishes from each warehouse (the backtests' winner, fitted on every event,
    ranking every user) is the same: winner, every pipeline's backtest figures, user, rank, item
    and score."""
    snapshots = {}
    for target, (_, warehouse) in builds.items():
        with duckdb.connect(str(warehouse), read_only=True) as connection:
            snapshots[target] = read_snapshot(connection)
    # Ranking reads the same rows in the same order from both, to the last bit: Spark's marts
    # hold their rows in another order than DuckDB's, and sums follow the order rows are read in.
    for table in ("interactions", "items", "covisitation"):
        pd.testing.assert_frame_equal(
            getattr(snapshots["spark"], table),
            getattr(snapshots["duckdb"], table),
            check_exact=True,
        )
    results, published = {}, {}
    for target, snapshot in snapshots.items():
        results[target] = run_backtests(snapshot, PIPELINE, BACKTEST)
        lists = results[target].pipeline.recommend(read_behaviour(snapshot))
        published[target] = lists.sort_values([USER_ID, RANK], ignore_index=True)
    assert results["spark"].winner == results["duckdb"].winner
    pd.testing.assert_frame_equal(results["spark"].table, results["duckdb"].table, check_exact=True)
    assert published["duckdb"][USER_ID].nunique() > SAMPLE_USERS  # the sample's and the batches'
    pd.testing.assert_frame_equal(published["spark"], published["duckdb"], check_exact=True)
