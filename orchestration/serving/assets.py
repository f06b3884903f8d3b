"""Ranked top-K lists: computed in the warehouse, checked, then published to the serving store."""

from datetime import UTC, datetime

import duckdb
import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset
from dagster_dbt import get_asset_key_for_model

from ml.constants import GENERATED_AT, MODEL_VERSION, NON_CONSUMING_EVENT_TYPES, USER_ID
from ml.recommend import first_ranking
from orchestration.serving.store import ServingStore
from orchestration.settings import get_settings
from orchestration.warehouse.dbt import warehouse_dbt_models
from orchestration.warehouse.guard import open_warehouse

SERVING_GROUP = "serving"
LISTS_TABLE = "ml.recommendation_lists"
PREVIEW_USERS = 3


def _mart(name: str):
    return get_asset_key_for_model([warehouse_dbt_models], name)


def read_ranking_inputs(connection: duckdb.DuckDBPyConnection) -> dict[str, pd.DataFrame]:
    """The marts the ranking needs, as DataFrames."""
    consuming = ", ".join(f"'{event_type}'" for event_type in NON_CONSUMING_EVENT_TYPES)
    return {
        "interactions": connection.sql(
            "select user_id, item_id, weight, occurred_at from marts.interactions where weight > 0"
        ).df(),
        "consumed": connection.sql(
            "select distinct user_id, item_id from marts.interactions "
            f"where event_type not in ({consuming})"
        ).df(),
        "histories": connection.sql(
            "select user_id, item_id, weight, occurred_at, recency_rank "
            "from marts.user_recent_history"
        ).df(),
        "trending": connection.sql(
            "select item_id, decayed_score from marts.item_trending order by trending_rank"
        ).df(),
        "items": connection.sql("select item_id, title, available from marts.items").df(),
        "users": connection.sql("select user_id from marts.users order by user_id").df(),
    }


def _preview(lists: pd.DataFrame, titles: pd.Series) -> str:
    users = lists[USER_ID].drop_duplicates().head(PREVIEW_USERS)
    preview = lists[lists[USER_ID].isin(users)].copy()
    preview["title"] = preview["item_id"].map(titles).fillna("")
    return preview[[USER_ID, "rank", "item_id", "title", "score", "reason"]].to_markdown(
        index=False, floatfmt=".4f"
    )


@asset(
    group_name=SERVING_GROUP,
    pool="warehouse",
    deps=[
        _mart(name)
        for name in ("interactions", "user_recent_history", "item_trending", "items", "users")
    ],
)
def recommendation_lists(context: AssetExecutionContext) -> MaterializeResult:
    """Top-K lists for every known user, ranked and filtered, waiting for their checks."""
    settings = get_settings()
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        inputs = read_ranking_inputs(connection)
    ranked = first_ranking(
        interactions=inputs["interactions"],
        histories=inputs["histories"],
        consumed=inputs["consumed"],
        trending=inputs["trending"],
        items=inputs["items"],
        user_ids=inputs["users"][USER_ID],
        k=settings.top_k,
    )
    generated_at = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    ranked.lists[MODEL_VERSION] = ranked.model_version
    ranked.lists[GENERATED_AT] = generated_at
    with open_warehouse(settings.warehouse_path) as connection:
        connection.execute("create schema if not exists ml")
        connection.register("ranked_lists", ranked.lists)
        connection.execute(f"create or replace table {LISTS_TABLE} as select * from ranked_lists")
    titles = inputs["items"].set_index("item_id")["title"]
    context.log.info(f"ranked {ranked.lists[USER_ID].nunique()} users with {ranked.model_version}")
    return MaterializeResult(
        metadata={
            "users": int(ranked.lists[USER_ID].nunique()),
            "rows": len(ranked.lists),
            "users_on_trending_fallback": ranked.fallback_users,
            "model_version": ranked.model_version,
            "preview": MetadataValue.md(_preview(ranked.lists, titles)),
        }
    )


@asset(group_name=SERVING_GROUP, deps=[recommendation_lists])
def published_recommendations(context: AssetExecutionContext) -> MaterializeResult:
    """The lists in the serving store, replaced in one transaction (readers never see half)."""
    settings = get_settings()
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        lists = connection.sql(f"select * from {LISTS_TABLE}").df()
    store = ServingStore(settings.serving_url)
    try:
        written = store.publish(lists)
        summary = store.summary()
    finally:
        store.dispose()
    context.log.info(f"published {written} rows to the serving store")
    return MaterializeResult(
        metadata={
            "rows_published": written,
            "users": int(summary["users"]),
            "serving_store": store.engine.url.render_as_string(hide_password=True),
            "generated_at": str(summary["generated_at"]),
        }
    )
