"""Checks on the item vectors: finite, unit length, the model's width, one per catalog item."""

import numpy as np
from dagster import AssetCheckExecutionContext, AssetCheckResult, asset_check

from ml.embeddings import model_dimension
from orchestration.features.assets import item_embeddings
from orchestration.features.embedding_store import load_vectors
from orchestration.settings import get_settings
from orchestration.warehouse.guard import open_warehouse

NORM_TOLERANCE = 1e-3


@asset_check(
    asset=item_embeddings,
    blocking=True,
    description="Finite, unit-norm vectors of the model's dimension, exactly one per catalog item.",
)
def check_item_embeddings(context: AssetCheckExecutionContext) -> AssetCheckResult:
    settings = get_settings()
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        vectors = load_vectors(connection)
        catalog = set(connection.sql("select item_id from marts.items").df()["item_id"])
    values = vectors.to_numpy(dtype=np.float32)
    expected_dimension = model_dimension(settings.embedding.model)
    finite = bool(np.isfinite(values).all())
    norms = np.linalg.norm(values, axis=1) if len(values) else np.ones(0)
    off_norm = int((np.abs(norms - 1.0) > NORM_TOLERANCE).sum())
    stored = set(vectors.index)
    missing, extra = len(catalog - stored), len(stored - catalog)
    duplicated = int(vectors.index.duplicated().sum())
    passed = (
        finite
        and off_norm == 0
        and vectors.shape[1] == expected_dimension
        and missing == 0
        and extra == 0
        and duplicated == 0
    )
    return AssetCheckResult(
        passed=passed,
        metadata={
            "vectors": len(vectors),
            "catalog_items": len(catalog),
            "all_finite": finite,
            "vectors_off_unit_norm": off_norm,
            "dimension": int(vectors.shape[1]),
            "expected_dimension": expected_dimension,
            "items_without_vector": missing,
            "vectors_without_item": extra,
            "duplicate_vectors": duplicated,
        },
    )


feature_checks = [check_item_embeddings]
