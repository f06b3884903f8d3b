"""The spark target's exchange with DuckDB: raw tables out as Parquet, Spark's marts back in."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from orchestration.warehouse.spark import (
    export_raw_tables,
    import_marts,
    raw_parquet_dir,
    spark_marts_dir,
)
from tests.dbt.warehouse_runs import RAW_TABLES_DDL


def test_raw_tables_go_out_as_parquet_with_every_row(tmp_path: Path) -> None:
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as connection:
        connection.execute(RAW_TABLES_DDL)
        connection.execute(
            "insert into raw.events (event_id, user_id, item_id, loaded_at) values "
            "('e1', 'u1', '007', timestamp '2024-01-10'), ('e2', 'u2', '7', null)"
        )
        written = export_raw_tables(connection, tmp_path / "spark")
        events = connection.execute(
            f"select event_id, item_id from read_parquet('{raw_parquet_dir(tmp_path / 'spark')}"
            "/events/*.parquet') order by event_id"
        ).fetchall()
    assert written == {"events": 2, "items": 0}
    assert events == [("e1", "007"), ("e2", "7")]  # ids stay text: "007" is not "7"


def test_marts_come_back_with_duckdbs_types(tmp_path: Path) -> None:
    spark_dir = tmp_path / "spark"
    mart_folder = spark_marts_dir(spark_dir) / "users"
    mart_folder.mkdir(parents=True)
    with duckdb.connect() as spark_like:
        # Spark's `timestamp` is zone-aware in Parquet; 10:00 UTC seen from Berlin is 11:00.
        spark_like.execute("set TimeZone = 'Europe/Berlin'")
        spark_like.execute(
            "copy (select 'u1' as user_id, timestamptz '2024-01-01 10:00:00+00' as "
            "first_event_at, cast(3 as integer) as event_count) "
            f"to '{mart_folder}/part-0.parquet' (format parquet)"
        ).fetchall()
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as connection:
        connection.execute("set TimeZone = 'Europe/Berlin'")
        loaded = import_marts(connection, spark_dir)
        row = connection.execute("select * from marts.users").fetchall()
        kinds = connection.execute(
            "select data_type from information_schema.columns where table_name = 'users' "
            "order by ordinal_position"
        ).fetchall()
    assert loaded == {"users": 1}
    assert row == [("u1", datetime(2024, 1, 1, 10, 0), 3)]
    # Spark's row_number() is an int, DuckDB's a bigint.
    assert kinds == [("VARCHAR",), ("TIMESTAMP",), ("BIGINT",)]


def test_no_marts_from_spark_says_where_it_looked(tmp_path: Path) -> None:
    with (
        duckdb.connect() as connection,
        pytest.raises(FileNotFoundError, match="dbt build --target spark"),
    ):
        import_marts(connection, tmp_path / "spark")
