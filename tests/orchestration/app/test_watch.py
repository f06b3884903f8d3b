from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from orchestration.app import watch as watch_module
from orchestration.app.watch import behind, built, refresh_job_for, watch
from orchestration.jobs import FULL_BUILD_JOB, REFRESH_EVENTS_JOB, REFRESH_JOB
from orchestration.settings import Settings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in ("FRESHRANK_LANDING_DIR", "FRESHRANK_WAREHOUSE_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FRESHRANK_HOME", str(tmp_path / "home"))
    settings = Settings.from_env()
    settings.ensure_dirs()
    return settings


def _warehouse(settings: Settings, loaded: list[str], watermark: str | None) -> None:
    with duckdb.connect(str(settings.warehouse_path)) as connection:
        connection.execute("create schema raw; create schema ml")
        connection.execute("create table raw.events (event_id varchar, loaded_at timestamp)")
        for number, stamp in enumerate(loaded):
            connection.execute("insert into raw.events values (?, ?)", [f"e{number}", stamp])
        connection.execute("create table ml.publish_watermark (published_through timestamp)")
        if watermark is not None:
            connection.execute("insert into ml.publish_watermark values (?)", [watermark])


def test_nothing_is_due_before_anything_was_built(settings: Settings) -> None:
    assert behind(settings) is None


def test_a_waiting_landing_file_makes_a_refresh_due(settings: Settings) -> None:
    folder = settings.landing_folder("events")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "batch.csv").write_text("user_id,item_id,event_type,timestamp\n")
    assert behind(settings) == "1 landing file(s) waiting"


def test_rows_loaded_after_the_last_publish_make_a_refresh_due(settings: Settings) -> None:
    _warehouse(settings, ["2024-01-01 10:00", "2024-01-01 12:00"], watermark="2024-01-01 11:00")
    assert behind(settings) == "1 event(s) loaded since the last publish"


def test_nothing_is_due_once_every_load_is_published(settings: Settings) -> None:
    _warehouse(settings, ["2024-01-01 10:00"], watermark="2024-01-01 10:00")
    assert behind(settings) is None


def test_watch_refreshes_while_due_and_stops_when_idle(settings: Settings) -> None:
    folder = settings.landing_folder("events")
    folder.mkdir(parents=True, exist_ok=True)
    landed = folder / "batch.csv"
    landed.write_text("user_id,item_id,event_type,timestamp\n")
    calls: list[int] = []

    def refresh() -> bool:
        calls.append(1)
        landed.unlink()  # the refresh loads (moves) the waiting file
        return True

    runs = watch(settings, refresh, interval_seconds=0.01, idle_timeout_seconds=0.2)
    assert runs == 1 and len(calls) == 1


def test_watch_stops_after_max_runs(settings: Settings) -> None:
    folder = settings.landing_folder("events")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stuck.csv").write_text("not loadable\n")
    failures: list[int] = []

    def failing_refresh() -> bool:
        failures.append(1)
        return False  # the file stays: the loop must not spin forever

    assert watch(settings, failing_refresh, interval_seconds=0.01, max_runs=3) == 3
    assert len(failures) == 3


def test_without_tables_only_landing_files_make_a_refresh_due(settings: Settings) -> None:
    _warehouse(settings, ["2024-01-01 10:00", "2024-01-01 12:00"], watermark="2024-01-01 11:00")
    assert behind(settings, tables=False) is None
    folder = settings.landing_folder("events")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "batch.csv").write_text("user_id,item_id,event_type,timestamp\n")
    assert behind(settings, tables=False) == "1 landing file(s) waiting"


