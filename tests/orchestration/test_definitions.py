from __future__ import annotations

from dagster import AssetKey

from orchestration.definitions import defs


def test_definitions_load_with_every_domain() -> None:
    graph = defs.resolve_asset_graph()
    groups = {graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert {"ingest", "warehouse", "serving"} <= groups
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"raw_events", "raw_items", "recommendation_lists", "published_recommendations"} <= keys
    assert {"marts/interactions", "marts/item_trending", "marts/item_covisitation"} <= keys


def test_dbt_sources_are_the_ingest_assets() -> None:
    graph = defs.resolve_asset_graph()
    staging = next(key for key in graph.get_all_asset_keys() if key.path[-1] == "stg_raw__events")
    assert AssetKey("raw_events") in graph.get(staging).parent_keys


def test_checks_cover_raw_marts_and_lists() -> None:
    graph = defs.resolve_asset_graph()
    check_names = {check_key.name for check_key in graph.asset_check_keys}
    assert {
        "check_raw_events_batch",
        "check_raw_items_batch",
        "check_interactions_mart",
        "check_items_mart",
        "check_recommendation_lists",
    } <= check_names
    assert any(name.startswith("unique_interactions") for name in check_names)  # dbt tests


def test_jobs_exist() -> None:
    for name in ("full_build_job", "ingest_job"):
        assert defs.resolve_job_def(name).name == name
