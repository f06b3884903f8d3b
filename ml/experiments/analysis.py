"""What each variant's served lists led to: attribution, per-variant rates, significance, verdict.

Attribution: every event of an exposed user is credited to that user's latest exposure served
at or before it, if it lies within the attribution window. It is a click-through when the item
was on the exposed list and the event shows engagement (anything but an impression or a
dislike), a conversion when it was on the list and is a purchase, a like or a rating of at
least POSITIVE_RATING. The randomised unit is the user, so the rates and tests are per user:
click-through is the share of exposed users who engaged with an item they were shown.
NDCG@k scores each exposed list against every item the user engaged with in its window, shown
or not (the backtests' measure, on live behaviour), averaged per user.

The first variant is the control; every other is compared with it: a two-proportion z-test for
click-through and conversion, Welch's t-test for NDCG, at a Bonferroni-corrected level. The
verdict follows click-through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml.constants import EVENT_TYPE, ITEM_ID, OCCURRED_AT, RANK, USER_ID, VALUE
from ml.evaluation.metrics import ndcg_per_user

VARIANT = "variant"
EXPOSURE_ID = "exposure_id"
ITEMS = "items"
SERVED_AT = "served_at"
NOT_ENGAGEMENT = frozenset({"impression", "dislike"})
CONVERSION_EVENTS = frozenset({"purchase", "like"})
POSITIVE_RATING = 4.0  # a rating at or above this converts
CLICK_THROUGH, CONVERSION, NDCG = "click_through", "conversion", "ndcg"
PROMOTE, KEEP, CONTINUE = "promote", "keep", "continue"
COMPARISON_COLUMNS = (
    "treatment",
    "metric",
    "control_value",
    "treatment_value",
    "difference",
    "relative",
    "p_value",
)


@dataclass(frozen=True)
class AnalysisConfig:
    """How outcomes are attributed and judged."""

    window: pd.Timedelta = pd.Timedelta(hours=24)
    k: int = 10
    alpha: float = 0.05  # family-wise: split over the comparisons with the control
    min_users: int = 100  # exposed users each variant needs before a verdict

    def __post_init__(self) -> None:
        if self.window <= pd.Timedelta(0):
            raise ValueError(f"the attribution window must be positive, got {self.window}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {self.alpha!r}")
        if self.k < 1 or self.min_users < 1:
            raise ValueError(f"k and min_users must be at least 1, got {self.k}, {self.min_users}")


@dataclass(frozen=True)
class Verdict:
    decision: str  # promote, keep or continue
    variant: str  # the variant to serve from now on (the control unless one wins)
    text: str


@dataclass(frozen=True)
class ExperimentResults:
    """Per-variant figures, each treatment against the control, and the verdict."""

    variants: pd.DataFrame  # one row per variant
    comparisons: pd.DataFrame  # one row per (treatment, metric)
    verdict: Verdict
    attributed_events: int


def attribute(exposures: pd.DataFrame, events: pd.DataFrame, window: pd.Timedelta) -> pd.DataFrame:
    """Events credited to an exposure: (exposure_id, item_id, shown, engaged, converted)."""
    columns = [EXPOSURE_ID, ITEM_ID, "shown", "engaged", "converted"]
    if exposures.empty or events.empty:
        flags = {flag: pd.Series(dtype=bool) for flag in columns[2:]}
        return pd.DataFrame({EXPOSURE_ID: [], ITEM_ID: pd.Series(dtype=str), **flags})
    # merge_asof needs both clocks in one resolution (the serving store and DuckDB differ).
    served = exposures[[USER_ID, SERVED_AT, EXPOSURE_ID]].astype(
        {USER_ID: str, SERVED_AT: "datetime64[ns]"}
    )
    served = served.sort_values(SERVED_AT, kind="stable")
    happened = events[events[USER_ID].astype(str).isin(set(served[USER_ID]))]
    happened = happened.astype({USER_ID: str, ITEM_ID: str, OCCURRED_AT: "datetime64[ns]"})
    happened = happened.sort_values(OCCURRED_AT, kind="stable")
    credited = pd.merge_asof(
        happened,
        served,
        left_on=OCCURRED_AT,
        right_on=SERVED_AT,
        by=USER_ID,
        direction="backward",
        tolerance=window,
    ).dropna(subset=[EXPOSURE_ID])
    shown_items = exposures[[EXPOSURE_ID, ITEMS]].explode(ITEMS).dropna()
    shown_pairs = set(zip(shown_items[EXPOSURE_ID], shown_items[ITEMS].astype(str), strict=True))
    credited[EXPOSURE_ID] = credited[EXPOSURE_ID].astype(exposures[EXPOSURE_ID].dtype)
    credited["shown"] = [
        pair in shown_pairs for pair in zip(credited[EXPOSURE_ID], credited[ITEM_ID], strict=True)
    ]
    kind = credited[EVENT_TYPE].astype(str)
    rating = pd.to_numeric(credited.get(VALUE), errors="coerce")
    credited["engaged"] = ~kind.isin(NOT_ENGAGEMENT)
    credited["converted"] = kind.isin(CONVERSION_EVENTS) | (
        (kind == "rate") & (rating >= POSITIVE_RATING)
    )
    return credited[columns].reset_index(drop=True)


def analyse(
    exposures: pd.DataFrame,
    events: pd.DataFrame,
    variant_names: list[str],
    config: AnalysisConfig | None = None,
) -> ExperimentResults:
    """Per-variant click-through, conversion and NDCG@k, tests against the first variant, verdict.

    ``exposures``: exposure_id, variant, user_id, items (lists, best first), served_at.
    ``events``: user_id, item_id, event_type, value, occurred_at (same clock as served_at).
    """
    config = config or AnalysisConfig()
    credited = attribute(exposures, events, config.window)
    per_exposure = exposures[[EXPOSURE_ID, VARIANT, USER_ID]].copy()
    outcome = credited[credited["shown"]].groupby(EXPOSURE_ID)[["engaged", "converted"]].any()
    outcome = outcome.reindex(per_exposure[EXPOSURE_ID], fill_value=False)
    for column in ("engaged", "converted"):
        per_exposure[column] = outcome[column].to_numpy(dtype=bool)
    per_exposure[NDCG] = per_exposure[EXPOSURE_ID].map(
        _exposure_ndcg(exposures, credited, config.k)
    )
    per_user = per_exposure.groupby([VARIANT, USER_ID]).agg(
        exposures=(EXPOSURE_ID, "size"),
        clicked=("engaged", "any"),
        converted=("converted", "any"),
        ndcg=(NDCG, "mean"),  # over the user's exposures followed by engagement
    )
    rows = []
    for name in variant_names:
        users = per_user.loc[name] if name in per_user.index.get_level_values(0) else None
        rows.append(_variant_row(name, users, config.k))
    table = pd.DataFrame(rows)
    comparisons = _comparisons(table, per_user, variant_names)
    verdict = judge(table, comparisons, config)
    return ExperimentResults(table, comparisons, verdict, int(len(credited)))


def two_proportion_z_test(successes_a: int, n_a: int, successes_b: int, n_b: int) -> float:
    """Two-sided p-value that two proportions differ (pooled z-test); 1.0 when undecidable."""
    if n_a < 1 or n_b < 1:
        return 1.0
    pooled = (successes_a + successes_b) / (n_a + n_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if spread == 0:
        return 1.0
    z = (successes_b / n_b - successes_a / n_a) / spread
    from scipy import stats  # here: scipy.stats costs every process loading the code 0.4 s

    return float(2 * stats.norm.sf(abs(z)))


def judge(table: pd.DataFrame, comparisons: pd.DataFrame, config: AnalysisConfig) -> Verdict:
    """Promote a treatment whose click-through beats the control's significantly, else say why."""
    control = table.iloc[0]
    short = table[table["users"] < config.min_users]
    if not short.empty:
        counts = ", ".join(f"{row.variant} {row.users}" for row in table.itertuples())
        return Verdict(
            CONTINUE,
            control[VARIANT],
            f"too few exposed users yet ({counts}; {config.min_users} per variant needed): "
            "keep collecting",
        )
    level = config.alpha / max(len(table) - 1, 1)
    clicks = comparisons[comparisons["metric"] == CLICK_THROUGH]
    better = clicks[(clicks["p_value"] < level) & (clicks["difference"] > 0)]
    if not better.empty:
        best = better.sort_values("treatment_value", ascending=False).iloc[0]
        return Verdict(PROMOTE, best["treatment"], _sentence(best, control[VARIANT], "promote"))
    worse = clicks[(clicks["p_value"] < level) & (clicks["difference"] < 0)]
    if len(worse) == len(clicks) and not clicks.empty:
        first = worse.iloc[0]
        return Verdict(KEEP, control[VARIANT], _sentence(first, control[VARIANT], "keep"))
    shown = "; ".join(
        f"{row.treatment} vs {control[VARIANT]}: click-through {_relative_text(row.relative)}, "
        f"p={row.p_value:.2g}"
        for row in clicks.itertuples()
    )
    return Verdict(
        CONTINUE, control[VARIANT], f"no significant difference yet ({shown}): keep collecting"
    )


