"""Test helpers for privacy: sample deliveries, settings with a pseudonymisation key, a row in
every serving-store table, and a search of every stored value."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from orchestration.ingest.rules import identifier
from orchestration.privacy.retention import TIME_COLUMNS
from orchestration.serving.api import create_app
from orchestration.settings import Settings

KEY = "a-test-key-of-enough-length"
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
EVENTS = (
    "user_id,item_id,event_type,timestamp\n"
    "alice,i1,view,2024-05-01T10:00:00Z\n"
    "alice,i2,purchase,2024-05-01T10:05:00Z\n"
    "bob,i1,view,2024-05-01T11:00:00Z\n"
    "bob,i2,click,2024-05-02T11:00:00Z\n"
    "alice,i3,no-such-type,2024-05-02T12:00:00Z\n"
    "carol,i3,view,2024-05-03T12:00:00Z\n"
)
JSON_EVENTS = (
    '{"user_id": "alice", "item_id": "i3", "event_type": "like", "timestamp": 1714557600}\n'
    '{"user_id": "alice", "item_id": broken\n'
    '{"user_id": "bob", "item_id": "i3", "event_type": "view", "timestamp": 1714557700}\n'
)
ITEMS = "item_id,title\ni1,One\ni2,Two\ni3,Three\n"


def private_settings(home: Path, monkeypatch: pytest.MonkeyPatch, serving_url: str) -> Settings:
    for variable in ("FRESHRANK_LANDING_DIR", "FRESHRANK_WAREHOUSE_PATH", "DAGSTER_HOME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("FRESHRANK_HOME", str(home))
    monkeypatch.setenv("FRESHRANK_PSEUDONYMISE_KEY", KEY)
    monkeypatch.setenv("FRESHRANK_SERVING_URL", serving_url)
    return Settings.from_env()


_SAMPLE_VALUES: dict[type, object] = {
    str: "x",
    int: 999,
    float: 1.0,
    bool: True,
    datetime: datetime(2024, 5, 1, 12, 0),
}


def create_serving_tables(settings: Settings) -> None:
    """Every serving-store table the API creates (lists, experiments, recent events, keys)."""
    with TestClient(create_app(settings)):
        pass


def fill_user_tables(engine: sa.Engine, user_id: str, occurred_at: datetime) -> list[str]:
    """One row for ``user_id`` in every serving-store table with a user_id column, whatever
    its other columns (tables added by later code included); returns the tables filled."""
    metadata = sa.MetaData()
    metadata.reflect(engine)
    filled = []
    with engine.begin() as connection:
        for table in metadata.sorted_tables:
            if "user_id" not in table.c:
                continue
            row = {}
            for column in table.c:
                if _assigned_by_database(table, column):
                    continue
                if column.name == "user_id":
                    row[column.name] = user_id
                elif column.name in TIME_COLUMNS:
                    row[column.name] = occurred_at
                else:
                    python_type = _python_type(column)
                    row[column.name] = _SAMPLE_VALUES.get(python_type, "x") if python_type else "{}"
            connection.execute(table.insert().values(**row))
            filled.append(table.name)
    return filled


def _assigned_by_database(table: sa.Table, column: sa.Column) -> bool:
    """A single integer primary key: the database numbers it."""
    keys = list(table.primary_key.columns)
    return keys == [column] and isinstance(column.type, sa.Integer)


def _python_type(column: sa.Column) -> type | None:
    try:
        return column.type.python_type
    except NotImplementedError:
        return None


def serving_values_containing(engine: sa.Engine, texts: list[str]) -> list[tuple[str, str]]:
    """(table, column) of every serving-store value whose text contains one of ``texts``."""
    found = []
    metadata = sa.MetaData()
    metadata.reflect(engine)
    with engine.connect() as connection:
        for table in metadata.sorted_tables:
            for column in table.c:
                as_text = sa.cast(column, sa.Text)
                matches = sa.or_(*(as_text.contains(text) for text in texts))
                query = sa.select(sa.func.count()).select_from(table).where(matches)
                if connection.execute(query).scalar_one():
                    found.append((table.name, column.name))
    return found


def warehouse_values_containing(warehouse: Path, texts: list[str]) -> list[str]:
    """``schema.table.column`` of every warehouse value (views included) containing a text."""
    found = []
    with duckdb.connect(str(warehouse), read_only=True) as con:
        columns = con.sql(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns "
            "WHERE table_schema NOT IN ('information_schema', 'pg_catalog')"
        ).fetchall()
        for schema, table, column in columns:
            matches = " OR ".join(
                f"contains(CAST({identifier(column)} AS VARCHAR), ?)" for _ in texts
            )
            relation = f"{identifier(schema)}.{identifier(table)}"
            (count,) = con.execute(
                f"SELECT count(*) FROM {relation} WHERE {matches}", texts
            ).fetchone()
            if count:
                found.append(f"{schema}.{table}.{column}")
    return found
