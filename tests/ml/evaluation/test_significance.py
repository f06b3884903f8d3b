from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml.evaluation.significance import paired_bootstrap


def test_identical_models_differ_by_nothing() -> None:
    values = pd.Series([0.1, 0.5, 0.9], index=["a", "b", "c"])
    difference = paired_bootstrap(values, values, resamples=200)
    assert difference.mean == difference.low == difference.high == 0.0
    assert difference.share_ahead == 0.0
    assert difference.users == 3


def test_a_constant_lead_is_certain() -> None:
    second = pd.Series(np.linspace(0.0, 0.5, 50), index=[f"u{n}" for n in range(50)])
    difference = paired_bootstrap(second + 0.1, second, resamples=300)
    assert difference.mean == pytest.approx(0.1)
    assert difference.low == pytest.approx(0.1) and difference.high == pytest.approx(0.1)
    assert difference.share_ahead == 1.0


def test_pairing_removes_what_users_share() -> None:
    # Users vary a lot, the lead is small but always there: unpaired, the interval would
    # straddle zero; paired, it does not.
    rng = np.random.default_rng(3)
    base = pd.Series(rng.uniform(0.0, 0.9, 80), index=[f"u{n}" for n in range(80)])
    lead = pd.Series(rng.uniform(0.005, 0.015, 80), index=base.index)
    difference = paired_bootstrap(base + lead, base, resamples=1000, seed=1)
    assert 0.0 < difference.low < difference.mean < difference.high
    assert difference.share_ahead == 1.0


def test_a_user_missing_from_one_side_counts_zero_there() -> None:
    first = pd.Series([1.0, 1.0], index=["a", "b"])
    second = pd.Series([1.0], index=["a"])
    assert paired_bootstrap(first, second, resamples=50).mean == pytest.approx(0.5)


def test_bad_arguments_are_refused() -> None:
    values = pd.Series([0.1], index=["a"])
    with pytest.raises(ValueError, match="resamples"):
        paired_bootstrap(values, values, resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap(values, values, confidence=1.0)
    with pytest.raises(ValueError, match="no users"):
        paired_bootstrap(pd.Series(dtype=float), pd.Series(dtype=float))
