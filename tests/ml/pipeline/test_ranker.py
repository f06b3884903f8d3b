"""The ranker (LambdaRank or XE-NDCG) learns a trivially learnable label and ranks those items
first."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from ml.constants import ITEM_ID, USER_ID
from ml.pipeline.ranker import LABEL, Ranker, RankerConfig

SMALL = RankerConfig(n_estimators=30, min_child_samples=5, bagged_models=2, threads=1)


def candidates(users: int, seed: int) -> pd.DataFrame:
    """10 candidates per user; the label is 1 exactly where `signal` exceeds 0.7."""
    random = np.random.default_rng(seed)
    count = users * 10
    frame = pd.DataFrame(
        {
            USER_ID: np.repeat([f"u{n}" for n in range(users)], 10),
            ITEM_ID: np.tile([f"i{n}" for n in range(10)], users),
            "signal": random.uniform(size=count),
            "noise": random.uniform(size=count),
        }
    )
    frame[LABEL] = (frame["signal"] > 0.7).astype(int)
    return frame


@pytest.mark.parametrize("objective", ["rank_xendcg", "lambdarank", "lambdarank+rank_xendcg"])
def test_the_ranker_puts_the_labelled_items_first_on_unseen_users(objective: str) -> None:
    ranker = Ranker(replace(SMALL, objective=objective)).fit(
        candidates(60, seed=1), ["signal", "noise"]
    )
    assert ranker.fitted and len(ranker.models) == 2
    fresh = candidates(30, seed=2)
    fresh["predicted"] = ranker.predict(fresh)
    for user, mine in fresh.groupby(USER_ID):
        ordered = mine.sort_values("predicted", ascending=False)
        positives = int(mine[LABEL].sum())
        assert ordered[LABEL].iloc[:positives].all(), user
    assert ranker.importance().index[0] == "signal"
    assert ranker.params()["n_estimators"] == 30
    assert ranker.params()["objective"] == objective
    # What LightGBM actually trained: with two objectives, the bagged models take them in turn.
    trained = [text.split("objective=")[1].split()[0] for text in ranker._texts]
    asked = objective.split("+")
    assert trained == [asked[number % len(asked)] for number in range(2)]


def test_predict_reads_the_features_by_name() -> None:
    ranker = Ranker(SMALL).fit(candidates(60, seed=1), ["signal", "noise"])
    fresh = candidates(5, seed=3)
    shuffled = fresh[[LABEL, "noise", ITEM_ID, "signal", USER_ID]]
    np.testing.assert_array_equal(ranker.predict(shuffled), ranker.predict(fresh))


def test_a_ranker_needs_a_positive_and_a_fit() -> None:
    nothing = candidates(5, seed=1).assign(**{LABEL: 0})
    with pytest.raises(ValueError, match="nothing to learn"):
        Ranker(SMALL).fit(nothing, ["signal"])
    with pytest.raises(RuntimeError, match="not fitted"):
        Ranker(SMALL).predict(nothing)
    assert Ranker(SMALL).importance().empty


def test_training_over_its_row_budget_keeps_every_positive_and_still_learns() -> None:
    from ml.pipeline.ranker import within_budget

    frame = candidates(200, seed=4)
    kept = within_budget(frame, max_rows=900, seed=7)
    assert kept[LABEL].sum() == frame[LABEL].sum()  # every chosen item stays
    assert 800 <= len(kept) <= 1_000  # about the budget: 2,000 rows were offered
    assert kept.index.is_monotonic_increasing
    assert within_budget(frame, max_rows=5_000, seed=7) is frame
    budgeted = RankerConfig(n_estimators=30, min_child_samples=5, bagged_models=1, max_rows=900)
    ranker = Ranker(budgeted).fit(frame, ["signal", "noise"])
    assert ranker.importance().index[0] == "signal"


def test_compiled_trees_predict_what_lightgbm_predicts_and_are_cached(tmp_path) -> None:
    import pickle

    ranker = Ranker(SMALL).fit(candidates(60, seed=1), ["signal", "noise"])
    fresh = candidates(40, seed=4)
    fresh.loc[::7, "noise"] = np.nan  # missing values take the trees' default branches
    expected = ranker.predict(fresh)
    assert ranker.compile(tmp_path / "rankers")
    np.testing.assert_allclose(ranker.predict(fresh), expected, rtol=0, atol=1e-12)
    cached = sorted(path.suffix for path in (tmp_path / "rankers").iterdir())
    assert cached == [".o", ".o", ".txt", ".txt"]  # one model file and one object per bag
    # A copy (a saved serving state, a Ray worker) is plain LightGBM until it compiles, and
    # then loads the cached objects instead of compiling again.
    copy = pickle.loads(pickle.dumps(ranker))
    assert copy._compiled is None
    np.testing.assert_allclose(copy.predict(fresh), expected, rtol=0, atol=1e-12)
    stamps = {path: path.stat().st_mtime_ns for path in (tmp_path / "rankers").iterdir()}
    assert copy.compile(tmp_path / "rankers")
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps
    np.testing.assert_allclose(copy.predict(fresh), expected, rtol=0, atol=1e-12)


def test_without_lleaves_lightgbm_keeps_predicting(tmp_path, monkeypatch) -> None:
    import sys

    ranker = Ranker(SMALL).fit(candidates(60, seed=1), ["signal", "noise"])
    monkeypatch.setitem(sys.modules, "lleaves", None)  # import lleaves raises ImportError
    assert not ranker.compile(tmp_path)
    assert ranker._compiled is None and ranker.predict(candidates(3, seed=5)).shape == (30,)


def test_a_saved_ranker_predicts_compiled_without_importing_lightgbm(tmp_path) -> None:
    """What a cold refresh does: load the saved ranker, compile (from the cache), predict; the
    LightGBM import (over a second, with scikit-learn) is never paid."""
    import pickle
    import subprocess
    import sys

    ranker = Ranker(SMALL).fit(candidates(60, seed=1), ["signal", "noise"])
    fresh = candidates(20, seed=6)
    ranker.compile(tmp_path / "rankers")
    (tmp_path / "ranker.pkl").write_bytes(pickle.dumps(ranker))
    fresh.to_pickle(tmp_path / "fresh.pkl")
    np.save(tmp_path / "expected.npy", ranker.predict(fresh))
    script = f"""
import pickle, sys
from pathlib import Path
import numpy as np, pandas as pd
folder = Path({str(tmp_path)!r})
ranker = pickle.loads((folder / "ranker.pkl").read_bytes())
assert ranker.compile(folder / "rankers")
predicted = ranker.predict(pd.read_pickle(folder / "fresh.pkl"))
np.testing.assert_allclose(predicted, np.load(folder / "expected.npy"), rtol=0, atol=1e-12)
assert "lightgbm" not in sys.modules and "sklearn" not in sys.modules, "LightGBM was imported"
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_ranker_saved_as_lightgbm_models_still_loads_and_predicts() -> None:
    """Rankers pickled before the model texts (a list of fitted LGBMRankers) load as texts."""
    import lightgbm

    frame = candidates(60, seed=1)
    model = lightgbm.LGBMRanker(n_estimators=20, min_child_samples=5, verbose=-1)
    model.fit(frame[["signal", "noise"]], frame[LABEL], group=[10] * 60)
    old = Ranker.__new__(Ranker)
    old.__setstate__(
        {"config": SMALL, "models": [model], "features": ["signal", "noise"], "_compiled": None}
    )
    fresh = candidates(5, seed=7)
    assert old.fitted
    np.testing.assert_allclose(
        old.predict(fresh), model.predict(fresh[["signal", "noise"]].to_numpy(np.float32))
    )
