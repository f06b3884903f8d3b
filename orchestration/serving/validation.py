"""Rules every list must meet before it is published (pure; the blocking asset check calls it)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ml.constants import ITEM_ID, RANK, SCORE, USER_ID


@dataclass(frozen=True)
class ListProblems:
    """Counts of users (or rows) breaking each rule, with a few examples."""

    duplicate_items: int = 0
    unsorted_scores: int = 0
    broken_ranks: int = 0
    consumed_items: int = 0
    short_lists: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.duplicate_items
            or self.unsorted_scores
            or self.broken_ranks
            or self.consumed_items
            or self.short_lists
        )

    def metadata(self) -> dict[str, object]:
        return {
            "users_with_duplicate_items": self.duplicate_items,
            "users_with_unsorted_scores": self.unsorted_scores,
            "users_with_broken_ranks": self.broken_ranks,
            "consumed_items_listed": self.consumed_items,
            "users_with_short_lists": self.short_lists,
            "examples": "; ".join(self.examples) or "none",
        }


def find_list_problems(
    lists: pd.DataFrame, consumed: pd.DataFrame, available_item_ids: pd.Series, k: int
) -> ListProblems:
    """Check lists (user_id, rank, item_id, score) against the publishing rules.

    ``consumed`` holds (user_id, item_id) pairs that must never be recommended back;
    ``available_item_ids`` is the recommendable catalog, which bounds how long a list can be.
    A user's list must hold min(k, recommendable items the user has not consumed) rows.
    """
    examples: list[str] = []
    ordered = lists.sort_values([USER_ID, RANK])

    duplicated = ordered[ordered.duplicated([USER_ID, ITEM_ID], keep=False)]
    duplicate_users = duplicated[USER_ID].unique()
    examples += [f"user {user} lists an item twice" for user in duplicate_users[:3]]

    score_steps = ordered.groupby(USER_ID, sort=False)[SCORE].diff()
    unsorted_users = ordered.loc[score_steps > 1e-12, USER_ID].unique()
    examples += [f"user {user} has scores rising with rank" for user in unsorted_users[:3]]

    expected_rank = ordered.groupby(USER_ID, sort=False).cumcount() + 1
    broken_rank_users = ordered.loc[
        ordered[RANK].to_numpy() != expected_rank.to_numpy(), USER_ID
    ].unique()
    examples += [f"user {user} has ranks that are not 1..n" for user in broken_rank_users[:3]]

    pairs = consumed[[USER_ID, ITEM_ID]].drop_duplicates()
    consumed_listed = ordered.merge(pairs, on=[USER_ID, ITEM_ID], how="inner")
    examples += [
        f"user {row.user_id} was recommended consumed item {row.item_id}"
        for row in consumed_listed.head(3).itertuples()
    ]

    available = set(available_item_ids.astype(str))
    consumed_available = pairs[pairs[ITEM_ID].isin(available)].groupby(USER_ID)[ITEM_ID].nunique()
    list_lengths = ordered.groupby(USER_ID)[ITEM_ID].size()
    allowed = (len(available) - consumed_available.reindex(list_lengths.index, fill_value=0)).clip(
        upper=k
    )
    short_users = list_lengths.index[list_lengths < allowed]
    examples += [
        f"user {user} has {list_lengths[user]} items where {allowed[user]} were possible"
        for user in short_users[:3]
    ]

    return ListProblems(
        duplicate_items=len(duplicate_users),
        unsorted_scores=len(unsorted_users),
        broken_ranks=len(broken_rank_users),
        consumed_items=len(consumed_listed),
        short_lists=len(short_users),
        examples=examples,
    )
