"""Candidate pools packed a row a user: what the store keeps and request time reads."""

import json

import pandas as pd
import pytest

from orchestration.serving.pools import POOL, pack_pools, unpack_pool


def candidate_rows() -> pd.DataFrame:
    """Two users' candidates out of order, with reasons that JSON must escape."""
    return pd.DataFrame(
        {
            "user_id": ["u2", "u1", "u1", "u2", "u1"],
            "rank": [2, 3, 1, 1, 2],
            "item_id": ["b", "z", "x", "a", "y"],
            "score": [0.5, 0.1, 0.9, 0.75, 1 / 3],
            "reason": ['"quoted"', "naïve", "because you viewed X", "a\\b", "line\nbreak"],
        }
    )


def test_each_user_gets_one_row_with_their_pool_in_rank_order() -> None:
    packed = pack_pools(candidate_rows())
    assert packed["user_id"].tolist() == ["u1", "u2"]
    pools = dict(zip(packed["user_id"], packed[POOL], strict=True))
    assert json.loads(pools["u1"]) == [
        ["x", "y", "z"],
        [0.9, 1 / 3, 0.1],
        ["because you viewed X", "line\nbreak", "naïve"],
    ]
    assert [row["item_id"] for row in unpack_pool(pools["u2"])] == ["a", "b"]


def test_unpacking_gives_back_the_rows_exactly() -> None:
    rows = candidate_rows()
    packed = pack_pools(rows)
    back = pd.DataFrame(
        [
            {"user_id": user, "rank": rank, **row}
            for user, text in zip(packed["user_id"], packed[POOL], strict=True)
            for rank, row in enumerate(unpack_pool(text), start=1)
        ]
    )
    expected = rows.sort_values(["user_id", "rank"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(back, expected[back.columns.tolist()])
    assert back["score"].tolist()[1] == 1 / 3  # floats round-trip to the last bit


@pytest.mark.parametrize("text", [None, ""])
def test_a_missing_pool_is_empty(text: str | None) -> None:
    assert unpack_pool(text) == []


def test_no_candidates_pack_to_no_rows() -> None:
    packed = pack_pools(candidate_rows().iloc[:0])
    assert packed.empty and packed.columns.tolist() == ["user_id", POOL]
