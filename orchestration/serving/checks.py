"""Blocking checks on the lists before they reach the serving store."""

from dagster import AssetCheckExecutionContext, AssetCheckResult, asset_check

from ml.constants import ITEM_ID, USER_ID
from orchestration.serving.assets import LISTS_TABLE, recommendation_lists
from orchestration.serving.scoring import read_check_inputs
from orchestration.serving.validation import find_list_problems
from orchestration.settings import get_settings
from orchestration.warehouse.guard import open_warehouse


@asset_check(
    asset=recommendation_lists,
    blocking=True,
    description="K items per user where the catalog allows, nothing consumed, no duplicates, "
    "scores descending. A failure stops the publish and the previous lists stay served.",
)
def check_recommendation_lists(context: AssetCheckExecutionContext) -> AssetCheckResult:
    settings = get_settings()
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        lists = connection.sql(f"select * from {LISTS_TABLE}").df()
        consumed, items = read_check_inputs(connection, sorted(set(lists[USER_ID].astype(str))))
    available = items.loc[items["available"].fillna(True).astype(bool), ITEM_ID]
    problems = find_list_problems(lists, consumed, available, settings.top_k)
    return AssetCheckResult(
        passed=problems.ok,
        metadata={"users_checked": int(lists[USER_ID].nunique()), **problems.metadata()},
    )


serving_checks = [check_recommendation_lists]
