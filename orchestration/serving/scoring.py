"""Score users for publishing with the champion's ranking pipeline (popularity before one exists).

Used by the full build (every user) and the refresh (only the users a batch touched). Both call
`RankingPipeline.recommend`, the same code the backtests evaluate, on the newest marts. The full
build also computes every item's related items (`RankingPipeline.related_items`); a refresh
leaves the published ones in place. A full scoring can write each shard's lists into a new
serving version as the shard arrives, for the publish to switch to once the lists pass their
checks; the lists' copy for those checks goes to Parquet files (a ListSpool) as the shards
arrive, so the scoring process never holds every user's lists at once.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pandas as pd

from ml.constants import (
    CONTEXT_KEY,
    DEFAULT_TRENDING_HALF_LIFE_DAYS,
    GENERATED_AT,
    ITEM_ID,
    MODEL_VERSION,
    SCORE,
    USER_ID,
)
from ml.pipeline.backtest import FALLBACK_PIPELINE
from ml.pipeline.parallel import WarmPool, warm_pool
from ml.pipeline.pipeline import RankingPipeline
from ml.pipeline.snapshot import Behaviour, Snapshot
from ml.rules import context_trending, context_trending_lists
from orchestration.compute import LOCAL, ComputeResource
from orchestration.model.assets import pipeline_config
from orchestration.serving.pools import rank_for_serving
from orchestration.serving.state import (
    ServingState,
    load_state,
    remember_champion,
    remembered_champion,
    save_state,
    serving_pipeline,
    state_path,
)
from orchestration.serving.store import ServingVersion
from orchestration.settings import Settings
from orchestration.warehouse.guard import open_warehouse
from orchestration.warehouse.reads import (
    catalog_stamp,
    read_behaviour,
    read_snapshot,
    read_user_behaviour,
)

logger = logging.getLogger("freshrank.scoring")


@dataclass
class ListSpool:
    """A full scoring's lists, shard by shard, in Parquet files under ``directory``.

    At a million users the lists are ten million rows of text (3 to 4 GB in pandas); kept in
    the scoring process until every shard is in, they were most of its growth. The shards go
    to files as they arrive and the staging reads the files; this process keeps counts.
    """

    directory: Path
    files: list[Path] = field(default_factory=list)
    rows: int = 0
    users: int = 0

    @classmethod
    def begin(cls, directory: Path) -> ListSpool:
        """An empty spool in ``directory`` (what an earlier, failed scoring left there goes)."""
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        return cls(directory)

    def add(self, lists: pd.DataFrame) -> None:
        """One shard's lists (its users are no other shard's)."""
        path = self.directory / f"shard-{len(self.files):06d}.parquet"
        lists.to_parquet(path, index=False)
        self.files.append(path)
        self.rows += len(lists)
        self.users += int(lists[USER_ID].nunique())

    def first_shard(self) -> pd.DataFrame | None:
        """The first shard's lists (None: no shard)."""
        return pd.read_parquet(self.files[0]) if self.files else None

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class ScoredLists:
    """Lists for some users, the trending list for everyone else, and how they were made."""

    lists: pd.DataFrame  # user_id, rank, item_id, score, reason, model_version, generated_at
    trending: pd.DataFrame  # rank, item_id, score, reason, model_version, generated_at
    model_version: str
    fallback_users: int
    # context_key, context_value, then trending's columns; None: not computed (served ones stay)
    context_trending: pd.DataFrame | None = None
    # item_id, rank, related_item_id, score, reason, model_version, generated_at; None: not
    # computed (a refresh of some users), the served ones stay
    related: pd.DataFrame | None = None
    # each listed user's best-scored candidates, packed a row a user (user_id, pool,
    # model_version, generated_at; orchestration.serving.pools): request-time personalisation
    # re-ranks them; None: none
    candidates: pd.DataFrame | None = None
    # item_id, title of the catalog, for reasons that name an item; None: not computed (as
    # related)
    titles: pd.DataFrame | None = None
    # where every user's lists are when a full scoring spooled them as its shards arrived
    # (`lists` is then empty); None: `lists` holds them
    spool: ListSpool | None = None
    # the registered version that ranked (None: no champion yet, popularity)
    champion: str | None = None

    @property
    def list_rows(self) -> int:
        return self.spool.rows if self.spool is not None else len(self.lists)

    @property
    def list_users(self) -> int:
        return self.spool.users if self.spool is not None else int(self.lists[USER_ID].nunique())

    def lists_head(self, users: int) -> pd.DataFrame:
        """The first ``users`` users' lists, for a preview."""
        first = self.spool.first_shard() if self.spool is not None else None
        lists = self.lists if first is None else first
        return lists[lists[USER_ID].isin(lists[USER_ID].drop_duplicates().head(users))]


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