def _exposure_ndcg(exposures: pd.DataFrame, credited: pd.DataFrame, k: int) -> pd.Series:
    """NDCG@k of each exposed list against the items engaged with in its window."""
    truth = credited.loc[credited["engaged"], [EXPOSURE_ID, ITEM_ID]].rename(
        columns={EXPOSURE_ID: USER_ID}
    )
    if truth.empty:
        return pd.Series(dtype=float)
    lists = exposures[[EXPOSURE_ID, ITEMS]].explode(ITEMS).dropna()
    lists[RANK] = lists.groupby(EXPOSURE_ID).cumcount() + 1
    lists = lists.rename(columns={EXPOSURE_ID: USER_ID, ITEMS: ITEM_ID}).astype({ITEM_ID: str})
    return ndcg_per_user(lists, truth, k)


def _variant_row(name: str, users: pd.DataFrame | None, k: int) -> dict[str, object]:
    if users is None or users.empty:
        return {
            VARIANT: name,
            "users": 0,
            "exposures": 0,
            "clicked_users": 0,
            "converted_users": 0,
            CLICK_THROUGH: np.nan,
            CONVERSION: np.nan,
            f"ndcg@{k}": np.nan,
            "ndcg_users": 0,
        }
    return {
        VARIANT: name,
        "users": len(users),
        "exposures": int(users["exposures"].sum()),
        "clicked_users": int(users["clicked"].sum()),
        "converted_users": int(users["converted"].sum()),
        CLICK_THROUGH: float(users["clicked"].mean()),
        CONVERSION: float(users["converted"].mean()),
        f"ndcg@{k}": float(users[NDCG].mean()) if users[NDCG].notna().any() else np.nan,
        "ndcg_users": int(users[NDCG].notna().sum()),
    }


