"""Recommenders: baselines that share one fit / score interface."""

from ml.models.baselines import (
    EASERecommender,
    ItemKNNRecommender,
    PopularityRecommender,
    Recommender,
    TrendingRecommender,
)

__all__ = [
    "EASERecommender",
    "ItemKNNRecommender",
    "PopularityRecommender",
    "Recommender",
    "TrendingRecommender",
]
