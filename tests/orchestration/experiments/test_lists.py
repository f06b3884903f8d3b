from __future__ import annotations

from datetime import datetime

import pandas as pd

from ml.experiments.assignment import ExperimentDesign, Variant
from orchestration.experiments.commands import describe
from orchestration.experiments.lists import scored_by, users_by_variant
from orchestration.experiments.store import RUNNING, ExperimentRecord

DESIGN = ExperimentDesign(
    "ab1", (Variant("A", 0.3, "champion", "1"), Variant("B", 0.3, "challenger", "11"))
)


def test_users_are_grouped_by_variant_and_the_unenrolled_left_out() -> None:
    # For "ab1" with 0.3 / 0.3: u1 in A (0.272), u7 in B (0.446), alice outside (0.651).
    record = ExperimentRecord(DESIGN, RUNNING, datetime(2026, 1, 1))
    assert users_by_variant(record, ["u1", "u7", "alice"]) == {"A": ["u1"], "B": ["u7"]}
    assert users_by_variant(record, []) == {"A": [], "B": []}


def test_lists_are_reused_only_when_every_row_came_from_the_variants_version() -> None:
    def lists(*labels: str) -> pd.DataFrame:
        return pd.DataFrame({"model_version": list(labels)})

    champion, challenger = DESIGN.variants
    assert scored_by(lists("freshrank-ranking/1:ranker"), champion)
    assert not scored_by(lists("freshrank-ranking/11:ranker"), champion)  # not "/1:"
    assert scored_by(lists("freshrank-ranking/11:ranker"), challenger)
    assert not scored_by(
        lists("freshrank-ranking/1:ranker", "popularity_all (no champion yet)"), champion
    )
    assert not scored_by(lists(), champion)


def test_status_shows_variants_exposures_and_the_verdict() -> None:
    record = ExperimentRecord(
        DESIGN,
        RUNNING,
        datetime(2026, 1, 1, 9, 0),
        verdict="no significant difference yet (B vs A: click-through +3%, p=0.4): keep collecting",
        analysed_at=datetime(2026, 1, 2, 9, 0),
    )
    counts = pd.DataFrame({"variant": ["B"], "exposures": [7], "users": [3]})
    text = describe(record, counts)
    assert text.splitlines()[0] == "experiment ab1: running, started 2026-01-01 09:00 UTC"
    rows = [line.split("|") for line in text.splitlines()[3:5]]
    assert [cell.strip() for cell in rows[0][1:-1]] == ["A", "champion", "1", "0.3", "0", "0"]
    assert [cell.strip() for cell in rows[1][1:-1]] == ["B", "challenger", "11", "0.3", "7", "3"]
    assert text.splitlines()[-1].startswith("verdict (2026-01-02 09:00 UTC): no significant")
