"""The embeddings check's figures, counted in the warehouse: known answers on a small store."""

from __future__ import annotations

from datetime import datetime

import duckdb
import numpy as np
import pytest

from orchestration.features.embedding_store import upsert_vectors, vector_health

TOLERANCE = 1e-3


@pytest.fixture
def connection() -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect(":memory:")
    connection.execute("create schema ml; create schema marts")
    connection.execute("create table marts.items (item_id varchar)")
    connection.execute("insert into marts.items values ('a'), ('b'), ('c'), ('d')")
    connection.execute(
        "create table ml.item_embeddings (item_id varchar primary key, model_name varchar, "
        "content_hash varchar, text varchar, embedding float[3], embedded_at timestamp)"
    )
    return connection


def _store(connection: duckdb.DuckDBPyConnection, vectors: dict[str, list[float]]) -> None:
    ids = list(vectors)
    upsert_vectors(
        connection,
        ids,
        ["hash"] * len(ids),
        ["text"] * len(ids),
        np.array(list(vectors.values()), dtype=np.float32),
        "model",
        datetime(2026, 12, 3),
    )


def test_a_sound_store_has_nothing_to_report(connection: duckdb.DuckDBPyConnection) -> None:
    _store(connection, {"a": [1, 0, 0], "b": [0, 1, 0], "c": [0, 0, 1], "d": [0.6, 0.8, 0]})
    assert vector_health(connection, "marts.items", TOLERANCE) == {
        "vectors": 4,
        "catalog_items": 4,
        "all_finite": True,
        "vectors_off_unit_norm": 0,
        "dimension": 3,
        "items_without_vector": 0,
        "vectors_without_item": 0,
        "duplicate_vectors": 0,
    }


def test_bad_vectors_missing_items_and_strays_are_counted(
    connection: duckdb.DuckDBPyConnection,
) -> None:
    _store(
        connection,
        {
            "a": [1, 0, 0],
            "b": [0.5, 0.5, 0],  # length 0.707: off unit norm
            "c": [np.nan, 0, 1],  # not finite (and not counted as on unit norm)
            "x": [0, 0, 1.0005],  # within the tolerance, but no such catalog item
        },
    )
    health = vector_health(connection, "marts.items", TOLERANCE)
    assert health["vectors"] == 4 and health["catalog_items"] == 4
    assert health["all_finite"] is False
    assert health["vectors_off_unit_norm"] == 2  # b, and c whose length is NaN
    assert health["items_without_vector"] == 1  # d
    assert health["vectors_without_item"] == 1  # x
    assert health["dimension"] == 3 and health["duplicate_vectors"] == 0


def test_no_vector_table_yet_leaves_every_item_without_one() -> None:
    connection = duckdb.connect(":memory:")
    connection.execute("create schema marts; create table marts.items (item_id varchar)")
    connection.execute("insert into marts.items values ('a'), ('b')")
    health = vector_health(connection, "marts.items", TOLERANCE)
    assert health["vectors"] == 0 and health["items_without_vector"] == 2
    assert health["dimension"] is None and health["all_finite"] is True
