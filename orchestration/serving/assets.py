"""Ranked top-K lists: computed in the warehouse, checked, then published to the serving store.

A full scoring also writes the lists, shard by shard, into a new serving version that nobody
reads yet; the publish, which runs only once the lists pass their checks, switches to it.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import duckdb
import pandas as pd
from dagster import (
    AssetExecutionContext,
    Config,
    MaterializeResult,
    MetadataValue,
    ResourceParam,
    asset,
)
from dagster_dbt import get_asset_key_for_model

from ml.constants import CONTEXT_VALUE, ITEM_ID, USER_ID
from ml.pipeline.parallel import WarmPool
from orchestration.compute import ComputeResource
from orchestration.features.assets import item_embeddings
from orchestration.model.assets import recommender_champion
from orchestration.serving.scoring import ScoredLists, score_users
from orchestration.serving.state import remember_served_champion
from orchestration.serving.store import ServingStore
from orchestration.settings import Settings
from orchestration.warehouse.dbt import warehouse_dbt_models
from orchestration.warehouse.guard import open_warehouse

SERVING_GROUP = "serving"
LISTS_TABLE = "ml.recommendation_lists"
TRENDING_TABLE = "ml.trending_list"
CONTEXT_TRENDING_TABLE = "ml.context_trending_list"
RELATED_TABLE = "ml.related_items"
CANDIDATES_TABLE = "ml.recommendation_candidates"
TITLES_TABLE = "ml.item_titles"
SCOPE_TABLE = "ml.recommendation_scope"
SCOPE_FLAG_TABLE = "ml.recommendation_scope_everyone"
WITHDRAWN_TABLE = "ml.recommendation_withdrawn"  # items a refresh takes out of related items
RESTORED_TABLE = "ml.recommendation_restored"  # withdrawn items a refresh gives back to pools
WATERMARK_TABLE = "ml.publish_watermark"
PREVIEW_USERS = 3


def _mart(name: str):
    return get_asset_key_for_model([warehouse_dbt_models], name)


def stage_lists(
    settings: Settings,
    scored: ScoredLists,
    scope: list[str] | None,
    through: object,
    serving_version: int | None = None,
    withdrawn: Sequence[str] = (),
    catalog_through: object = None,
    restored: Sequence[str] = (),
) -> None:
    """Keep lists in the warehouse until their checks pass and they are published.

    ``scope`` is the users rescored (None: everyone); it travels with the lists so that the
    publish replaces exactly those users' lists, also users whose new list is empty.
    ``serving_version`` is the serving version the scoring wrote the lists into (None: none);
    what it holds beside the lists (candidates, related items, titles) is not staged again.
    ``withdrawn``: items withdrawn since the last publish, which the publish takes out of the
    served related items and pools; ``restored``: items withdrawn before and available again,
    which it gives back to the pools. ``through`` and ``catalog_through``: the newest interaction
    and catalog load times the lists cover (the publish's watermarks). Lists a full scoring
    spooled to files are read from them, and the files go.
    """
    scope_frame = pd.DataFrame({USER_ID: pd.Series(scope or [], dtype=str)})
    in_version = serving_version is not None
    spool = scored.spool
    with open_warehouse(settings.warehouse_path) as connection:
        connection.execute("create schema if not exists ml")
        connection.register("scored_lists", scored.lists)
        connection.register("scored_trending", scored.trending)
        connection.register("scored_scope", scope_frame)
        for name, items in (("scored_withdrawn", withdrawn), ("scored_restored", restored)):
            connection.register(name, pd.DataFrame({ITEM_ID: pd.Series(list(items), dtype=str)}))
        if spool is not None and spool.files:
            connection.execute(
                f"create or replace table {LISTS_TABLE} as select * from read_parquet(?)",
                [[str(path) for path in spool.files]],
            )
        else:
            connection.execute(
                f"create or replace table {LISTS_TABLE} as select * from scored_lists"
            )
        connection.execute(
            f"create or replace table {TRENDING_TABLE} as select * from scored_trending"
        )
        connection.execute(f"create or replace table {SCOPE_TABLE} as select * from scored_scope")
        connection.execute(
            f"create or replace table {WITHDRAWN_TABLE} as select * from scored_withdrawn"
        )
        connection.execute(
            f"create or replace table {RESTORED_TABLE} as select * from scored_restored"
        )
        # A table left out means "not computed": the publish keeps the served rows.
        for table, frame in (
            (CONTEXT_TRENDING_TABLE, scored.context_trending),
            (RELATED_TABLE, None if in_version else scored.related),
            (CANDIDATES_TABLE, None if in_version else scored.candidates),
            (TITLES_TABLE, None if in_version else scored.titles),
        ):
            if frame is None:
                connection.execute(f"drop table if exists {table}")
            else:
                connection.register("scored_optional", frame)
                connection.execute(
                    f"create or replace table {table} as select * from scored_optional"
                )
                connection.unregister("scored_optional")
        connection.execute(
            f"create or replace table {SCOPE_FLAG_TABLE} as "
            f"select {scope is None} as everyone, ?::timestamp as through, "
            "?::integer as serving_version, ?::varchar as champion, "
            "?::timestamp as catalog_through",
            [through, serving_version, scored.champion, catalog_through],
        )
    if spool is not None:
        spool.remove()


@dataclass
class StagedLists:
    """What stage_lists left in the warehouse, read back for the publish."""

    lists: pd.DataFrame  # empty when they are in a serving version already (see rows)
    rows: int  # the staged lists' rows
    trending: pd.DataFrame
    context_trending: pd.DataFrame | None  # None: none staged, the served ones stay
    related: pd.DataFrame | None  # None: none staged, the served ones stay
    candidates: pd.DataFrame | None  # None: none staged, the scope's served ones go
    titles: pd.DataFrame | None  # None: none staged, the served ones stay
    scope: list[str] | None  # the users rescored; None: everyone
    through: object  # the newest load time the lists cover
    serving_version: int | None  # the serving version holding the lists; None: publish them
    champion: str | None  # the registered version that ranked them; None: none (popularity)
    withdrawn: list[str]  # items to take out of the served related items and pools
    catalog_through: object = None  # the newest catalog load time the lists cover
    restored: list[str] = field(default_factory=list)  # withdrawn items to give back to pools


def staged_lists(settings: Settings) -> StagedLists:
    """The staged lists and what travels with them, read in one connection."""
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        cursor = connection.execute(f"select * from {SCOPE_FLAG_TABLE}")
        names = [column[0] for column in cursor.description]
        flags = dict(zip(names, cursor.fetchall()[0], strict=True))
        everyone, through = flags["everyone"], flags["through"]
        serving_version, champion = flags["serving_version"], flags["champion"]
        scope = connection.sql(f"select {USER_ID} from {SCOPE_TABLE}").df()[USER_ID].tolist()

        def optional(name: str) -> pd.DataFrame | None:
            schema, table = name.split(".")
            (staged,) = connection.execute(
                "select count(*) from information_schema.tables "
                "where table_schema = ? and table_name = ?",
                [schema, table],
            ).fetchall()[0]
            return connection.sql(f"select * from {name}").df() if staged else None

        # Lists already written into a serving version are switched to, not read again.
        limit = "" if serving_version is None else " limit 0"
        (rows,) = connection.execute(f"select count(*) from {LISTS_TABLE}").fetchall()[0]
        withdrawn = optional(WITHDRAWN_TABLE)  # lists staged before it: none
        restored = optional(RESTORED_TABLE)  # likewise
        return StagedLists(
            lists=connection.sql(f"select * from {LISTS_TABLE}{limit}").df(),
            rows=rows,
            trending=connection.sql(f"select * from {TRENDING_TABLE}").df(),
            context_trending=optional(CONTEXT_TRENDING_TABLE),
            related=optional(RELATED_TABLE),
            candidates=optional(CANDIDATES_TABLE),
            titles=optional(TITLES_TABLE),
            scope=None if everyone else scope,
            through=through,
            serving_version=serving_version,
            champion=champion,
            withdrawn=[] if withdrawn is None else withdrawn[ITEM_ID].tolist(),
            catalog_through=flags.get("catalog_through"),  # staged before it: none
            restored=[] if restored is None else restored[ITEM_ID].tolist(),
        )


@dataclass(frozen=True)
class Changes:
    """What arrived since the last publish, read before the lists are ranked."""

    users: list[str]  # users with new interactions, and those whose lists hold a withdrawn item
    through: object  # the newest interaction load time: the lists cover what loaded by then
    catalog_through: object  # the newest catalog row load time: the catalog they are ranked on
    withdrawn: list[str]  # items made unavailable by catalog rows the last publish had not read
    catalog_changed: bool = False  # catalog rows loaded since the last publish
    # Items the serving store holds as withdrawn that the catalog makes available again.
    restored: list[str] = field(default_factory=list)


def affected_users(settings: Settings) -> Changes:
    """The users with interactions loaded since the last publish and the users whose served
    lists hold an item withdrawn since (available false in a catalog row loaded after the
    catalog the last publish was ranked on): a refresh takes it out of their lists. And the
    items withdrawn by an earlier refresh that a catalog row loaded since makes available
    again: the publish gives them back to the candidate pools."""
    changes = _changes_since_publish(settings)
    if not (changes.withdrawn or changes.catalog_changed):
        return changes
    store = ServingStore(settings.serving_url)
    try:
        listing = store.users_listing(changes.withdrawn) if changes.withdrawn else []
        recorded = store.withdrawn_items() if changes.catalog_changed else []
    finally:
        store.dispose()
    return replace(
        changes,
        users=sorted(set(changes.users) | set(listing)),
        restored=_available(settings, recorded) if recorded else [],
    )


def _available(settings: Settings, items: list[str]) -> list[str]:
    """Those of ``items`` the catalog (marts.items) holds as available, sorted."""
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        connection.register("asked", pd.DataFrame({ITEM_ID: pd.Series(items, dtype=str)}))
        return [
            item
            for (item,) in connection.execute(
                "select item_id from marts.items where available "
                "and item_id in (select item_id from asked) order by item_id"
            ).fetchall()
        ]


def _changes_since_publish(settings: Settings) -> Changes:
    with open_warehouse(settings.warehouse_path) as connection:
        events_mark, catalog_mark = _watermarks(connection)
        users = connection.execute(
            "select distinct user_id from marts.interactions "
            "where ? is null or loaded_at > ? order by user_id",
            [events_mark, events_mark],
        ).df()
        (newest,) = connection.execute("select max(loaded_at) from marts.interactions").fetchall()[
            0
        ]
        (catalog_newest,) = connection.execute("select max(loaded_at) from raw.items").fetchall()[0]
        # A watermark kept before the catalog's: the events' (items loaded with the events a
        # publish covered, and unavailable from the start, come out as withdrawn once).
        since = catalog_mark if catalog_mark is not None else events_mark
        withdrawn = connection.execute(
            "select item_id from marts.items where not available and item_id in "
            "(select item_id from raw.items where ? is not null and loaded_at > ?) "
            "order by item_id",
            [since, since],
        ).fetchall()
    changed = catalog_newest is not None and (since is None or catalog_newest > since)
    return Changes(
        users[USER_ID].tolist(),
        newest,
        catalog_newest,
        [item for (item,) in withdrawn],
        changed,
    )


def _watermarks(connection: duckdb.DuckDBPyConnection) -> tuple[object, object]:
    """(the newest interaction load time, the newest catalog load time) the last publish
    covered; (None, None) before the first. The catalog's was added later: None there."""
    _watermark_table(connection)
    return connection.execute(
        f"select max(published_through), max(catalog_through) from {WATERMARK_TABLE}"
    ).fetchall()[0]


def _watermark_table(connection: duckdb.DuckDBPyConnection) -> None:
    """Create the watermark table, or give one made before the catalog's its column."""
    connection.execute("create schema if not exists ml")
    connection.execute(
        f"create table if not exists {WATERMARK_TABLE} (published_through timestamp)"
    )
    connection.execute(
        f"alter table {WATERMARK_TABLE} add column if not exists catalog_through timestamp"
    )


def _advance_watermark(settings: Settings, through: object, catalog_through: object) -> None:
    with open_warehouse(settings.warehouse_path) as connection:
        _watermark_table(connection)
        connection.execute(f"delete from {WATERMARK_TABLE}")
        connection.execute(
            f"insert into {WATERMARK_TABLE} (published_through, catalog_through) values (?, ?)",
            [through, catalog_through],
        )


def score_everyone(settings: Settings, compute: ComputeResource) -> tuple[ScoredLists, int]:
    """(every user's lists, the new serving version they were written into as the shards
    arrived): served once the publish switches to it, dropped again if the scoring fails."""
    store = ServingStore(settings.serving_url, settings.publish_chunk_rows)
    try:
        with store.begin_version(related=True, titles=True) as version:
            return score_users(settings, None, compute, into=version), version.number
    finally:
        store.dispose()


class ListsConfig(Config):
    """`everyone` for a full rescore; `affected` for users with behaviour since the last publish."""

    scope: str = "everyone"


def lists_preview(head: pd.DataFrame, settings: Settings) -> str:
    """A markdown table of a few users' lists (ScoredLists.lists_head), with titles."""
    preview = head.copy()
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        connection.register("previewed", preview[[ITEM_ID]].drop_duplicates())
        titles = connection.sql(
            "select item_id, title from marts.items "
            "where item_id in (select item_id from previewed)"
        ).df()
    preview["title"] = preview["item_id"].map(titles.set_index("item_id")["title"]).fillna("")
    return preview[[USER_ID, "rank", "item_id", "title", "score", "reason"]].to_markdown(
        index=False, floatfmt=".4f"
    )


@asset(
    group_name=SERVING_GROUP,
    pool="warehouse",
    deps=[
        *(_mart(name) for name in ("interactions", "item_covisitation", "items", "users")),
        item_embeddings,
        recommender_champion,
    ],
)
def recommendation_lists(
    context: AssetExecutionContext,
    config: ListsConfig,
    compute: ComputeResource,
    settings: ResourceParam[Settings],
    # Started with a refresh run, so that they have read the serving state by the time it
    # ranks; the scoring finds them as this process's warm pool (orchestration/resources.py).
    ranking_helpers: ResourceParam[WarmPool | None],
) -> MaterializeResult:
    """Top-K lists from the champion model (everyone, or the users a refresh touched), checked
    before they are published."""
    if config.scope not in ("everyone", "affected"):
        raise ValueError(f"scope must be 'everyone' or 'affected', not {config.scope!r}")
    if config.scope == "everyone":
        # Every list and pool is ranked anew on today's catalog: no need to ask the serving
        # store who lists a withdrawn item or which withdrawn items are back.
        changes = _changes_since_publish(settings)
    else:
        changes = affected_users(settings)
    scope = None if config.scope == "everyone" else changes.users
    if scope is None:
        scored, serving_version = score_everyone(settings, compute)
    else:
        scored, serving_version = score_users(settings, scope, compute), None
    preview = lists_preview(scored.lists_head(PREVIEW_USERS), settings)  # before the spool goes
    stage_lists(
        settings,
        scored,
        scope,
        changes.through,
        serving_version,
        changes.withdrawn,
        changes.catalog_through,
        changes.restored,
    )
    rescored = "every user" if scope is None else f"{len(scope)} affected user(s)"
    context.log.info(f"ranked {rescored} with {scored.model_version}")
    return MaterializeResult(
        metadata={
            "scope": config.scope,
            "users_rescored": len(scope) if scope is not None else scored.list_users,
            "users": scored.list_users,
            "rows": scored.list_rows,
            "users_on_trending_fallback": scored.fallback_users,
            "context_trending_lists": 0
            if scored.context_trending is None
            else int(scored.context_trending[CONTEXT_VALUE].nunique()),
            "items_with_related_items": "kept"
            if scored.related is None
            else int(scored.related[ITEM_ID].nunique()),
            "model_version": scored.model_version,
            "serving_version": "none (a refresh)" if serving_version is None else serving_version,
            "preview": MetadataValue.md(preview),
        }
    )


def publish_staged(settings: Settings) -> dict[str, object]:
    """Publish the staged lists (every user's, or the scope's), the trending lists and, after a
    full rescore, the related items at once: by switching to the serving version the scoring
    wrote them into, or by writing them."""
    staged = staged_lists(settings)
    store = ServingStore(settings.serving_url, settings.publish_chunk_rows)
    try:
        if staged.serving_version is None:
            store.publish(
                staged.lists,
                users=staged.scope,
                trending=staged.trending,
                context_trending=staged.context_trending,
                related=staged.related,
                candidates=staged.candidates,
                titles=staged.titles,
                # Recent events loaded by then are in the new lists: request time drops them.
                events_loaded_through=staged.through,
                withdrawn=staged.withdrawn,
                restored=staged.restored,
            )
            related_replaced = staged.related is not None
        else:
            version = store.resume_version(staged.serving_version)
            version.commit(staged.trending, staged.context_trending, staged.through)
            related_replaced = version.replaces_related
        summary = store.summary()
    finally:
        store.dispose()
    _advance_watermark(settings, staged.through, staged.catalog_through)
    if staged.scope is None:  # every list now comes from this champion (the sensor reads it)
        remember_served_champion(settings, staged.champion)
    return {
        "users_replaced": len(staged.scope) if staged.scope is not None else "all",
        "related_items_replaced": related_replaced,
        "rows_published": staged.rows,
        "users": int(summary["users"]),
        "serving_store": store.engine.url.render_as_string(hide_password=True),
        "generated_at": str(summary["generated_at"]),
    }


@asset(group_name=SERVING_GROUP, deps=[recommendation_lists])
def published_recommendations(
    context: AssetExecutionContext, settings: ResourceParam[Settings]
) -> MaterializeResult:
    """The lists in the serving store: a full scoring's version switched to, or a refresh's users
    replaced, in one transaction (readers never see half)."""
    figures = publish_staged(settings)
    context.log.info(f"published {figures['rows_published']} rows to the serving store")
    return MaterializeResult(metadata=figures)