def test_watch_looks_at_files_often_and_at_the_tables_once_an_interval(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    looks: list[bool] = []

    def recorded(_settings: Settings, tables: bool = True) -> str | None:
        looks.append(tables)
        return None

    monkeypatch.setattr(watch_module, "behind", recorded)
    watch(settings, lambda: True, interval_seconds=0.5, idle_timeout_seconds=1.1)
    assert looks[0] is True  # the first look sees both
    assert 2 <= looks.count(True) <= 3  # once per 0.5 s over about 1.1-1.3 s
    assert looks.count(False) >= 3  # files every 0.2 s in between


def _catalog(settings: Settings, raw_loads: list[str], mart_through: str, embedded: bool) -> None:
    """Raw catalog rows loaded at ``raw_loads``, an items mart built through ``mart_through``,
    and an embeddings stamp that matches the mart's texts when ``embedded``."""
    from orchestration.features.assets import (
        EmbeddingRunConfig,
        embedder_identity,
        embedding_config,
    )
    from orchestration.features.embedding_store import catalog_text_stamp, record_stamp

    with duckdb.connect(str(settings.warehouse_path)) as connection:
        connection.execute("create schema if not exists marts")
        connection.execute("create table marts.interactions (event_id varchar)")  # built
        connection.execute("create table raw.items (item_id varchar, loaded_at timestamp)")
        for number, stamp in enumerate(raw_loads):
            connection.execute("insert into raw.items values (?, ?)", [f"i{number}", stamp])
        connection.execute(
            "create table marts.items as select item_id, 'T ' || item_id as title, "
            "null::varchar as description, null::varchar as categories, "
            "null::varchar as attributes, ?::timestamp as catalog_loaded_through "
            "from raw.items where loaded_at <= ?",
            [mart_through, mart_through],
        )
        embedder = embedder_identity(settings, embedding_config(settings, EmbeddingRunConfig()))
        record_stamp(connection, catalog_text_stamp(connection, embedder) if embedded else "old")


def test_a_batch_of_events_alone_gets_the_events_refresh(settings: Settings) -> None:
    _warehouse(settings, ["2024-01-01 10:00", "2024-01-02 10:00"], "2024-01-01 10:00")
    _catalog(settings, ["2024-01-01 09:00", "2024-01-01 11:00"], "2024-01-01 11:00", True)
    assert refresh_job_for(settings) == REFRESH_EVENTS_JOB


def test_catalog_rows_not_yet_in_the_items_mart_need_the_whole_refresh(
    settings: Settings,
) -> None:
    _warehouse(settings, ["2024-01-01 10:00"], "2024-01-01 10:00")
    _catalog(settings, ["2024-01-01 09:00", "2024-01-01 11:00"], "2024-01-01 09:00", True)
    assert refresh_job_for(settings) == REFRESH_JOB


def test_a_catalog_the_vectors_lag_behind_needs_the_whole_refresh(settings: Settings) -> None:
    _warehouse(settings, ["2024-01-01 10:00"], "2024-01-01 10:00")
    _catalog(settings, ["2024-01-01 09:00"], "2024-01-01 09:00", False)
    assert refresh_job_for(settings) == REFRESH_JOB


def test_a_waiting_item_file_needs_the_whole_refresh(settings: Settings) -> None:
    _warehouse(settings, ["2024-01-01 10:00"], "2024-01-01 10:00")
    _catalog(settings, ["2024-01-01 09:00"], "2024-01-01 09:00", True)
    folder = settings.landing_folder("items")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.csv").write_text("item_id,title\ni9,Nine\n")
    assert refresh_job_for(settings) == REFRESH_JOB


def test_before_anything_is_built_the_refresh_is_the_full_build(settings: Settings) -> None:
    """A refresh updates the marts a build made; before the first build there are none (a
    refresh there failed: 'staging.stg_raw__events does not exist')."""
    assert refresh_job_for(settings) == FULL_BUILD_JOB  # no warehouse yet
    _warehouse(settings, ["2024-01-01 10:00"], None)
    assert refresh_job_for(settings) == FULL_BUILD_JOB  # loaded, never built


def test_built_means_the_marts_a_build_makes_exist(settings: Settings) -> None:
    assert not built(settings)  # no warehouse
    _warehouse(settings, ["2024-01-01 10:00"], None)
    assert not built(settings)  # loaded, never built
    with duckdb.connect(str(settings.warehouse_path)) as connection:
        connection.execute("create schema marts")
        connection.execute("create table marts.interactions (event_id varchar)")
        connection.execute("create table marts.items (item_id varchar)")
    assert built(settings)


def test_a_built_deployment_without_its_catalog_stamp_gets_the_whole_refresh(
    settings: Settings,
) -> None:
    _warehouse(settings, ["2024-01-01 10:00"], None)
    with duckdb.connect(str(settings.warehouse_path)) as connection:
        connection.execute("create schema marts")
        connection.execute("create table marts.interactions (event_id varchar)")
        connection.execute("create table marts.items (item_id varchar)")
    assert refresh_job_for(settings) == REFRESH_JOB  # no raw catalog, no embeddings stamp
