"""Deleting rows wherever they are stored, found by column name, and the record of each erasure.

Forgetting a user and retention must reach every table that holds users or events, including
tables added after this code was written. So tables are not listed here: they are found by a
column name, in the DuckDB warehouse through its ``information_schema`` (every schema: raw,
staging, intermediate, marts, ml; views are skipped, they hold no rows) and in the serving store
through SQLAlchemy's inspector. Each erasure is recorded in the serving store's ``privacy_log``:
when, what, and how many rows and files, never whose.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import sqlalchemy as sa

from orchestration.ingest.rules import identifier, literal

PRIVACY_LOG_TABLE = "privacy_log"
_SYSTEM_SCHEMAS = ("information_schema", "pg_catalog")

_log_metadata = sa.MetaData()
privacy_log_table = sa.Table(
    PRIVACY_LOG_TABLE,
    _log_metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("happened_at", sa.DateTime, nullable=False),  # wall clock, naive UTC
    sa.Column("action", sa.String(32), nullable=False),  # forget | retention
    sa.Column("rows_removed", sa.BigInteger, nullable=False),
    sa.Column("files_changed", sa.Integer, nullable=False),
    sa.Column("details", sa.Text, nullable=False),  # JSON: rows per table, files, settings
)


def warehouse_tables_with(con: duckdb.DuckDBPyConnection, column: str) -> list[str]:
    """Quoted ``schema.table`` names of the warehouse's base tables that have ``column``."""
    rows = con.execute(
        "SELECT c.table_schema, c.table_name FROM information_schema.columns c "
        "JOIN information_schema.tables t USING (table_catalog, table_schema, table_name) "
        "WHERE c.column_name = ? AND t.table_type = 'BASE TABLE' "
        "AND c.table_catalog = current_database() AND c.table_schema NOT IN (?, ?) "
        "ORDER BY 1, 2",
        [column, *_SYSTEM_SCHEMAS],
    ).fetchall()
    return [f"{identifier(schema)}.{identifier(table)}" for schema, table in rows]


def delete_in_warehouse(
    warehouse_path: Path, conditions: dict[str, Callable[[str], str]]
) -> dict[str, int]:
    """Delete, in every warehouse table with one of the ``conditions``' columns, the rows where
    ``condition(column SQL)`` holds, in one transaction; rows deleted per table (only tables
    that lost rows). The caller holds the writer lock. A checkpoint afterwards writes the
    deletions into the database file rather than leaving them in its write-ahead log."""
    if not warehouse_path.exists():
        return {}
    removed: dict[str, int] = {}
    with duckdb.connect(str(warehouse_path)) as con:
        con.execute("SET SESSION TimeZone = 'UTC'")
        con.begin()
        try:
            for column, condition in conditions.items():
                for table in warehouse_tables_with(con, column):
                    row = con.execute(
                        f"DELETE FROM {table} WHERE {condition(identifier(column))}"
                    ).fetchone()
                    if row and row[0]:
                        name = table.replace('"', "")
                        removed[name] = removed.get(name, 0) + int(row[0])
            con.commit()
        except BaseException:
            con.rollback()
            raise
        con.execute("CHECKPOINT")
    return removed


def compact_warehouse(warehouse_path: Path) -> None:
    """Rewrite the warehouse into a fresh file and swap it in. DuckDB leaves deleted rows' bytes
    in the file's blocks, even after a checkpoint; a copy holds only the live rows (and every
    schema, table and view). It costs a read and a write of the whole warehouse. The caller
    holds the writer lock."""
    if not warehouse_path.exists():
        return
    compacted = warehouse_path.with_name(f".{warehouse_path.name}.compacting")
    compacted.unlink(missing_ok=True)
    with duckdb.connect(str(warehouse_path)) as con:
        (database,) = con.execute("SELECT current_database()").fetchone() or ("",)
        con.execute(f"ATTACH {literal(str(compacted))} AS compacted")
        con.execute(f"COPY FROM DATABASE {identifier(database)} TO compacted")
        con.execute("DETACH compacted")
    os.replace(compacted, warehouse_path)


def serving_tables_with(engine: sa.Engine, column: str) -> list[sa.Table]:
    """The serving store's tables that have ``column``, reflected from the database itself."""
    inspector = sa.inspect(engine)
    metadata = sa.MetaData()
    return [
        sa.Table(name, metadata, autoload_with=engine)
        for name in sorted(inspector.get_table_names())
        if any(found["name"] == column for found in inspector.get_columns(name))
    ]


def delete_in_serving_store(
    engine: sa.Engine, conditions: dict[str, Callable[[sa.Column], sa.ColumnElement[bool]]]
) -> dict[str, int]:
    """Delete, in every serving-store table with one of the ``conditions``' columns, the rows
    where its condition holds, in one transaction; rows deleted per table (only tables that
    lost rows)."""
    removed: dict[str, int] = {}
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            # Overwrite deleted rows with zeros instead of leaving them in free pages.
            connection.exec_driver_sql("PRAGMA secure_delete = ON")
        for column, condition in conditions.items():
            for table in serving_tables_with(engine, column):
                deleted = connection.execute(table.delete().where(condition(table.c[column])))
                if deleted.rowcount:
                    removed[table.name] = removed.get(table.name, 0) + int(deleted.rowcount)
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            # Move the deletions out of the write-ahead log into the database file.
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return removed


def record_erasure(
    engine: sa.Engine, action: str, rows_removed: int, files_changed: int, details: dict
) -> datetime:
    """Add one row to the privacy log (created when missing); returns its time."""
    _log_metadata.create_all(engine)
    happened_at = datetime.now(UTC).replace(tzinfo=None)
    with engine.begin() as connection:
        connection.execute(
            privacy_log_table.insert().values(
                happened_at=happened_at,
                action=action,
                rows_removed=rows_removed,
                files_changed=files_changed,
                details=json.dumps(details, sort_keys=True, default=str),
            )
        )
    return happened_at


def privacy_log(engine: sa.Engine) -> list[dict[str, object]]:
    """Every recorded erasure, oldest first."""
    _log_metadata.create_all(engine)
    query = sa.select(privacy_log_table).order_by(privacy_log_table.c.id)
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(query).mappings().all()]
