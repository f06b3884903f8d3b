"""Each variant's lists for its users, made with the publish that made the champion's.

Users are split by the experiment's assignment; a variant serving the version that scored the
champion's staged lists takes those rows, any other variant ranks its users with its own
registered version (the same `RankingPipeline.recommend`, refreshed on the newest marts; a
refresh reuses the variant's serving state as the champion's refresh does). The new lists meet
the publishing rules before they reach the serving store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd

from ml.constants import GENERATED_AT, MODEL_VERSION, USER_ID
from ml.experiments.assignment import Variant
from ml.pipeline.snapshot import Behaviour
from orchestration.experiments.store import STARTING, VARIANT, ExperimentRecord, ExperimentStore
from orchestration.serving.assets import StagedLists, staged_lists
from orchestration.serving.scoring import registered_pipeline
from orchestration.serving.state import ServingState, load_state, save_state
from orchestration.serving.store import ServingStore
from orchestration.serving.validation import ListProblems, warehouse_list_problems
from orchestration.settings import Settings
from orchestration.warehouse.guard import open_warehouse
from orchestration.warehouse.reads import (
    catalog_stamp,
    read_behaviour,
    read_snapshot,
    read_user_behaviour,
)

logger = logging.getLogger("freshrank.experiments")


@dataclass
class VariantLists:
    """The lists to publish for an experiment, and for whom."""

    lists: pd.DataFrame  # serving columns plus variant
    scope: list[str] | None  # the users whose lists are replaced; None: everyone
    rescored: dict[str, str]  # variant -> "reused" or the version label it was ranked with


def users_by_variant(record: ExperimentRecord, users: list[str]) -> dict[str, list[str]]:
    """The enrolled users of each variant (every variant present, maybe empty)."""
    groups: dict[str, list[str]] = {variant.name: [] for variant in record.design.variants}
    for user in users:
        name = record.design.assign(user)
        if name is not None:
            groups[name].append(user)
    return groups


def scored_by(lists: pd.DataFrame, variant: Variant) -> bool:
    """Whether every row was ranked by the variant's version (labels read "<model>/<v>:...")."""
    if lists.empty:
        return False
    prefix = f"/{variant.version}:"
    return bool(lists[MODEL_VERSION].astype(str).str.contains(prefix, regex=False).all())


def state_name(experiment: str, variant: str) -> str:
    """The name of one variant's serving state (orchestration.serving.state)."""
    return f"experiment-{experiment}-{variant}"


def variant_lists(
    settings: Settings, record: ExperimentRecord, staged: StagedLists
) -> VariantLists:
    """Every variant's lists for its users in the staged publish's scope.

    A starting experiment has no lists yet, so it is ranked for everyone whatever the scope. A
    variant ranked for everyone keeps its fitted pipeline as a serving state; a refresh ranks
    its touched users with that state while its catalog is current, as the champion's refresh
    does, and refits otherwise.
    """
    scope = None if record.status == STARTING else staged.scope
    variants = record.design.variants
    reusable = {
        variant.name
        for variant in variants
        if scope == staged.scope and scored_by(staged.lists, variant)
    }
    to_rank = [variant for variant in variants if variant.name not in reusable]
    states: dict[str, ServingState] = {}
    behaviours: dict[str, Behaviour] = {}
    snapshot, catalog = None, ""
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        if scope is not None:
            for variant in to_rank:
                name = state_name(record.name, variant.name)
                state = load_state(settings, variant.version, connection, name)
                if state is not None:
                    states[variant.name] = state
        if len(states) < len(to_rank):
            snapshot = read_snapshot(connection)
            catalog = catalog_stamp(connection)
        if scope is not None:
            users = list(scope)
        elif snapshot is not None:
            users = sorted(snapshot.interactions[USER_ID].unique())
        else:
            users = sorted(staged.lists[USER_ID].unique())
        groups = users_by_variant(record, [str(user) for user in users])
        for name in states:
            if groups[name]:
                behaviours[name] = read_user_behaviour(connection, groups[name])
    generated_at = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    parts, rescored = [], {}
    for variant in variants:
        members = groups[variant.name]
        if variant.name in reusable:
            part = staged.lists[staged.lists[USER_ID].isin(members)]
            rescored[variant.name] = "reused"
        elif not members:
            part, rescored[variant.name] = staged.lists.iloc[:0], "no users"
        else:
            if variant.name in states:
                state = states[variant.name]
                pipeline, label = state.pipeline, state.label
                behaviour = behaviours[variant.name]
                rescored[variant.name] = f"{label} (serving state)"
            else:
                pipeline, label = registered_pipeline(settings, variant.version, snapshot)
                state = ServingState(variant.version, label, catalog, pipeline)
                save_state(settings, state, state_name(record.name, variant.name))
                behaviour = read_behaviour(snapshot, members)
                rescored[variant.name] = label
            part = pipeline.recommend(behaviour).assign(
                **{MODEL_VERSION: label, GENERATED_AT: generated_at}
            )
        parts.append(part.assign(**{VARIANT: variant.name}))
        logger.info("%s: %d users (%s)", variant.name, len(members), rescored[variant.name])
    return VariantLists(lists=pd.concat(parts, ignore_index=True), scope=scope, rescored=rescored)


def list_problems(settings: Settings, lists: pd.DataFrame) -> ListProblems:
    """The publishing rules' verdict on the lists (what check_recommendation_lists applies)."""
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        connection.register("variant_lists", lists)
        return warehouse_list_problems(connection, "variant_lists", settings.top_k)


@dataclass
class PublishedVariants:
    """What publish_experiment_lists wrote, for the Dagster UI and the CLI."""

    experiment: str
    rows: int
    scope: str
    variants: pd.DataFrame  # variant, version, share, users, lists (reused or the version label)


class ExperimentListsRejected(RuntimeError):
    """The variants' lists broke the publishing rules; the served ones stay."""


def publish_experiment_lists(settings: Settings) -> PublishedVariants | None:
    """Make, check and publish the active experiment's lists; None when no experiment is active.

    Made from the newest staged publish (the champion's lists and their scope).
    """
    store = ServingStore(settings.serving_url)
    try:
        experiments = ExperimentStore(store.engine)
        record = experiments.active()
        if record is None:
            return None
        made = variant_lists(settings, record, staged_lists(settings))
        problems = list_problems(settings, made.lists)
        if not problems.ok:
            raise ExperimentListsRejected(
                f"experiment {record.name}: the variants' lists break the publishing rules "
                f"({problems.metadata()}); the served ones stay"
            )
        rows = experiments.publish_lists(record.name, made.lists, made.scope)
    finally:
        store.dispose()
    users = made.lists.groupby(VARIANT)[USER_ID].nunique()
    variants = record.design.variants
    return PublishedVariants(
        experiment=record.name,
        rows=rows,
        scope="everyone" if made.scope is None else f"{len(made.scope)} user(s)",
        variants=pd.DataFrame(
            {
                "variant": [variant.name for variant in variants],
                "version": [variant.version for variant in variants],
                "share": [variant.share for variant in variants],
                "users": [int(users.get(variant.name, 0)) for variant in variants],
                "lists": [made.rescored[variant.name] for variant in variants],
            }
        ),
    )
