"""What ranking reads from the warehouse: a snapshot of everything known, and users' behaviour.

One read path for training (the backtests) and serving, so both see the marts the same way.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from ml.constants import USER_ID
from ml.pipeline.snapshot import Behaviour, Snapshot
from orchestration.features.embedding_store import load_vectors
from orchestration.settings import Settings
from orchestration.warehouse.guard import open_warehouse

EVENT_COLUMNS = "user_id, item_id, event_type, weight, occurred_at, value, context"


def _has_table(connection: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    (count,) = connection.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [schema, table],
    ).fetchall()[0]
    return bool(count)


def _frame(relation: duckdb.DuckDBPyRelation) -> pd.DataFrame:
    """A query's rows as a DataFrame whose text columns hold one Python string per distinct
    value: a log repeats its ids, event types and contexts millions of times, and a string per
    row costs about 60 bytes where a shared one costs the 8 of its pointer (10 million events:
    2.9 GB of strings as separate objects). Arrow's conversion shares them as it goes. Types
    are those DuckDB's own `.df()` gives (dates and times as datetime64[us])."""
    frame = relation.to_arrow_table().to_pandas(
        deduplicate_objects=True, date_as_object=False, self_destruct=True
    )
    for column in frame.columns:
        if pd.api.types.is_datetime64_dtype(frame[column]) and frame[column].dtype != "<M8[us]":
            frame[column] = frame[column].astype("datetime64[us]")
    return frame


def read_snapshot(connection: duckdb.DuckDBPyConnection) -> Snapshot:
    """Every interaction, the catalog, the item vectors and the co-visitation pairs.

    Each table comes in the order of its key: a table's rows have no order of their own (it
    follows the engine that built the mart, its partitions and threads), and ranking sums pair
    weights in the order it reads them, so another order would change scores in their last bits
    and, through near-ties, the lists.
    """
    interactions = _frame(
        connection.sql(
            f"select {EVENT_COLUMNS} from marts.interactions order by occurred_at, event_id"
        )
    )
    items = connection.sql(
        "select item_id, title, available, created_at from marts.items order by item_id"
    ).df()
    covisitation = None
    if _has_table(connection, "marts", "item_covisitation"):
        covisitation = _frame(
            connection.sql(
                "select item_id, related_item_id, pair_date, pair_weight "
                "from marts.item_covisitation order by item_id, related_item_id, pair_date"
            )
        )
    return Snapshot(
        interactions=interactions,
        items=items,
        vectors=load_vectors(connection),
        covisitation=covisitation,
    )


def read_behaviour(snapshot: Snapshot, user_ids: list[str] | None = None) -> Behaviour:
    """The events of ``user_ids`` (every user with an event when None) from a snapshot."""
    events = snapshot.interactions
    if user_ids is None:
        return Behaviour(events)
    chosen = pd.Series(user_ids, dtype=str)
    return Behaviour(events[events[USER_ID].isin(chosen)], users=chosen.to_numpy(dtype=object))


def read_user_behaviour(connection: duckdb.DuckDBPyConnection, user_ids: list[str]) -> Behaviour:
    """The events of ``user_ids`` straight from the marts: what a refresh reads instead of a
    whole snapshot, so its cost follows the users a batch touched."""
    chosen = pd.DataFrame({USER_ID: pd.Series(user_ids, dtype=str)})
    connection.register("behaviour_users", chosen)
    try:
        events = connection.sql(
            f"select {EVENT_COLUMNS} from marts.interactions "
            "where user_id in (select user_id from behaviour_users) order by occurred_at, event_id"
        ).df()
    finally:
        connection.unregister("behaviour_users")
    return Behaviour(events, users=chosen[USER_ID].to_numpy(dtype=object))


def catalog_stamp(connection: duckdb.DuckDBPyConnection) -> str:
    """A fingerprint of the catalog ranking sees: item ids, availability and which items have a
    text vector under which content hash. Equal stamps: nothing a fitted pipeline knows of the
    catalog has changed."""
    (items,) = connection.execute(
        "select coalesce(md5(string_agg(item_id || ':' || coalesce(available::varchar, '?'), "
        "',' order by item_id)), '') from marts.items"
    ).fetchall()[0]
    vectors = ""
    if _has_table(connection, "ml", "item_embeddings"):
        (vectors,) = connection.execute(
            "select coalesce(md5(string_agg(item_id || ':' || content_hash, ',' order by item_id)),"
            " '') from ml.item_embeddings"
        ).fetchall()[0]
    return f"{items}/{vectors}"


def load_snapshot(settings: Settings) -> Snapshot:
    """read_snapshot over a short-lived read-only connection."""
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        return read_snapshot(connection)