def champion_version(settings: Settings) -> str | None:
    """The registered version that holds the champion alias (None: nothing promoted yet).

    Asking MLflow costs a refresh over a second (its import and a registry query), so the
    answer is remembered beside the serving state with the SQLite registry's stamp
    (`registry_stamp`); while the registry has committed nothing since, the answer stands.
    The stamp is taken before asking, so a commit that lands meanwhile makes the next call ask
    again. A registry that is not a SQLite file is asked every time.
    """
    from ml.tracking import registry_stamp

    stamp = registry_stamp(settings.mlflow_tracking_uri)
    if stamp is not None:
        known, champion = remembered_champion(settings, stamp)
        if known:
            return champion
    from ml import tracking

    client = tracking.configure(settings.mlflow_tracking_uri, settings.mlflow_artifact_location)
    champion = tracking.alias_version(client, tracking.CHAMPION)
    if stamp is not None:
        remember_champion(settings, stamp, champion)
    return champion


def champion_pipeline(
    settings: Settings, snapshot: Snapshot, version: str | None
) -> tuple[RankingPipeline, str]:
    """(the champion ``version``'s pipeline refreshed on the snapshot, its version label).

    Without a champion (nothing trained yet) popularity serves: the pipeline every build falls
    back to when there is too little behaviour to evaluate anything else.
    """
    if version is None:
        config = pipeline_config(settings)
        fallback = RankingPipeline(config, FALLBACK_PIPELINE).fit_sources(snapshot)
        return fallback, f"{FALLBACK_PIPELINE} (no champion yet)"
    return registered_pipeline(settings, version, snapshot)


def registered_pipeline(
    settings: Settings, version: str, snapshot: Snapshot
) -> tuple[RankingPipeline, str]:
    """(a registered version's pipeline refreshed on the snapshot, its version label)."""
    from ml import tracking

    cache = settings.home / "cache" / "models"
    cache.mkdir(parents=True, exist_ok=True)
    pipeline = tracking.load_version(settings.mlflow_tracking_uri, version, cache)
    label = f"{tracking.REGISTERED_MODEL}/{version}:{pipeline.name}"
    return pipeline.refreshed(snapshot), label


def warm_up_ranking(settings: Settings, pool: WarmPool) -> bool:
    """Have ``pool``'s workers load the current serving state's pipeline now, so that a warm
    refresher's first batch finds them ready; False when there is no current state (the
    workers then start with the first refresh that has one)."""
    if not settings.warehouse_path.exists():
        return False
    champion = champion_version(settings)
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        state = load_state(settings, champion, connection)
    # Workers that do not start leave the first refresh to this process (WarmPool.load).
    return state is not None and pool.load(state.pipeline)


# A state larger than this is not read a second time by a helper ahead of a cold refresh: its
# copy would cost as much memory again, and reading it longer than the refresh's own work.
HELPER_STATE_MAX_BYTES = 1 << 30


@contextmanager
def ranking_helpers(settings: Settings) -> Iterator[WarmPool | None]:
    """For a refresh in a new process (`freshrank refresh`, which opens this before its run
    so the helpers start seconds sooner, and a run the daemon launches, whose compute resource
    opens it when the run starts): while the block runs, worker processes
    (one per core beside this one) read the saved serving state, so that by the time the
    refresh ranks (after loading files and dbt's models, seconds it spends on one core) they
    rank shares of its users beside this process. Ranking never waits for them: a refresh that
    reaches its users first, or ranks with another pipeline, ranks here. None: no helpers
    (one core, no state yet, or a state too large to read twice)."""
    path = state_path(settings)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = None
    if settings.rank_processes < 2 or size is None or size > HELPER_STATE_MAX_BYTES:
        yield None
        return
    with warm_pool(settings.rank_processes - 1, settings.compiled_rankers, rank_here=True) as pool:
        pool.preload(partial(serving_pipeline, str(path)))
        yield pool