def _comparisons(
    table: pd.DataFrame, per_user: pd.DataFrame, variant_names: list[str]
) -> pd.DataFrame:
    control = table.iloc[0]
    ndcg_column = next(column for column in table.columns if column.startswith("ndcg@"))
    rows = []
    for treatment in table.iloc[1:].to_dict("records"):
        for metric, successes in (
            (CLICK_THROUGH, "clicked_users"),
            (CONVERSION, "converted_users"),
        ):
            p_value = two_proportion_z_test(
                int(control[successes]),
                int(control["users"]),
                int(treatment[successes]),
                int(treatment["users"]),
            )
            rows.append(_comparison(control, treatment, metric, metric, p_value))
        rows.append(
            _comparison(
                control,
                treatment,
                NDCG,
                ndcg_column,
                _welch(per_user, variant_names[0], treatment[VARIANT]),
            )
        )
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def _comparison(control, treatment, metric: str, column: str, p_value: float) -> dict[str, object]:
    control_value, treatment_value = float(control[column]), float(treatment[column])
    difference = treatment_value - control_value
    return {
        "treatment": treatment[VARIANT],
        "metric": metric,
        "control_value": control_value,
        "treatment_value": treatment_value,
        "difference": difference,
        "relative": difference / control_value if control_value else np.nan,
        "p_value": p_value,
    }


def _welch(per_user: pd.DataFrame, control: str, treatment: str) -> float:
    """Welch's t-test p-value on users' NDCG; 1.0 with fewer than two values a side."""
    values = [
        per_user.loc[name, NDCG].dropna().to_numpy()
        if name in per_user.index.get_level_values(0)
        else np.array([])
        for name in (control, treatment)
    ]
    if min(len(value) for value in values) < 2:
        return 1.0
    if all(np.ptp(value) == 0 for value in values):  # no spread: the test is undefined
        return 1.0 if values[0][0] == values[1][0] else 0.0
    from scipy import stats

    result = stats.ttest_ind(values[0], values[1], equal_var=False)
    return 1.0 if np.isnan(result.pvalue) else float(result.pvalue)


def _relative_text(relative: float) -> str:
    """+12% / -3%, or "from 0" when the control's value was 0."""
    return f"{relative:+.0%}" if np.isfinite(relative) else "from 0"


def _sentence(row: pd.Series, control: str, action: str) -> str:
    direction = "higher" if row["difference"] > 0 else "lower"
    relative = row["relative"]
    size = f"{abs(relative):.0%} {direction}" if np.isfinite(relative) else f"{direction} (from 0)"
    evidence = (
        f"{row['treatment']}'s click-through is {size} than {control}'s "
        f"({row['treatment_value']:.3f} vs {row['control_value']:.3f}, p={row['p_value']:.2g})"
    )
    if action == "promote":
        return f"{evidence}: promote {row['treatment']}"
    return f"{evidence}: keep {control}"
