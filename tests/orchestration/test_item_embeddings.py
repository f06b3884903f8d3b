"""Item embeddings follow the catalog's texts: a refresh whose batch holds only events embeds and
reads nothing, a changed title re-embeds that item alone."""

from __future__ import annotations

import duckdb

from orchestration.features.assets import refresh_item_embeddings
from orchestration.settings import Settings


def _catalog(settings: Settings, titles: dict[str, str]) -> None:
    with duckdb.connect(str(settings.warehouse_path)) as connection:
        connection.execute("create schema if not exists marts")
        connection.execute(
            "create or replace table marts.items (item_id varchar, title varchar, "
            "description varchar, categories varchar, attributes varchar)"
        )
        for item_id, title in titles.items():
            connection.execute(
                "insert into marts.items values (?, ?, null, 'Drama', null)", [item_id, title]
            )


def _vectors(settings: Settings) -> dict[str, tuple]:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as connection:
        rows = connection.execute("select item_id, embedding from ml.item_embeddings").fetchall()
    return {item_id: tuple(vector) for item_id, vector in rows}


def test_embeddings_are_redone_only_when_the_texts_they_come_from_change(
    settings: Settings,
) -> None:
    _catalog(settings, {"a": "Heat (1995)", "b": "Up (2009)", "c": "Alien (1979)"})
    first = refresh_item_embeddings(settings, settings.embedding)
    assert (first["embedded"], first["catalog_unchanged"]) == (3, False)
    stored = _vectors(settings)

    again = refresh_item_embeddings(settings, settings.embedding)
    assert again["catalog_unchanged"] is True
    assert (again["embedded"], again["reused"], again["items"]) == (0, 3, 3)
    assert len(again["sample_texts"]) == 3 and _vectors(settings) == stored

    _catalog(settings, {"a": "Heat (1995)", "b": "Up (2009)", "c": "Aliens (1986)"})
    changed = refresh_item_embeddings(settings, settings.embedding)
    assert (changed["embedded"], changed["catalog_unchanged"]) == (1, False)
    after = _vectors(settings)
    assert after["a"] == stored["a"] and after["c"] != stored["c"]

    forced = refresh_item_embeddings(settings, settings.embedding, full_refresh=True)
    assert forced["embedded"] == 3
