"""Features: transformer text embeddings of every catalog item, embedded only when text changes."""

import hashlib
import time
from dataclasses import replace
from datetime import UTC, datetime

import duckdb
from dagster import (
    AssetExecutionContext,
    Config,
    MaterializeResult,
    MetadataValue,
    ResourceParam,
    asset,
)
from dagster_dbt import get_asset_key_for_model

from ml.embeddings import (
    EmbeddingConfig,
    items_to_embed,
    model_dimension,
    model_identity,
)
from ml.text import item_texts
from orchestration.compute import ComputeResource
from orchestration.features.embedding_store import (
    TABLE,
    catalog_text_stamp,
    delete_missing,
    embedded_stamp,
    record_stamp,
    stored_hashes,
    upsert_vectors,
)
from orchestration.settings import Settings
from orchestration.warehouse.dbt import warehouse_dbt_models
from orchestration.warehouse.guard import open_warehouse

FEATURES_GROUP = "features"


class EmbeddingRunConfig(Config):
    """Overrides for one run; empty values take the settings (FRESHRANK_EMBEDDING_*)."""

    model: str = ""
    batch_size: int = 0
    max_length: int = 0
    device: str = ""
    full_refresh: bool = False


def embedding_config(settings: Settings, overrides: EmbeddingRunConfig) -> EmbeddingConfig:
    base = settings.embedding
    return replace(
        base,
        model=overrides.model or base.model,
        batch_size=overrides.batch_size or base.batch_size,
        max_length=overrides.max_length or base.max_length,
        device=overrides.device or base.device,
    )


def embedder_identity(settings: Settings, config: EmbeddingConfig) -> str:
    """What the vectors are made with besides the catalog: the model, its width, the template
    (part of catalog_text_stamp)."""
    template = hashlib.md5(settings.text_template.encode()).hexdigest()
    return f"{model_identity(config.model)}/{model_dimension(config.model)}/{template}"


def catalog_embedded(settings: Settings, connection: duckdb.DuckDBPyConnection) -> bool:
    """Whether the stored vectors are up to date with every catalog row loaded so far: the
    items mart holds every loaded row (its catalog_loaded_through is the newest load) and the
    catalog's text stamp is the one the vectors were last brought up to date with."""
    (behind,) = connection.execute(
        "select count(*) from raw.items where loaded_at > "
        "(select coalesce(max(catalog_loaded_through), '-infinity'::timestamp) from marts.items)"
    ).fetchall()[0]
    if behind:
        return False
    embedder = embedder_identity(settings, embedding_config(settings, EmbeddingRunConfig()))
    return catalog_text_stamp(connection, embedder) == embedded_stamp(connection)


def refresh_item_embeddings(
    settings: Settings,
    config: EmbeddingConfig,
    full_refresh: bool = False,
    compute: ComputeResource | None = None,
) -> dict:
    """Embed new or changed items into ml.item_embeddings; returns figures for the UI and logs.

    The texts are embedded in this process, or by model workers on Ray (``compute``). When
    nothing the vectors are made from changed since the last run (the catalog's text fields,
    the model, the template: catalog_text_stamp), nothing is read or hashed: a refresh whose
    batch holds only events pays a query, not a pass over the catalog.
    """
    model_name = model_identity(config.model)
    dimension = model_dimension(config.model)
    embedder = embedder_identity(settings, config)
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        stamp = catalog_text_stamp(connection, embedder)
        if not full_refresh and stamp == embedded_stamp(connection):
            return _unchanged(connection, model_name, dimension)
        items = connection.sql(
            "select item_id, title, description, categories, attributes from marts.items"
        ).df()
    texts = item_texts(items, settings.text_template)
    with open_warehouse(settings.warehouse_path) as connection:
        stored = stored_hashes(connection, dimension)
    if full_refresh:
        stored = stored.iloc[0:0]
    pending = items_to_embed(texts, stored, model_name)
    figures = _figures(len(texts), len(pending), model_name, dimension, catalog_unchanged=False)
    if len(pending):
        started = time.perf_counter()
        vectors, engine = (compute or ComputeResource()).encode(
            settings, config, texts[pending.index].tolist()
        )
        seconds = time.perf_counter() - started
        figures.update(
            **engine,
            seconds_embedding=round(seconds, 2),
            texts_per_second=round(len(pending) / max(seconds, 1e-9), 1),
        )
        embedded_at = datetime.now(UTC).replace(tzinfo=None)
        with open_warehouse(settings.warehouse_path) as connection:
            upsert_vectors(
                connection,
                pending.index.tolist(),
                pending.tolist(),
                texts[pending.index].tolist(),
                vectors,
                model_name,
                embedded_at,
            )
    with open_warehouse(settings.warehouse_path) as connection:
        figures["removed"] = delete_missing(connection, texts.index.tolist())
        record_stamp(connection, stamp)
    figures["sample_texts"] = texts.head(5).tolist()
    return figures


def _figures(
    items: int, embedded: int, model_name: str, dimension: int, catalog_unchanged: bool
) -> dict:
    """refresh_item_embeddings' figures before any text is embedded."""
    return {
        "items": items,
        "embedded": embedded,
        "reused": items - embedded,
        "model": model_name,
        "dimension": dimension,
        "device": "not loaded",
        "seconds_embedding": 0.0,
        "texts_per_second": 0.0,
        "catalog_unchanged": catalog_unchanged,
    }


def _unchanged(connection: duckdb.DuckDBPyConnection, model_name: str, dimension: int) -> dict:
    """refresh_item_embeddings' figures when the catalog's texts are as last embedded."""
    ((items,),) = connection.execute("select count(*) from marts.items").fetchall()
    samples = connection.execute(f"select text from {TABLE} order by item_id limit 5").fetchall()
    figures = _figures(int(items), 0, model_name, dimension, catalog_unchanged=True)
    return {**figures, "removed": 0, "sample_texts": [text for (text,) in samples]}


@asset(
    group_name=FEATURES_GROUP,
    pool="warehouse",
    deps=[get_asset_key_for_model([warehouse_dbt_models], "items")],
)
def item_embeddings(
    context: AssetExecutionContext,
    config: EmbeddingRunConfig,
    compute: ComputeResource,
    settings: ResourceParam[Settings],
) -> MaterializeResult:
    """Unit-length transformer embeddings of each item's text, in ml.item_embeddings."""
    figures = refresh_item_embeddings(
        settings, embedding_config(settings, config), config.full_refresh, compute
    )
    context.log.info(
        f"embedded {figures['embedded']} of {figures['items']} items with {figures['model']} "
        f"on {figures['device']} ({figures['texts_per_second']} texts/s)"
    )
    samples = figures.pop("sample_texts")
    return MaterializeResult(
        metadata={
            **figures,
            "sample_texts": MetadataValue.md("\n".join(f"- {text}" for text in samples)),
        }
    )
