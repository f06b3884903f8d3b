from __future__ import annotations

from types import SimpleNamespace

import pandas as pd

from orchestration.model.assets import ndcg_by_segment


def test_ndcg_by_segment_pivots_models_best_first_with_the_new_item_hit_rate() -> None:
    rows = []
    for model, scale in (("weak", 1.0), ("strong", 2.0)):
        for segment, value in (
            ("new_item_targets", 0.01),
            ("overall", 0.1),
            ("returning_user", 0.05),
            ("new_user", 0.2),
        ):
            rows.append(
                {
                    "model": model,
                    "segment": segment,
                    "ndcg@10": value * scale,
                    "hit_rate@10": value / scale,
                }
            )
    summary = ndcg_by_segment(SimpleNamespace(evaluation=pd.DataFrame(rows)))
    assert list(summary.index) == ["strong", "weak"]
    assert list(summary.columns) == [
        "overall",
        "new_user",
        "returning_user",
        "new_item_targets",
        "new-item hit_rate@10",
    ]
    assert summary.loc["strong", "new_user"] == 0.4
    assert summary.loc["weak", "new-item hit_rate@10"] == 0.01
