"""Offline evaluation: top-K ranking metrics and temporal splits."""

from ml.evaluation.metrics import (
    catalog_coverage,
    hit_rate_at_k,
    intra_list_diversity,
    mrr,
    ndcg_at_k,
    novelty,
    recall_at_k,
)
from ml.evaluation.split import new_item_targets, segment_users, temporal_split

__all__ = [
    "catalog_coverage",
    "hit_rate_at_k",
    "intra_list_diversity",
    "mrr",
    "ndcg_at_k",
    "new_item_targets",
    "novelty",
    "recall_at_k",
    "segment_users",
    "temporal_split",
]
