"""Ranked top-K lists: computed in the warehouse, checked, then published to the serving store."""

import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset
from dagster_dbt import get_asset_key_for_model

from ml.constants import USER_ID
from orchestration.features.assets import item_embeddings
from orchestration.serving.scoring import ScoredLists, score_users
from orchestration.serving.store import ServingStore
from orchestration.settings import Settings, get_settings
from orchestration.warehouse.dbt import warehouse_dbt_models
from orchestration.warehouse.guard import open_warehouse

SERVING_GROUP = "serving"
LISTS_TABLE = "ml.recommendation_lists"
TRENDING_TABLE = "ml.trending_list"
PREVIEW_USERS = 3


def _mart(name: str):
    return get_asset_key_for_model([warehouse_dbt_models], name)


def stage_lists(settings: Settings, scored: ScoredLists) -> None:
    """Keep lists in the warehouse until their checks pass and they are published."""
    with open_warehouse(settings.warehouse_path) as connection:
        connection.execute("create schema if not exists ml")
        connection.register("scored_lists", scored.lists)
        connection.register("scored_trending", scored.trending)
        connection.execute(f"create or replace table {LISTS_TABLE} as select * from scored_lists")
        connection.execute(
            f"create or replace table {TRENDING_TABLE} as select * from scored_trending"
        )


def staged_lists(settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        return (
            connection.sql(f"select * from {LISTS_TABLE}").df(),
            connection.sql(f"select * from {TRENDING_TABLE}").df(),
        )


def lists_preview(lists: pd.DataFrame, settings: Settings) -> str:
    """A markdown table of the first few users' lists, with titles."""
    users = lists[USER_ID].drop_duplicates().head(PREVIEW_USERS)
    preview = lists[lists[USER_ID].isin(users)].copy()
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        titles = connection.sql("select item_id, title from marts.items").df()
    preview["title"] = preview["item_id"].map(titles.set_index("item_id")["title"]).fillna("")
    return preview[[USER_ID, "rank", "item_id", "title", "score", "reason"]].to_markdown(
        index=False, floatfmt=".4f"
    )


@asset(
    group_name=SERVING_GROUP,
    pool="warehouse",
    deps=[
        *(
            _mart(name)
            for name in ("interactions", "user_recent_history", "item_trending", "items", "users")
        ),
        item_embeddings,
    ],
)
def recommendation_lists(context: AssetExecutionContext) -> MaterializeResult:
    """Top-K lists for every known user from the champion model, waiting for their checks."""
    settings = get_settings()
    scored = score_users(settings)
    stage_lists(settings, scored)
    context.log.info(f"ranked {scored.lists[USER_ID].nunique()} users with {scored.model_version}")
    return MaterializeResult(
        metadata={
            "users": int(scored.lists[USER_ID].nunique()),
            "rows": len(scored.lists),
            "users_on_trending_fallback": scored.fallback_users,
            "model_version": scored.model_version,
            "preview": MetadataValue.md(lists_preview(scored.lists, settings)),
        }
    )


def publish_staged(settings: Settings, users: list[str] | None = None) -> dict[str, object]:
    """Publish the staged lists (all, or only ``users``') and the trending list in one go."""
    lists, trending = staged_lists(settings)
    store = ServingStore(settings.serving_url)
    try:
        written = store.publish(lists, users=users, trending=trending)
        summary = store.summary()
    finally:
        store.dispose()
    return {
        "rows_published": written,
        "users": int(summary["users"]),
        "serving_store": store.engine.url.render_as_string(hide_password=True),
        "generated_at": str(summary["generated_at"]),
    }


@asset(group_name=SERVING_GROUP, deps=[recommendation_lists])
def published_recommendations(context: AssetExecutionContext) -> MaterializeResult:
    """The lists in the serving store, replaced in one transaction (readers never see half)."""
    figures = publish_staged(get_settings())
    context.log.info(f"published {figures['rows_published']} rows to the serving store")
    return MaterializeResult(metadata=figures)
