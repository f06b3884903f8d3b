"""The serving state: reused only while it serves the same champion on the same catalog, and a
refresh that reuses it ranks exactly as a refit would."""

from __future__ import annotations

import time
from dataclasses import replace

import duckdb
import pandas as pd
import pytest

from ml.pipeline.backtest import FALLBACK_PIPELINE
from ml.pipeline.pipeline import RankingPipeline
from orchestration.serving import scoring
from orchestration.serving.state import (
    ServingState,
    load_state,
    read_state,
    save_state,
    serving_pipeline,
    state_path,
)
from orchestration.settings import Settings
from orchestration.warehouse.reads import catalog_stamp, read_snapshot, read_user_behaviour

EVENTS = [
    ("u1", "a", "view", "2026-03-01 10:00"),
    ("u1", "b", "click", "2026-03-01 10:05"),
    ("u2", "a", "view", "2026-03-01 11:00"),
    ("u2", "c", "purchase", "2026-03-01 11:10"),
    ("u3", "b", "view", "2026-03-02 09:00"),
    ("u3", "c", "view", "2026-03-02 09:01"),
    ("u4", "a", "view", "2026-03-02 12:00"),
]
WEIGHTS = {"view": 1.0, "click": 2.0, "purchase": 5.0}


def write_warehouse(settings: Settings, available: dict[str, bool]) -> None:
    events = pd.DataFrame(EVENTS, columns=["user_id", "item_id", "event_type", "occurred_at"])
    events["occurred_at"] = pd.to_datetime(events["occurred_at"])
    events["weight"] = events["event_type"].map(WEIGHTS)
    events["event_id"] = range(len(events))
    items = pd.DataFrame(
        {
            "item_id": list(available),
            "title": [name.upper() for name in available],
            "available": list(available.values()),
            "created_at": pd.Timestamp("2026-01-01"),
        }
    )
    with duckdb.connect(str(settings.warehouse_path)) as connection:
        connection.execute("create schema if not exists marts")
        connection.register("event_rows", events)
        connection.register("item_rows", items)
        connection.execute(
            "create or replace table marts.interactions as select user_id, item_id, event_type, "
            "weight, occurred_at, cast(null as double) as value, cast(null as varchar) as context, "
            "event_id from event_rows"
        )
        connection.execute("create or replace table marts.items as select * from item_rows")


def fitted_state(settings: Settings, champion: str | None) -> ServingState:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as connection:
        snapshot = read_snapshot(connection)
        catalog = catalog_stamp(connection)
    pipeline = RankingPipeline(ordering=FALLBACK_PIPELINE).fit_sources(snapshot)
    return ServingState(champion, "popularity", catalog, pipeline)


def load(settings: Settings, champion: str | None) -> ServingState | None:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as connection:
        return load_state(settings, champion, connection)


@pytest.fixture
def warehouse(settings: Settings) -> Settings:
    write_warehouse(settings, {"a": True, "b": True, "c": True, "d": True})
    return settings


def test_a_saved_state_is_reused_for_the_same_champion_and_catalog(warehouse: Settings) -> None:
    save_state(warehouse, fitted_state(warehouse, "3"))
    state = load(warehouse, "3")
    assert state is not None and state.champion == "3" and state.label == "popularity"


def test_another_champion_or_no_state_means_a_refit(warehouse: Settings) -> None:
    assert load(warehouse, "3") is None  # nothing saved yet
    save_state(warehouse, fitted_state(warehouse, "3"))
    assert load(warehouse, "4") is None
    assert load(warehouse, None) is None


@pytest.mark.parametrize(
    "catalog",
    [
        {"a": True, "b": True, "c": True, "d": False},  # an item withdrawn
        {"a": True, "b": True, "c": True, "d": True, "e": True},  # a new item
    ],
)
def test_a_changed_catalog_means_a_refit(warehouse: Settings, catalog: dict) -> None:
    save_state(warehouse, fitted_state(warehouse, "3"))
    write_warehouse(warehouse, catalog)
    assert load(warehouse, "3") is None


