"""Tiny hand-built worlds shared by the pipeline tests: a few users, items, pairs and vectors.

The shop (`shop_snapshot`): popularity_all is i2 6 > i1 5 > i4 4 > i3 3 > i5 2 > i6 1 (views,
each by its own user, all in February 2024); i9 is in the catalog with a text vector and no
event (a new item). Co-visitation pairs, all dated 2024-02-20: i1 -> i3 weighs 3, i1 -> i4
weighs 1, i2 -> i4 weighs 4. The shopper `x` viewed i2 (27 Feb) then i1 (28 Feb).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml.constants import DEFAULT_EVENT_WEIGHTS, EVENT_TYPE, ITEM_ID, OCCURRED_AT, USER_ID, WEIGHT
from ml.pipeline.snapshot import Behaviour, Snapshot

SHOP_AS_OF = pd.Timestamp("2024-03-01")
SHOP_POPULARITY = {"i2": 6, "i1": 5, "i4": 4, "i3": 3, "i5": 2, "i6": 1}
NEW_ITEM = "i9"
SHOP_VECTORS = {
    "i1": [1.0, 0.0, 0.0, 0.0],
    "i2": [0.8, 0.6, 0.0, 0.0],
    "i3": [0.0, 1.0, 0.0, 0.0],
    "i4": [0.0, 0.0, 1.0, 0.0],
    "i5": [0.0, 0.0, 0.6, 0.8],
    "i6": [0.0, 0.0, 0.0, 1.0],
    NEW_ITEM: [0.6, 0.8, 0.0, 0.0],
}
SHOP_PAIRS = [("i1", "i3", 3.0), ("i1", "i4", 1.0), ("i2", "i4", 4.0)]
PAIR_DATE = pd.Timestamp("2024-02-20")


def events(rows: list[tuple]) -> pd.DataFrame:
    """Events from (user, item, event_type, time) tuples; the weight follows the event type."""
    frame = pd.DataFrame(rows, columns=[USER_ID, ITEM_ID, EVENT_TYPE, OCCURRED_AT])
    frame[WEIGHT] = frame[EVENT_TYPE].map(DEFAULT_EVENT_WEIGHTS).astype(float)
    frame[OCCURRED_AT] = pd.to_datetime(frame[OCCURRED_AT], format="ISO8601")
    return frame


def pairs(rows: list[tuple]) -> pd.DataFrame:
    """Co-visitation pair rows from (item, related item, pair date, weight) tuples."""
    frame = pd.DataFrame(rows, columns=["item_id", "related_item_id", "pair_date", "pair_weight"])
    frame["pair_date"] = pd.to_datetime(frame["pair_date"]).dt.date
    return frame


def vectors(by_item: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame.from_dict(by_item, orient="index", dtype=float)


def shop_events() -> pd.DataFrame:
    rows = []
    for item, count in SHOP_POPULARITY.items():
        for n in range(count):
            rows.append((f"p{item}{n}", item, "view", f"2024-02-{10 + n:02d} 12:00"))
    return events(rows)


def shop_items() -> pd.DataFrame:
    ids = [*SHOP_POPULARITY, NEW_ITEM]
    return pd.DataFrame({ITEM_ID: ids, "title": [f"Item {item[1:]}" for item in ids]})


def shop_snapshot(**changes) -> Snapshot:
    """The shop as of 1 March 2024; keyword arguments replace its parts."""
    parts = {
        "interactions": shop_events(),
        "items": shop_items(),
        "vectors": vectors(SHOP_VECTORS),
        "covisitation": pairs([(a, b, PAIR_DATE, w) for a, b, w in SHOP_PAIRS]),
        "as_of": SHOP_AS_OF,
    }
    parts.update(changes)
    return Snapshot(**parts)


def shopper(*extra: tuple) -> Behaviour:
    """User x, who viewed i2 on 27 February and then i1 on 28 February (plus `extra` events)."""
    rows = [("x", "i2", "view", "2024-02-27 10:00"), ("x", "i1", "view", "2024-02-28 10:00")]
    return Behaviour(events([*rows, *extra]))


def session_log(
    users: int = 60, groups: int = 3, items_per_group: int = 8, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(events, co-visitation pairs) of users whose sessions follow their group's item order.

    User u belongs to group u % groups and views the group's items in one fixed order, one an
    hour, starting at a random day of 60; the pairs are the item_covisitation mart's rule (each
    event with the user's next 5 within 24 hours: forward 1, backward 0.5, dated by the later).
    """
    random = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01")
    rows = []
    for user in range(users):
        group = user % groups
        first = start + pd.Timedelta(days=int(random.integers(0, 60)), hours=user % 12)
        for place in range(items_per_group):
            rows.append(
                (f"u{user:02d}", f"g{group}_{place}", "view", first + pd.Timedelta(hours=place))
            )
    log = events(rows)
    found = []
    for _, visits in log.sort_values(OCCURRED_AT).groupby(USER_ID):
        items, times = visits[ITEM_ID].to_numpy(), visits[OCCURRED_AT].to_numpy()
        for earlier in range(len(items)):
            for later in range(earlier + 1, min(earlier + 6, len(items))):
                if times[later] - times[earlier] > np.timedelta64(24, "h"):
                    break
                date = pd.Timestamp(times[later]).normalize()
                found.append((items[earlier], items[later], date, 1.0))
                found.append((items[later], items[earlier], date, 0.5))
    covisitation = (
        pairs(found)
        .groupby(["item_id", "related_item_id", "pair_date"], as_index=False)["pair_weight"]
        .sum()
    )
    return log, covisitation


def session_snapshot(users: int = 60, seed: int = 0) -> Snapshot:
    """session_log as a snapshot, with 4-d text vectors that put each group on its own axis."""
    log, covisitation = session_log(users=users, seed=seed)
    ids = sorted(log[ITEM_ID].unique())
    text = {}
    for item in ids:
        group, place = (int(part) for part in item[1:].split("_"))
        text[item] = [float(group == axis) for axis in range(3)] + [0.1 * place]
    items = pd.DataFrame({ITEM_ID: ids, "title": ids})
    return Snapshot(log, items, vectors=vectors(text), covisitation=covisitation)
