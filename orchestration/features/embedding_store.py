"""Item vectors in the warehouse's `ml` schema, as fixed-size float arrays."""

from __future__ import annotations

from datetime import datetime

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

TABLE = "ml.item_embeddings"


def _table_exists(connection: duckdb.DuckDBPyConnection, table: str = TABLE) -> bool:
    """Whether ``table`` (schema.name) exists."""
    schema, name = table.split(".")
    # fetchall() finishes the result: DuckDB refuses new work on a half-read one.
    rows = connection.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [schema, name],
    ).fetchall()
    return bool(rows[0][0])


def stored_hashes(connection: duckdb.DuckDBPyConnection, dimension: int) -> pd.Series:
    """content_hash by item_id of the stored vectors (empty when none, or of another dimension)."""
    connection.execute("create schema if not exists ml")
    if _table_exists(connection):
        stored_dimension = connection.execute(
            f"select array_length(embedding) from {TABLE} limit 1"
        ).fetchall()
        if stored_dimension and stored_dimension[0][0] != dimension:
            # Another model with another width: every vector is stale.
            connection.execute(f"drop table {TABLE}")
    connection.execute(
        f"create table if not exists {TABLE} (item_id varchar primary key, model_name varchar, "
        f"content_hash varchar, text varchar, embedding float[{dimension}], embedded_at timestamp)"
    )
    frame = connection.execute(f"select item_id, content_hash from {TABLE}").df()
    return frame.set_index("item_id")["content_hash"]


def upsert_vectors(
    connection: duckdb.DuckDBPyConnection,
    item_ids: list[str],
    hashes: list[str],
    texts: list[str],
    vectors: np.ndarray,
    model_name: str,
    embedded_at: datetime,
) -> None:
    """Insert or replace vectors for ``item_ids`` in one statement."""
    if not item_ids:
        return
    dimension = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
    batch = pa.table(
        {
            "item_id": pa.array(item_ids, pa.string()),
            "model_name": pa.array([model_name] * len(item_ids), pa.string()),
            "content_hash": pa.array(hashes, pa.string()),
            "text": pa.array(texts, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, dimension),
            "embedded_at": pa.array([embedded_at] * len(item_ids), pa.timestamp("us")),
        }
    )
    connection.register("new_vectors", batch)
    connection.execute(f"insert or replace into {TABLE} select * from new_vectors")
    connection.unregister("new_vectors")


def delete_missing(connection: duckdb.DuckDBPyConnection, keep_item_ids: list[str]) -> int:
    """Drop vectors of items no longer in the catalog; returns how many went."""
    connection.register("catalog_ids", pa.table({"item_id": pa.array(keep_item_ids, pa.string())}))
    ((gone,),) = connection.execute(
        f"select count(*) from {TABLE} where item_id not in (select item_id from catalog_ids)"
    ).fetchall()
    connection.execute(
        f"delete from {TABLE} where item_id not in (select item_id from catalog_ids)"
    )
    connection.unregister("catalog_ids")
    return int(gone)


def load_vectors(connection: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """All vectors as a frame indexed by item_id with one column per dimension (empty if none)."""
    if not _table_exists(connection):
        return pd.DataFrame()
    table = connection.sql(
        f"select item_id, embedding from {TABLE} order by item_id"
    ).to_arrow_table()
    item_ids = table.column("item_id").to_pylist()
    if not item_ids:
        return pd.DataFrame()
    embedding = table.column("embedding").combine_chunks()
    dimension = embedding.type.list_size
    values = embedding.flatten().to_numpy(zero_copy_only=False).reshape(-1, dimension)
    return pd.DataFrame(values, index=pd.Index(item_ids, name="item_id"))


def vector_health(
    connection: duckdb.DuckDBPyConnection, catalog: str, tolerance: float
) -> dict[str, object]:
    """What the embeddings check judges, counted in the warehouse (no vector leaves it): vectors,
    whether every one is finite, how many are off unit length by more than ``tolerance``, their
    dimension (None: no vectors, or several widths), catalog items (``catalog``, a table with an
    item_id column) without a vector, vectors of items not in it, and duplicated item ids."""
    stored = _table_exists(connection)
    if not stored:
        vectors = finite_count = off_norm = duplicated = extra = 0
        widths: tuple = (None, None)
    else:
        # A non-finite value makes the sum of squares non-finite, so one product per vector
        # answers both questions; NaN compares as neither off nor on, hence `not (... <= ...)`.
        vectors, finite_count, off_norm, duplicated, shortest, longest = connection.execute(
            f"""
            select
                count(*),
                count(*) filter (where isfinite(list_inner_product(embedding, embedding))),
                count(*) filter (
                    where not (abs(sqrt(list_inner_product(embedding, embedding)) - 1) <= ?)
                ),
                count(*) - count(distinct item_id),
                min(len(embedding)),
                max(len(embedding))
            from {TABLE}
            """,
            [tolerance],
        ).fetchall()[0]
        widths = (shortest, longest)
        ((extra,),) = connection.execute(
            f"select count(distinct item_id) from {TABLE} "
            f"where item_id not in (select item_id from {catalog})"
        ).fetchall()
    ((catalog_items,),) = connection.execute(
        f"select count(distinct item_id) from {catalog}"
    ).fetchall()
    ((missing,),) = connection.execute(
        f"select count(distinct item_id) from {catalog} where item_id not in "
        f"(select item_id from {TABLE})"
        if stored
        else f"select count(distinct item_id) from {catalog}"
    ).fetchall()
    return {
        "vectors": int(vectors),
        "catalog_items": int(catalog_items),
        "all_finite": int(finite_count) == int(vectors),
        "vectors_off_unit_norm": int(off_norm),
        "dimension": widths[0] if widths[0] == widths[1] else None,
        "items_without_vector": int(missing),
        "vectors_without_item": int(extra),
        "duplicate_vectors": int(duplicated),
    }


STAMP_TABLE = "ml.item_embeddings_stamp"


def catalog_text_stamp(connection: duckdb.DuckDBPyConnection, embedder: str) -> str:
    """A fingerprint of everything the vectors are made from: every catalog item's text fields
    (marts.items) and ``embedder`` (the model, its width and the text template). Equal stamps:
    embedding again would change nothing."""
    ((fields,),) = connection.execute(
        "select coalesce(md5(string_agg(concat_ws(chr(31), item_id, "
        + ", ".join(
            f"coalesce('=' || {column}::varchar, '-')"
            for column in ("title", "description", "categories", "attributes")
        )
        + "), chr(30) order by item_id)), '') from marts.items"
    ).fetchall()
    return f"{embedder}/{fields}"


def embedded_stamp(connection: duckdb.DuckDBPyConnection) -> str | None:
    """The stamp of the catalog the stored vectors were last brought up to date with."""
    if not _table_exists(connection, STAMP_TABLE):
        return None
    rows = connection.execute(f"select stamp from {STAMP_TABLE}").fetchall()
    return rows[0][0] if rows else None


def record_stamp(connection: duckdb.DuckDBPyConnection, stamp: str) -> None:
    connection.execute(
        f"create or replace table {STAMP_TABLE} as select ?::varchar as stamp", [stamp]
    )
