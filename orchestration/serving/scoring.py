"""Score users for publishing: the MLflow champion when there is one, the first ranking otherwise.

Used by the full build (every user) and the refresh (only the users a batch touched), so both
paths rank with the same model, rules and reasons.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import pandas as pd

from ml.constants import (
    CONTEXT_KEY,
    DEFAULT_TRENDING_HALF_LIFE_DAYS,
    GENERATED_AT,
    ITEM_ID,
    MODEL_VERSION,
    NON_CONSUMING_EVENT_TYPES,
    USER_ID,
)
from ml.ranking import trending_lists
from ml.recommend import FIRST_RANKING_VERSION, UserBehaviour, rank_users, unavailable_items
from ml.rules import RankingRules, context_trending, context_trending_lists
from orchestration.features.embedding_store import load_vectors
from orchestration.settings import Settings
from orchestration.warehouse.guard import open_warehouse

logger = logging.getLogger("freshrank.scoring")


@dataclass
class ScoredLists:
    """Lists for some users, the trending list for everyone else, and how they were made."""

    lists: pd.DataFrame  # user_id, rank, item_id, score, reason, model_version, generated_at
    trending: pd.DataFrame  # rank, item_id, score, reason, model_version, generated_at
    model_version: str
    fallback_users: int
    # context_key, context_value, then trending's columns; None: not computed (served ones stay)
    context_trending: pd.DataFrame | None = None


def _in_users(column: str, user_ids: list[str] | None) -> str:
    if user_ids is None:
        return "true"
    return f"{column} in (select user_id from scoring_users)"


def read_scoring_inputs(
    connection: duckdb.DuckDBPyConnection, user_ids: list[str] | None = None
) -> dict[str, pd.DataFrame]:
    """The marts ranking needs, restricted to ``user_ids`` where they are per user."""
    if user_ids is not None:
        connection.register(
            "scoring_users", pd.DataFrame({USER_ID: pd.Series(user_ids, dtype=str)})
        )
    consuming = ", ".join(f"'{event_type}'" for event_type in NON_CONSUMING_EVENT_TYPES)
    inputs = {
        "events": connection.sql(
            "select user_id, item_id, event_type, occurred_at, value, context "
            f"from marts.interactions where {_in_users('user_id', user_ids)}"
        ).df(),
        "consumed": connection.sql(
            "select distinct user_id, item_id from marts.interactions "
            f"where event_type not in ({consuming}) and {_in_users('user_id', user_ids)}"
        ).df(),
        "histories": connection.sql(
            "select user_id, item_id, weight, occurred_at from marts.user_recent_history "
            f"where {_in_users('user_id', user_ids)}"
        ).df(),
        "trending": connection.sql(
            "select item_id, decayed_score from marts.item_trending order by trending_rank"
        ).df(),
        "items": connection.sql(
            "select item_id, title, available, interaction_count from marts.items"
        ).df(),
        "users": connection.sql(
            f"select user_id from marts.users where {_in_users('user_id', user_ids)} "
            "order by user_id"
        ).df(),
    }
    return inputs


def read_trending_events(connection: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every user's events that can make an item trend (positive weight), with time and context.

    Events of weight <= 0 add nothing to trending; leaving them out can only move the newest
    event time that decay runs from, which scales every score alike and so changes no list.
    """
    return connection.sql(
        "select item_id, event_type, occurred_at, value, context "
        "from marts.interactions where weight > 0"
    ).df()


def build_context_trending(
    settings: Settings,
    events: pd.DataFrame,
    items: pd.DataFrame,
    trending: pd.Series,
    unavailable: list[str],
) -> pd.DataFrame:
    """Top-k trending per value of settings.context_key; the global trending order fills in.

    Decays with the same half-life as the item_trending mart (its dbt var defaults to it).
    """
    item_ids = pd.Index(items[ITEM_ID]).sort_values()
    by_context = context_trending(
        events,
        item_ids,
        settings.context_key,
        DEFAULT_TRENDING_HALF_LIFE_DAYS,
        event_weights=settings.event_weights,
    )
    lists = context_trending_lists(
        by_context,
        item_ids,
        settings.top_k,
        global_trending=trending.reindex(item_ids).fillna(0.0).to_numpy(dtype=float),
        exclude=unavailable,
    )
    lists.insert(0, CONTEXT_KEY, settings.context_key)
    return lists


