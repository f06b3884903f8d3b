"""The warehouse on Spark (FRESHRANK_DBT_TARGET=spark): raw tables out as Parquet, marts back in.

dbt builds the marts on a Spark session from the raw tables exported here as Parquet (the
`spark` target registers them, dbt_project/macros/spark_raw_tables.sql); the marts Spark wrote as
Parquet are then loaded into the DuckDB warehouse, which the embeddings, the model and serving
read, so everything after dbt runs as it does on the default target.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb

RAW_TABLES = ("events", "items")
RAW_SCHEMA = "raw"
MARTS_SCHEMA = "marts"
# Spark's types that DuckDB's build of the same mart has otherwise: zone-aware timestamps (UTC
# wall-clock in the marts) and 32-bit row numbers (row_number() is a bigint in DuckDB).
DUCKDB_TYPES = {"TIMESTAMP WITH TIME ZONE": "timestamp", "INTEGER": "bigint"}


def raw_parquet_dir(spark_dir: Path) -> Path:
    return spark_dir / RAW_SCHEMA


def spark_marts_dir(spark_dir: Path) -> Path:
    """Where Spark keeps the marts' Parquet files (its warehouse folder, database `marts`)."""
    return spark_dir / "warehouse" / f"{MARTS_SCHEMA}.db"


def export_raw_tables(connection: duckdb.DuckDBPyConnection, spark_dir: Path) -> dict[str, int]:
    """Write each raw table as Parquet under ``spark_dir``/raw/<table>; rows written per table."""
    written = {}
    for table in RAW_TABLES:
        folder = raw_parquet_dir(spark_dir) / table
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        target = folder / "part-0.parquet"
        copied = connection.execute(
            f"copy (select * from {RAW_SCHEMA}.{table}) to '{target}' (format parquet)"
        ).fetchall()
        written[table] = int(copied[0][0])
    return written


def import_marts(connection: duckdb.DuckDBPyConnection, spark_dir: Path) -> dict[str, int]:
    """Replace the DuckDB marts with the ones Spark built; rows loaded per mart.

    Columns get the types DuckDB's build gives them (DUCKDB_TYPES): Spark's zone-aware
    timestamps are converted in UTC.
    """
    folder = spark_marts_dir(spark_dir)
    marts = sorted(path for path in folder.iterdir() if path.is_dir()) if folder.exists() else []
    if not marts:
        raise FileNotFoundError(
            f"no marts under {folder}: did `dbt build --target spark` run with "
            f"FRESHRANK_SPARK_DIR={spark_dir}?"
        )
    connection.execute("set TimeZone = 'UTC'")
    connection.execute(f"create schema if not exists {MARTS_SCHEMA}")
    loaded = {}
    for mart in marts:
        files = f"{mart}/*.parquet"
        columns = connection.sql(f"describe select * from read_parquet('{files}')").fetchall()
        selected = ", ".join(
            f'cast("{name}" as {DUCKDB_TYPES[kind]}) as "{name}"'
            if kind in DUCKDB_TYPES
            else f'"{name}"'
            for name, kind, *_ in columns
        )
        connection.execute(
            f"create or replace table {MARTS_SCHEMA}.{mart.name} as "
            f"select {selected} from read_parquet('{files}')"
        )
        counted = connection.execute(f"select count(*) from {MARTS_SCHEMA}.{mart.name}")
        loaded[mart.name] = int(counted.fetchall()[0][0])
    return loaded
