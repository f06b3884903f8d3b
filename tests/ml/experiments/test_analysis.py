from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ml.experiments.analysis import (
    CONTINUE,
    KEEP,
    PROMOTE,
    AnalysisConfig,
    analyse,
    attribute,
    two_proportion_z_test,
)

DAY = pd.Timestamp("2026-03-01")


def at(hhmm: str, days: int = 0) -> pd.Timestamp:
    return DAY + pd.Timedelta(days=days) + pd.Timedelta(hhmm + ":00")


def exposures(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["exposure_id", "variant", "user_id", "items", "served_at"])


def events(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "value", "occurred_at"])


# u1 (variant A) was shown [a, b, c] at 10:00 and [d, e] at 12:00; u2 (B) [x, y] at 10:00.
SHOWN = exposures(
    [
        (1, "A", "u1", ["a", "b", "c"], at("10:00")),
        (2, "A", "u1", ["d", "e"], at("12:00")),
        (3, "B", "u2", ["x", "y"], at("10:00")),
    ]
)
HAPPENED = events(
    [
        ("u1", "c", "rate", 5.0, at("09:00")),  # before any exposure: not credited
        ("u1", "b", "view", None, at("10:30")),  # exposure 1, shown, engaged
        ("u1", "d", "purchase", None, at("12:05")),  # exposure 2, shown, converted
        ("u1", "a", "view", None, at("12:10")),  # exposure 2 (the latest), not on its list
        ("u2", "y", "rate", 3.0, at("10:10")),  # exposure 3, engaged, a rating below 4
        ("u2", "x", "dislike", None, at("10:20")),  # shown, but not engagement
        ("u2", "x", "view", None, at("11:00", days=1)),  # 25 hours later: outside the window
        ("u3", "a", "view", None, at("10:30")),  # never exposed
    ]
)


def test_two_proportion_z_test_worked_example() -> None:
    # 200/1000 against 250/1000: pooled 0.225, se = sqrt(0.225 * 0.775 * 2/1000) = 0.018675,
    # z = 0.05 / 0.018675 = 2.6774, two-sided p = erfc(2.6774 / sqrt 2) = 0.00742.
    p_value = two_proportion_z_test(200, 1000, 250, 1000)
    assert p_value == pytest.approx(math.erfc(2.6774 / math.sqrt(2)), rel=1e-3)
    assert p_value == pytest.approx(0.00742, abs=1e-5)
    assert two_proportion_z_test(250, 1000, 200, 1000) == pytest.approx(p_value)
    assert two_proportion_z_test(0, 10, 0, 10) == 1.0  # nothing to tell apart
    assert two_proportion_z_test(0, 0, 3, 10) == 1.0


def test_events_are_credited_to_the_latest_exposure_within_the_window() -> None:
    credited = attribute(SHOWN, HAPPENED, pd.Timedelta(hours=24))
    rows = {
        (row.exposure_id, row.item_id): (row.shown, row.engaged, row.converted)
        for row in credited.itertuples()
    }
    assert rows == {
        (1, "b"): (True, True, False),
        (2, "d"): (True, True, True),
        (2, "a"): (False, True, False),
        (3, "y"): (True, True, False),
        (3, "x"): (True, False, False),
    }
    # A five-minute window keeps only the purchase five minutes after exposure 2 (the bound
    # is included).
    short = attribute(SHOWN, HAPPENED, pd.Timedelta(minutes=5))
    assert set(zip(short["exposure_id"], short["item_id"], strict=True)) == {(2, "d")}


