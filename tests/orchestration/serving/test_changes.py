"""What a refresh finds changed since the last publish: new interactions, withdrawn items and
withdrawn items made available again."""

from __future__ import annotations

import duckdb
import pandas as pd

from orchestration.serving.assets import _advance_watermark, affected_users
from orchestration.serving.store import ServingStore
from orchestration.settings import Settings
from tests.orchestration.serving.test_store import make_lists

EVENTS_LOADED = pd.Timestamp("2026-03-02 10:00")
CATALOG_LOADED = EVENTS_LOADED + pd.Timedelta("5s")  # the same ingest, its item file after


def warehouse(settings: Settings, catalog: list[tuple[str, bool, pd.Timestamp]]) -> None:
    """marts.interactions (u1 on a, loaded at EVENTS_LOADED), raw.items (catalog rows: item,
    available, loaded_at) and marts.items (each item's latest row)."""
    rows = pd.DataFrame(catalog, columns=["item_id", "available", "loaded_at"])
    with duckdb.connect(str(settings.warehouse_path)) as connection:
        for schema in ("marts", "raw"):
            connection.execute(f"create schema if not exists {schema}")
        connection.execute(
            "create or replace table marts.interactions as "
            "select 'u1' as user_id, 'a' as item_id, ?::timestamp as loaded_at",
            [EVENTS_LOADED],
        )
        connection.register("catalog", rows)
        connection.execute("create or replace table raw.items as select * from catalog")
        connection.execute(
            "create or replace table marts.items as select item_id, "
            "arg_max(available, loaded_at) as available from raw.items group by item_id"
        )


def test_items_unavailable_in_the_catalog_a_publish_ranked_on_are_not_withdrawn_later(
    settings: Settings,
) -> None:
    # Loaded with the first events, after the newest of them: "retired" was never available.
    first = [("a", True, CATALOG_LOADED), ("b", True, CATALOG_LOADED)]
    warehouse(settings, [*first, ("retired", False, CATALOG_LOADED)])
    changes = affected_users(settings)
    assert changes.withdrawn == [] and changes.users == ["u1"]  # nothing published yet
    _advance_watermark(settings, changes.through, changes.catalog_through)
    assert affected_users(settings).withdrawn == []

    later = CATALOG_LOADED + pd.Timedelta("1h")
    warehouse(settings, [*first, ("retired", False, CATALOG_LOADED), ("b", False, later)])
    changes = affected_users(settings)
    assert changes.withdrawn == ["b"]
    assert changes.users == []  # nobody has new events, and no list is served to hold b
    assert changes.catalog_through == later


def test_a_watermark_kept_before_the_catalogs_falls_back_to_the_events(
    settings: Settings,
) -> None:
    warehouse(settings, [("a", True, CATALOG_LOADED), ("retired", False, CATALOG_LOADED)])
    with duckdb.connect(str(settings.warehouse_path)) as connection:
        connection.execute("create schema ml")
        connection.execute("create table ml.publish_watermark (published_through timestamp)")
        connection.execute("insert into ml.publish_watermark values (?)", [EVENTS_LOADED])
    # As before the catalog's watermark: rows loaded after the events' count, once.
    changes = affected_users(settings)
    assert changes.withdrawn == ["retired"]
    _advance_watermark(settings, changes.through, changes.catalog_through)
    assert affected_users(settings).withdrawn == []


def test_an_item_a_refresh_withdrew_and_the_catalog_makes_available_again_is_restored(
    settings: Settings,
) -> None:
    first = [("a", True, CATALOG_LOADED), ("b", True, CATALOG_LOADED), ("c", True, CATALOG_LOADED)]
    warehouse(settings, first)
    changes = affected_users(settings)
    _advance_watermark(settings, changes.through, changes.catalog_through)
    store = ServingStore(settings.serving_url)
    lists = make_lists(["u1"], 1, "v1")
    store.publish(lists, users=["u1"], withdrawn=["b", "c"])  # as a refresh withdrew them
    assert affected_users(settings).restored == []  # no catalog row since: nothing to give back

    later = CATALOG_LOADED + pd.Timedelta("1h")
    warehouse(settings, [*first, ("b", True, later), ("c", False, later)])
    changes = affected_users(settings)
    assert changes.restored == ["b"]  # c is still withdrawn; a was never withdrawn
    assert changes.withdrawn == ["c"]
    store.dispose()
