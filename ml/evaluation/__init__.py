"""Offline evaluation: top-K ranking metrics, the temporal protocol and paired significance."""

from ml.evaluation.metrics import (
    catalog_coverage,
    hit_rate_at_k,
    intra_list_diversity,
    mrr,
    ndcg_at_k,
    novelty,
    recall_at_k,
)

__all__ = [
    "catalog_coverage",
    "hit_rate_at_k",
    "intra_list_diversity",
    "mrr",
    "ndcg_at_k",
    "novelty",
    "recall_at_k",
]