def test_per_variant_figures_on_the_worked_example() -> None:
    results = analyse(SHOWN, HAPPENED, ["A", "B"], AnalysisConfig(k=3, min_users=1))
    table = results.variants.set_index("variant")
    assert table.loc["A", "users"] == 1 and table.loc["A", "exposures"] == 2
    assert table.loc["A", "click_through"] == 1.0 and table.loc["A", "conversion"] == 1.0
    assert table.loc["B", "click_through"] == 1.0 and table.loc["B", "conversion"] == 0.0
    # NDCG@3: exposure 1 finds b at 2 (1/log2 3 = 0.6309); exposure 2 finds d at 1 of truth
    # {d, a}: 1 / (1 + 1/log2 3) = 0.6131; u1's mean 0.6220. Exposure 3: y at 2, 0.6309.
    assert table.loc["A", "ndcg@3"] == pytest.approx(
        (1 / np.log2(3) + 1 / (1 + 1 / np.log2(3))) / 2
    )
    assert table.loc["B", "ndcg@3"] == pytest.approx(1 / np.log2(3))
    assert results.attributed_events == 5


def synthetic(clicks_a: int, clicks_b: int, users: int = 1000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``users`` users per variant, each shown [i1, i2] once; the first clicks_x click i1."""
    shown, happened = [], []
    for variant, clicks in (("A", clicks_a), ("B", clicks_b)):
        for number in range(users):
            user = f"{variant}{number}"
            shown.append((len(shown), variant, user, ["i1", "i2"], at("10:00")))
            if number < clicks:
                happened.append((user, "i1", "click", None, at("10:05")))
    return exposures(shown), events(happened)


def test_a_significant_lift_promotes_the_treatment() -> None:
    results = analyse(*synthetic(200, 250), ["A", "B"])
    assert results.verdict.decision == PROMOTE and results.verdict.variant == "B"
    assert results.verdict.text == (
        "B's click-through is 25% higher than A's (0.250 vs 0.200, p=0.0074): promote B"
    )
    row = results.comparisons.set_index("metric").loc["click_through"]
    assert row["relative"] == pytest.approx(0.25) and row["p_value"] == pytest.approx(
        0.00742, abs=1e-5
    )


def test_a_significant_drop_keeps_the_control() -> None:
    verdict = analyse(*synthetic(250, 200), ["A", "B"]).verdict
    assert (verdict.decision, verdict.variant) == (KEEP, "A")
    assert verdict.text == (
        "B's click-through is 20% lower than A's (0.200 vs 0.250, p=0.0074): keep A"
    )


def test_a_small_difference_says_keep_collecting() -> None:
    verdict = analyse(*synthetic(200, 210), ["A", "B"]).verdict
    assert verdict.decision == CONTINUE
    assert verdict.text.startswith("no significant difference yet (B vs A: click-through +5%, p=0.")
    assert verdict.text.endswith("): keep collecting")


def test_too_few_users_say_so_before_any_test() -> None:
    verdict = analyse(*synthetic(10, 40, users=50), ["A", "B"]).verdict
    assert verdict.decision == CONTINUE
    assert verdict.text == (
        "too few exposed users yet (A 50, B 50; 100 per variant needed): keep collecting"
    )


def test_a_variant_nobody_saw_yet_is_listed_with_zero_users() -> None:
    results = analyse(SHOWN, HAPPENED, ["A", "B", "C"], AnalysisConfig(min_users=1))
    assert results.variants.set_index("variant").loc["C", "users"] == 0
    assert results.verdict.decision == CONTINUE


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="window must be positive"):
        AnalysisConfig(window=pd.Timedelta(0))
    with pytest.raises(ValueError, match="alpha"):
        AnalysisConfig(alpha=1.5)


def test_no_exposures_or_no_events_yet_say_too_few() -> None:
    nobody = exposures([])
    results = analyse(nobody, events([]), ["A", "B"])
    assert results.variants["users"].tolist() == [0, 0]
    assert results.verdict.text.startswith("too few exposed users yet (A 0, B 0;")
    quiet = analyse(SHOWN, events([]), ["A", "B"], AnalysisConfig(min_users=1))
    assert quiet.variants["click_through"].tolist() == [0.0, 0.0]
    assert quiet.attributed_events == 0