def test_new_text_vectors_mean_a_refit(warehouse: Settings) -> None:
    save_state(warehouse, fitted_state(warehouse, "3"))
    with duckdb.connect(str(warehouse.warehouse_path)) as connection:
        connection.execute("create schema if not exists ml")
        connection.execute(
            "create table ml.item_embeddings as select 'a' as item_id, 'h1' as content_hash"
        )
    assert load(warehouse, "3") is None


def test_an_unreadable_state_is_ignored(warehouse: Settings) -> None:
    path = state_path(warehouse)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a pickle")
    assert load(warehouse, "3") is None


def test_a_refresh_from_the_state_ranks_as_a_refit_would(
    warehouse: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scoring everyone saves the state; scoring some users then reuses it with their newest
    events read by user, and gives the lists a full refit gives."""
    # No champion yet: popularity serves (the registry is not what this test is about).
    monkeypatch.setattr(scoring, "champion_version", lambda _settings: None)
    everyone = scoring.score_users(warehouse)
    assert state_path(warehouse).exists()
    refreshed = scoring.score_users(warehouse, ["u1", "u3", "new"])
    columns = ["user_id", "rank", "item_id", "score", "reason"]
    known = refreshed.lists[refreshed.lists["user_id"].isin(["u1", "u3"])][columns]
    expected = everyone.lists[everyone.lists["user_id"].isin(["u1", "u3"])][columns]
    assert set(refreshed.lists["user_id"]) == {"u1", "u3", "new"}
    pd.testing.assert_frame_equal(known.reset_index(drop=True), expected.reset_index(drop=True))
    # The cold-start list is kept with the state, not ranked again by every refresh.
    with duckdb.connect(str(warehouse.warehouse_path), read_only=True) as connection:
        assert load_state(warehouse, None, connection).cold_start is not None
    trending = ["rank", "item_id", "score", "reason"]
    pd.testing.assert_frame_equal(refreshed.trending[trending], everyone.trending[trending])
    state_path(warehouse).unlink()
    refit = scoring.score_users(warehouse, ["u1", "u3", "new"])
    pd.testing.assert_frame_equal(refreshed.lists[columns], refit.lists[columns])


def test_behaviour_is_read_by_user(warehouse: Settings) -> None:
    with duckdb.connect(str(warehouse.warehouse_path), read_only=True) as connection:
        behaviour = read_user_behaviour(connection, ["u2", "nobody"])
    assert sorted(behaviour.events["item_id"]) == ["a", "c"]
    assert list(behaviour.users) == ["nobody", "u2"]


def test_the_champion_is_remembered_until_the_registry_commits(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refresh asks MLflow for the champion only when the SQLite registry has changed."""
    from ml import tracking

    client = tracking.configure(settings.mlflow_tracking_uri, settings.mlflow_artifact_location)
    client.create_registered_model(tracking.REGISTERED_MODEL)
    for _ in range(2):
        client.create_model_version(tracking.REGISTERED_MODEL, source=settings.home.as_uri())
    tracking.promote(client, "1")
    assert scoring.champion_version(settings) == "1"

    asked = []
    configure = tracking.configure
    monkeypatch.setattr(tracking, "configure", lambda *args: asked.append(args) or configure(*args))
    assert scoring.champion_version(settings) == "1"
    assert asked == []  # nothing committed since: remembered

    tracking.promote(client, "2")
    assert scoring.champion_version(settings) == "2"
    assert len(asked) == 1
    (settings.home / "cache" / "serving" / "champion.json").write_text("{torn")
    assert scoring.champion_version(settings) == "2"  # an unreadable memo is asked again
    assert len(asked) == 2


def test_a_full_scoring_into_a_version_spools_its_lists_for_the_staging(
    warehouse: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scoring everyone into a serving version keeps counts, not lists: the lists go to the
    version and to Parquet files, which the staging reads (then removes); the staged table
    holds what scoring in memory gives."""
    from orchestration.serving.assets import LISTS_TABLE, stage_lists, staged_lists
    from orchestration.serving.store import ServingStore

    monkeypatch.setattr(scoring, "champion_version", lambda _settings: None)
    in_memory = scoring.score_users(warehouse)
    store = ServingStore(warehouse.serving_url)
    try:
        with store.begin_version(related=True, titles=True) as version:
            spooled = scoring.score_users(warehouse, into=version)
            number = version.number
    finally:
        store.dispose()
    assert spooled.lists.empty and spooled.spool is not None and spooled.spool.files
    assert spooled.list_rows == len(in_memory.lists) > 0
    assert spooled.list_users == in_memory.lists["user_id"].nunique() == 4
    assert spooled.fallback_users == in_memory.fallback_users
    head = spooled.lists_head(2)
    assert head["user_id"].nunique() == 2
    stage_lists(warehouse, spooled, None, pd.Timestamp("2026-03-03"), number)
    assert not spooled.spool.directory.exists()
    columns = ["user_id", "rank", "item_id", "score", "reason", "model_version"]
    with duckdb.connect(str(warehouse.warehouse_path), read_only=True) as connection:
        staged = connection.sql(f"select * from {LISTS_TABLE}").df()
    order = ["user_id", "rank"]
    pd.testing.assert_frame_equal(
        staged.sort_values(order)[columns].reset_index(drop=True),
        in_memory.lists.sort_values(order)[columns].reset_index(drop=True),
    )
    published = staged_lists(warehouse)
    assert published.rows == len(in_memory.lists) and published.lists.empty  # in the version


def test_a_spool_counts_and_previews_its_shards(tmp_path) -> None:
    spool = scoring.ListSpool.begin(tmp_path / "lists")
    assert spool.first_shard() is None and spool.rows == spool.users == 0
    shard = pd.DataFrame({"user_id": ["u1", "u1", "u2"], "rank": [1, 2, 1], "item_id": list("abc")})
    spool.add(shard)
    spool.add(shard.assign(user_id=["u3", "u3", "u4"]))
    assert (spool.rows, spool.users, len(spool.files)) == (6, 4, 2)
    assert spool.first_shard()["user_id"].tolist() == ["u1", "u1", "u2"]
    # Beginning again in the same place starts empty (a failed scoring's files go).
    again = scoring.ListSpool.begin(tmp_path / "lists")
    assert list(again.directory.iterdir()) == [] and again.rows == 0


def test_a_state_read_is_stamped_with_the_file_it_came_from(warehouse: Settings) -> None:
    """The stamp a refresh's helper reads with the pipeline is the one the refresh's own read
    gets, until a new state is saved."""
    path = save_state(warehouse, fitted_state(warehouse, "3"))
    stamp = load(warehouse, "3").stamp
    assert stamp and read_state(path).stamp == serving_pipeline(str(path))[0] == stamp
    time.sleep(0.01)
    save_state(warehouse, fitted_state(warehouse, "3"))
    assert load(warehouse, "3").stamp != stamp


def test_no_ranking_helpers_without_a_second_core_or_a_saved_state(warehouse: Settings) -> None:
    with scoring.ranking_helpers(replace(warehouse, rank_processes=2)) as helpers:
        assert helpers is None  # nothing saved yet
    save_state(warehouse, fitted_state(warehouse, "3"))
    with scoring.ranking_helpers(replace(warehouse, rank_processes=1)) as helpers:
        assert helpers is None


@pytest.mark.slow
def test_a_refresh_ranks_beside_helpers_that_read_the_state_as_it_ranks_alone(
    warehouse: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cold refresh's helper reads the saved state while the refresh does its other work;
    the refresh then ranks a share of its users there, and its lists are those it ranks
    alone."""
    monkeypatch.setattr(scoring, "champion_version", lambda _settings: None)
    scoring.score_users(warehouse)  # saves the state
    users = ["u1", "u2", "u3", "new"]
    alone = scoring.score_users(warehouse, users)
    two_cores = replace(warehouse, rank_processes=2)
    with scoring.ranking_helpers(two_cores) as helpers:
        assert helpers is not None and helpers.rank_here
        deadline = time.monotonic() + 120
        while helpers.users_in_workers == 0:
            assert time.monotonic() < deadline, "the helper never ranked a share"
            beside = scoring.score_users(two_cores, users)
            time.sleep(0.2)
    columns = ["user_id", "rank", "item_id", "score", "reason"]
    pd.testing.assert_frame_equal(beside.lists[columns], alone.lists[columns])
    pools = ["user_id", "pool"]
    pd.testing.assert_frame_equal(beside.candidates[pools], alone.candidates[pools])