def _champion(settings: Settings, catalog: pd.Series, vectors: pd.DataFrame):
    """(model over today's catalog, its trending blend, version label), or None."""
    from ml import tracking

    client = tracking.configure(settings.mlflow_tracking_uri, settings.mlflow_artifact_location)
    version = tracking.alias_version(client, tracking.CHAMPION)
    if version is None:
        return None
    cache = settings.home / "cache" / "models"
    cache.mkdir(parents=True, exist_ok=True)
    model, blend = tracking.load_version(settings.mlflow_tracking_uri, version, cache)
    model = model.with_catalog(catalog, vectors if not vectors.empty else None)
    return model, blend, f"{tracking.REGISTERED_MODEL}/{version}"


def _first_ranking_model(inputs: dict[str, pd.DataFrame], connection_path) -> object:
    from ml.models.baselines import ItemKNNRecommender

    with open_warehouse(connection_path, read_only=True) as connection:
        interactions = connection.sql(
            "select user_id, item_id, weight, occurred_at from marts.interactions where weight > 0"
        ).df()
    return ItemKNNRecommender().fit(interactions, catalog_item_ids=inputs["items"][ITEM_ID])


def score_users(
    settings: Settings,
    user_ids: list[str] | None = None,
    rules: RankingRules | None = None,
) -> ScoredLists:
    """Rank ``user_ids`` (every known user when None) and the trending list."""
    rules = rules or RankingRules(
        mmr_lambda=settings.mmr_lambda, new_item_slots=settings.new_item_slots
    )
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        inputs = read_scoring_inputs(connection, user_ids)
        vectors = load_vectors(connection)
        # Every user's events even for a refresh: trending is the same list for everyone.
        trending_events = read_trending_events(connection)
    items = inputs["items"]
    champion = _champion(settings, items[ITEM_ID], vectors)
    similarity = None
    if champion is not None:
        scorer, blend, version = champion
    else:
        scorer = _first_ranking_model(inputs, settings.warehouse_path)
        blend, version = rules.trending_blend, FIRST_RANKING_VERSION
        similarity = scorer.similarity
    trending = inputs["trending"].set_index(ITEM_ID)["decayed_score"]
    behaviour = UserBehaviour(
        histories=inputs["histories"], consumed=inputs["consumed"], events=inputs["events"]
    )
    users = inputs["users"][USER_ID].astype(str).tolist()
    lists, fallback = rank_users(
        scorer,
        users,
        behaviour,
        trending,
        items,
        settings.top_k,
        trending_blend=blend,
        rules=rules,
        item_vectors=vectors,
        similarity=similarity,
        new_item_ids=frozenset(items.loc[items["interaction_count"] == 0, ITEM_ID]),
    )
    generated_at = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    lists[MODEL_VERSION] = version
    lists[GENERATED_AT] = generated_at
    unavailable = unavailable_items(items).tolist()
    popular = trending_lists(trending, ["*"], settings.top_k, exclude=unavailable)
    popular = popular.drop(columns=[USER_ID])
    popular[MODEL_VERSION] = "trending"
    popular[GENERATED_AT] = generated_at
    by_context = build_context_trending(settings, trending_events, items, trending, unavailable)
    by_context[MODEL_VERSION] = "trending"
    by_context[GENERATED_AT] = generated_at
    logger.info("scored %d users with %s (%d on trending)", len(users), version, fallback)
    return ScoredLists(
        lists=lists,
        trending=popular,
        model_version=version,
        fallback_users=fallback,
        context_trending=by_context,
    )
