"""Checks on the item vectors: finite, unit length, the model's width, one per catalog item."""

from dagster import AssetCheckExecutionContext, AssetCheckResult, ResourceParam, asset_check

from ml.embeddings import model_dimension
from orchestration.features.assets import item_embeddings
from orchestration.features.embedding_store import vector_health
from orchestration.settings import Settings
from orchestration.warehouse.guard import open_warehouse

NORM_TOLERANCE = 1e-3


@asset_check(
    asset=item_embeddings,
    blocking=True,
    description="Finite, unit-norm vectors of the model's dimension, exactly one per catalog item.",
)
def check_item_embeddings(
    context: AssetCheckExecutionContext, settings: ResourceParam[Settings]
) -> AssetCheckResult:
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        health = vector_health(connection, "marts.items", NORM_TOLERANCE)
    expected_dimension = model_dimension(settings.embedding.model)
    passed = (
        health["all_finite"]
        and health["vectors_off_unit_norm"] == 0
        and (health["dimension"] == expected_dimension or health["vectors"] == 0)
        and health["items_without_vector"] == 0
        and health["vectors_without_item"] == 0
        and health["duplicate_vectors"] == 0
    )
    return AssetCheckResult(
        passed=bool(passed),
        metadata={
            **health,
            "dimension": health["dimension"] if health["dimension"] is not None else "none",
            "expected_dimension": expected_dimension,
        },
    )


feature_checks = [check_item_embeddings]
