from __future__ import annotations

import pandas as pd

from ml.experiments.assignment import ExperimentDesign, Variant
from orchestration.experiments.replay import expose
from orchestration.experiments.store import ExperimentStore
from orchestration.serving.store import ServingStore
from tests.orchestration.experiments.test_store import variant_lists
from tests.orchestration.serving.test_api import make_trending


def test_users_about_to_continue_are_served_just_before_their_next_event(tmp_path) -> None:
    store = ServingStore(f"sqlite:///{tmp_path / 'serving.db'}")
    store.publish(no_main_lists(), trending=make_trending(3))
    experiments = ExperimentStore(store.engine)
    # 0.3 / 0.3: u1 is in A (0.272), u7 in B (0.446), alice outside (0.651); newcomer-1 in A.
    design = ExperimentDesign(
        "ab1", (Variant("A", 0.3, "champion", "1"), Variant("B", 0.3, "challenger", "2"))
    )
    experiments.start(design)
    experiments.publish_lists("ab1", variant_lists(design, ["u1", "u7"], k=3))
    continuing = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u7", "alice", "newcomer-1"],
            "item_id": ["x", "y", "z", "w", "v"],
            "timestamp": [1_000_000_060, 1_000_000_000, 1_000_000_500, 5, 7],
        }
    )
    assert expose(experiments, store, continuing, k=2) == 3
    exposures = experiments.exposures("ab1").set_index("user_id")
    assert sorted(exposures.index) == ["newcomer-1", "u1", "u7"]
    assert exposures.loc["u1", "served_at"] == pd.Timestamp(999_999_999, unit="s")
    assert exposures.loc["u1", "items"] == ["A-1", "A-2"]
    assert exposures.loc["u7", "items"] == ["B-1", "B-2"]
    assert exposures.loc["newcomer-1", "items"] == ["hot-1", "hot-2"]  # no list: trending
    store.dispose()


def no_main_lists() -> pd.DataFrame:
    """No main lists: the replay serves enrolled users from the experiment's lists only."""
    return pd.DataFrame(
        columns=["user_id", "rank", "item_id", "score", "reason", "model_version", "generated_at"]
    )
