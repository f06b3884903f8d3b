"""Known-answer tests of the raw batches' contract checks, run in DuckDB."""

from __future__ import annotations

from datetime import datetime

import duckdb
import pandas as pd
import pytest

from orchestration.quality.batch_checks import (
    RAW_ITEM_RULES,
    check_batch,
    raw_event_rules,
)

EVENT_TYPES = ("view", "click", "rate")


@pytest.fixture
def connection():
    with duckdb.connect() as connection:
        connection.execute("create schema raw")
        yield connection


def load_events(connection, batch_id: str, **overrides: list) -> None:
    frame = pd.DataFrame(
        {
            "event_id": ["e1", "e2", "e3"],
            "user_id": ["u1", "u2", "u3"],
            "item_id": ["i1", "i2", "i3"],
            "event_type": ["view", "rate", "click"],
            "occurred_at": [datetime(2024, 1, day) for day in (1, 2, 3)],
        }
    )
    for column, values in overrides.items():
        frame[column] = values
    frame["batch_id"] = batch_id
    connection.register("batch", frame)
    tables = connection.execute("select table_name from duckdb_tables()").fetchall()
    if ("events",) in tables:
        connection.execute("insert into raw.events select * from batch")
    else:
        connection.execute("create table raw.events as select * from batch")
    connection.unregister("batch")


def test_a_clean_batch_passes_every_rule(connection) -> None:
    load_events(connection, "run-1")
    rows, outcome = check_batch(connection, "raw.events", "run-1", raw_event_rules(EVENT_TYPES))
    assert rows == 3
    assert outcome.success and outcome.failures == []
    assert outcome.evaluated == len(raw_event_rules(EVENT_TYPES)) == 8


def test_each_broken_rule_is_named_with_its_count(connection) -> None:
    load_events(
        connection,
        "run-1",
        event_type=["view", "teleport", "teleport"],
        user_id=["u1", "", None],
        occurred_at=[datetime(2024, 1, 1), None, datetime(2024, 1, 3)],
    )
    rows, outcome = check_batch(connection, "raw.events", "run-1", raw_event_rules(EVENT_TYPES))
    assert rows == 3
    assert not outcome.success
    # A NULL id breaks not-null only; the empty one breaks the length rule only.
    assert outcome.failures == [
        "expect_column_values_to_not_be_null on user_id (1 unexpected)",
        "expect_column_values_to_not_be_null on occurred_at (1 unexpected)",
        "expect_column_values_to_be_in_set on event_type (2 unexpected)",
        "expect_column_value_lengths_to_be_between on user_id (1 unexpected)",
    ]
    assert outcome.metadata()["expectations_failed"] == 4


def test_only_the_runs_own_batch_is_checked(connection) -> None:
    load_events(connection, "run-1", event_type=["teleport"] * 3)
    load_events(connection, "run-2")
    rows, outcome = check_batch(connection, "raw.events", "run-2", raw_event_rules(EVENT_TYPES))
    assert rows == 3 and outcome.success
    rows, outcome = check_batch(connection, "raw.events", "run-3", raw_event_rules(EVENT_TYPES))
    assert rows == 0 and outcome.success


def test_item_rules_want_an_id_and_a_non_empty_title(connection) -> None:
    connection.execute(
        "create table raw.items as select * from (values ('i1', 'A', 'b'), ('i2', '', 'b'), "
        "('i3', null, 'b'), (null, 'D', 'b')) t(item_id, title, batch_id)"
    )
    rows, outcome = check_batch(connection, "raw.items", "b", RAW_ITEM_RULES)
    assert rows == 4
    assert outcome.failures == [
        "expect_column_values_to_not_be_null on item_id (1 unexpected)",
        "expect_column_values_to_not_be_null on title (1 unexpected)",
        "expect_column_value_lengths_to_be_between on title (1 unexpected)",
    ]


def test_event_types_are_quoted_as_sql_literals(connection) -> None:
    load_events(connection, "run-1", event_type=["it's", "view", "view"])
    rules = raw_event_rules(("view", "it's"))
    assert check_batch(connection, "raw.events", "run-1", rules)[1].success