def score_users(
    settings: Settings,
    user_ids: list[str] | None = None,
    compute: ComputeResource | None = None,
    into: ServingVersion | None = None,
) -> ScoredLists:
    """Rank ``user_ids`` (every known user when None) and the cold-start lists.

    Scoring everyone fits the champion's pipeline on the newest marts and saves it as the
    serving state; scoring some users reuses that state while it is current (see
    orchestration.serving.state), so a refresh costs what its users cost. Scoring on a fresh
    state ranks over user shards on Ray when ``compute`` says so (a refresh's few users stay
    in this process: Ray's start-up would cost more than they do). Scoring everyone ``into`` a
    new serving version (begun with related items and titles) writes each shard's lists and
    candidates into it as the shard arrives, then the related items and titles.
    """
    if into is not None and user_ids is not None:
        raise ValueError("only scoring every user writes a new serving version")
    champion = champion_version(settings)
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        if user_ids is not None:
            state = load_state(settings, champion, connection)
            if state is not None:
                behaviour = read_user_behaviour(connection, user_ids)
                # Context trending and related items stay as the last full scoring published;
                # a refresh's few users stay in this process.
                local = ComputeResource(engine=LOCAL)
                return _ranked(
                    settings,
                    state.pipeline,
                    state.label,
                    behaviour,
                    _now(),
                    local,
                    cold_start=state.cold_start,
                    stamp=state.stamp,
                )
        snapshot = read_snapshot(connection)
        catalog = catalog_stamp(connection)
    pipeline, version = champion_pipeline(settings, snapshot, champion)
    pipeline.compile_ranker(settings.compiled_rankers)
    cold_start = pipeline.cold_start_list()
    save_state(settings, ServingState(champion, version, catalog, pipeline, cold_start))
    generated_at = _now()
    behaviour = read_behaviour(snapshot, user_ids)
    scored = _ranked(
        settings, pipeline, version, behaviour, generated_at, compute, into, cold_start
    )
    scored.champion = champion
    by_context = build_context_trending(
        settings,
        snapshot.positive,
        snapshot.items,
        scored.trending.set_index(ITEM_ID)[SCORE],
        sorted(snapshot.unavailable),
    )
    scored.context_trending = _stamped(by_context, "trending", generated_at)
    if user_ids is None:
        scored.related = _stamped(pipeline.related_items(settings.top_k), version, generated_at)
        scored.titles = snapshot.titles.dropna().astype(str).rename_axis(ITEM_ID).reset_index()
        if into is not None:
            into.write_related(scored.related)
            into.write_titles(scored.titles)
    return scored


def _ranked(
    settings: Settings,
    pipeline: RankingPipeline,
    version: str,
    behaviour: Behaviour,
    generated_at: datetime,
    compute: ComputeResource | None = None,
    into: ServingVersion | None = None,
    cold_start: pd.DataFrame | None = None,
    stamp: str | None = None,
) -> ScoredLists:
    """The behaviour's users' lists and candidates, and the cold-start list, from one pipeline
    (over user shards on Ray when ``compute`` says so; each shard written ``into`` a serving
    version as it arrives). ``cold_start``: the pipeline's cold_start_list(), when known;
    ``stamp``: the saved serving state it was read from, if it was (see ComputeResource.rank)."""
    pipeline.compile_ranker(settings.compiled_rankers)
    spool = None if into is None else ListSpool.begin(spool_directory(settings, into.number))
    ranked, candidates = (compute or ComputeResource()).rank(
        settings,
        pipeline,
        behaviour,
        partial(rank_for_serving, candidates=settings.serving_candidates),
        on_shard=None
        if into is None
        else partial(_write_shard, into, spool, version, generated_at),
        stamp=stamp,
    )
    lists = _stamped(ranked, version, generated_at)
    if cold_start is None:
        cold_start = pipeline.cold_start_list()
    popular = _stamped(cold_start.drop(columns=[USER_ID]), version, generated_at)
    logger.info("scored %d users with %s", len(behaviour.users), version)
    listed = spool.users if spool is not None else int(lists[USER_ID].nunique())
    return ScoredLists(
        lists=lists,
        trending=popular,
        model_version=version,
        fallback_users=len(behaviour.users) - listed,
        candidates=_stamped(candidates, version, generated_at),
        spool=spool,
    )


def spool_directory(settings: Settings, serving_version: int) -> Path:
    """Where a full scoring into ``serving_version`` spools its lists."""
    return settings.home / "cache" / "staging" / f"lists-{serving_version}"


def _write_shard(
    into: ServingVersion,
    spool: ListSpool,
    version: str,
    generated_at: datetime,
    shard: tuple[pd.DataFrame, pd.DataFrame],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write one shard's (lists, candidates) into a serving version, stamped as served, and
    its lists to the spool (the checks read them from the staging); keep neither: at a million
    users the lists alone are gigabytes (the packed pools, 50 candidates a user, more). What is
    kept is an empty copy: an empty slice would be a view that holds the shard's arrays, and
    every string in them, until the scoring ends."""
    lists, candidates = shard
    stamped = _stamped(lists, version, generated_at)
    into.write(stamped, _stamped(candidates, version, generated_at))
    spool.add(stamped)
    return lists.iloc[:0].copy(), candidates.iloc[:0].copy()


def _now() -> datetime:
    """A publish time as the store keeps it: naive UTC, whole seconds."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def _stamped(frame: pd.DataFrame, version: str, generated_at: datetime) -> pd.DataFrame:
    """The frame with the model version and publish time every served row carries."""
    return frame.assign(**{MODEL_VERSION: version, GENERATED_AT: generated_at})
