"""Blocking checks on the lists before they reach the serving store."""

from dagster import AssetCheckExecutionContext, AssetCheckResult, ResourceParam, asset_check

from orchestration.serving.assets import LISTS_TABLE, recommendation_lists
from orchestration.serving.validation import warehouse_list_problems
from orchestration.settings import Settings
from orchestration.warehouse.guard import open_warehouse


@asset_check(
    asset=recommendation_lists,
    blocking=True,
    description="K items per user where the catalog allows, nothing consumed, no duplicates, "
    "scores descending. A failure stops the publish and the previous lists stay served.",
)
def check_recommendation_lists(
    context: AssetCheckExecutionContext, settings: ResourceParam[Settings]
) -> AssetCheckResult:
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        problems = warehouse_list_problems(connection, LISTS_TABLE, settings.top_k)
        (users,) = connection.execute(
            f"select count(distinct user_id) from {LISTS_TABLE}"
        ).fetchall()[0]
    return AssetCheckResult(
        passed=problems.ok, metadata={"users_checked": users, **problems.metadata()}
    )


serving_checks = [check_recommendation_lists]
