"""Request-time personalisation: the pure re-ranking, and GET /recommendations after POST /events
on each serving-store backend (published lists never change)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from ml.rules import RankingRules
from orchestration.serving.api import ApiLimits, create_app
from orchestration.serving.personalise import event_time, fill_up, personalise, signal_items
from orchestration.serving.store import ServingStore
from orchestration.settings import PROJECT_ROOT, Settings
from tests.orchestration.serving.test_api import free_port

GENERATED = datetime(2026, 1, 1, 12, 0, 0)
WEIGHTS = {"impression": 0.0, "view": 1.0, "click": 2.0, "purchase": 5.0, "rate": 4.0}
TITLES = {"a": "Alpha", "b": "Beta", "c": "Gamma"}
# What a full build publishes for the item a user just touched: related items by item.
RELATED = [
    {"item_id": "a", "related_item_id": "r1", "score": 0.9, "reason": "often viewed together"},
    {"item_id": "a", "related_item_id": "r2", "score": 0.6, "reason": "often viewed together"},
    {"item_id": "b", "related_item_id": "r3", "score": 0.8, "reason": "often viewed together"},
    {"item_id": "c", "related_item_id": "r4", "score": 0.3, "reason": "similar text"},
]
LIST_SCORES = {"i1": 0.9, "i2": 0.8, "i3": 0.7, "i4": 0.6, "i5": 0.5}
CANDIDATE_SCORES = {**LIST_SCORES, "i6": 0.4, "i7": 0.3, "i8": 0.2}


def ranked(user: str | None, scores: dict[str, float], reason: str, version: str) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "rank": range(1, len(scores) + 1),
            "item_id": list(scores),
            "score": list(scores.values()),
            "reason": reason,
            "model_version": version,
            "generated_at": GENERATED,
        }
    )
    if user is not None:
        frame.insert(0, "user_id", user)
    return frame


def click(item: str, minute: int, kind: str = "click", **extra: object) -> dict[str, object]:
    return {
        "item_id": item,
        "event_type": kind,
        "value": None,
        "occurred_at": datetime(2026, 1, 2, 9, minute),
        **extra,
    }


# ---------------------------------------------------------------------------------------------
# The pure re-ranking


def test_a_new_users_clicks_rank_what_is_related_newest_first() -> None:
    events = [click("a", 0), click("b", 1), click("c", 2)]
    rows = personalise(
        [], [], events, RELATED, TITLES, event_weights=WEIGHTS, rules=RankingRules(), k=10
    )
    # c is newest (weight 1), b 0.8, a 0.64: r3 0.8*0.8, r1 0.9*0.64, r2 0.6*0.64, r4 0.3,
    # each times the boost (0.3).
    assert [row["item_id"] for row in rows] == ["r3", "r1", "r2", "r4"]
    assert [row["score"] for row in rows] == pytest.approx([0.192, 0.1728, 0.1152, 0.09])
    assert [row["reason"] for row in rows] == [
        "because you just clicked Beta",
        "because you just clicked Alpha",
        "because you just clicked Alpha",
        "because you just clicked Gamma",
    ]


def test_fill_up_adds_unconsumed_fallback_rows_below_the_last_score() -> None:
    events = [click("hot-1", 0)]
    rows = [{"item_id": "r1", "score": 0.5, "reason": "because you just clicked Alpha"}]
    fallback = [
        {"item_id": item, "score": score, "reason": "popular now"}
        for item, score in (("hot-1", 9.0), ("r1", 8.0), ("hot-2", 7.0), ("hot-3", 0.1))
    ]
    filled = fill_up(rows, fallback, events, RankingRules(), 3)
    assert [row["item_id"] for row in filled] == ["r1", "hot-2", "hot-3"]
    assert [row["score"] for row in filled] == [0.5, 0.5, 0.1]


def test_a_consumed_item_leaves_and_the_next_candidate_moves_in() -> None:
    published = ranked("u1", LIST_SCORES, "because you viewed X", "v1").to_dict("records")
    candidates = ranked("u1", CANDIDATE_SCORES, "similar to Y", "v1").to_dict("records")
    events = [click("i1", 0, "purchase"), click("i3", 1, "rate", value=5.0)]
    rows = personalise(
        published, candidates, events, [], {}, event_weights=WEIGHTS, rules=RankingRules(), k=5
    )
    assert [row["item_id"] for row in rows] == ["i2", "i4", "i5", "i6", "i7"]
    assert rows[0]["reason"] == "because you viewed X"  # the published reason stays


def test_a_click_moves_as_the_feedback_rules_say() -> None:
    published = ranked("u1", {"i1": 0.9, "i2": 0.85}, "x", "v1").to_dict("records")
    # Default rules: a click is consumption, the item leaves.
    rows = personalise(
        published, [], [click("i1", 0)], [], {}, event_weights=WEIGHTS, rules=RankingRules(), k=2
    )
    assert [row["item_id"] for row in rows] == ["i2"]
    # Keeping consumed items: a click without conversion multiplies by 0.9 (0.81 < 0.85).
    keep = RankingRules(exclude_consumed=False)
    rows = personalise(
        published, [], [click("i1", 0)], [], {}, event_weights=WEIGHTS, rules=keep, k=2
    )
    assert [(row["item_id"], row["score"]) for row in rows] == [
        ("i2", 0.85),
        ("i1", pytest.approx(0.81)),
    ]
    # A purchase after the click converts it: no demotion, but a purchase excludes the item.
    converted = [click("i1", 0), click("i1", 1, "add_to_cart")]
    rows = personalise(published, [], converted, [], {}, event_weights=WEIGHTS, rules=keep, k=2)
    assert [row["item_id"] for row in rows] == ["i1", "i2"]


def test_signals_skip_impressions_and_low_ratings_and_keep_the_newest_verb() -> None:
    events = [
        click("a", 0, "view"),
        click("b", 1, "impression"),
        click("c", 2, "rate", value=1.0),
        click("a", 3, "click"),
    ]
    assert signal_items(events, WEIGHTS, RankingRules()) == [("a", "clicked")]


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("2026-01-02T09:30:00Z", datetime(2026, 1, 2, 9, 30)),
        ("2026-01-02T10:30:00+01:00", datetime(2026, 1, 2, 9, 30)),
        ("2026-01-02 09:30", datetime(2026, 1, 2, 9, 30)),
        (1767346200, datetime(2026, 1, 2, 9, 30)),
        (1767346200000, datetime(2026, 1, 2, 9, 30)),
        ("1767346200", datetime(2026, 1, 2, 9, 30)),
        ("20260102", datetime(2026, 1, 2)),
        (20260102, datetime(2026, 1, 2)),
        ("20261302", datetime(1970, 8, 23, 12, 8, 22)),  # no month 13: epoch seconds
        ("yesterday", None),
        (True, None),
        (float("nan"), None),
    ],
)
def test_event_times_are_read_as_ingestion_reads_them(
    timestamp: object, expected: datetime | None
) -> None:
    assert event_time(timestamp) == expected


# ---------------------------------------------------------------------------------------------
# Through the API, on each serving-store backend


@pytest.fixture
def store_settings(settings: Settings, serving_url: str) -> Settings:
    return dataclasses.replace(settings, serving_url=serving_url)


def publish_everything(settings: Settings) -> None:
    store = ServingStore(settings.serving_url)
    try:
        store.publish(
            ranked("u1", LIST_SCORES, "because you viewed X", "v1"),
            trending=ranked(None, {f"hot-{n}": 10.0 - n for n in range(1, 6)}, "popular", "t1"),
            related=pd.DataFrame(RELATED).assign(
                rank=[1, 2, 1, 1], model_version="v1", generated_at=GENERATED
            ),
            candidates=ranked("u1", CANDIDATE_SCORES, "similar to Y", "v1"),
            titles=pd.DataFrame({"item_id": list(TITLES), "title": list(TITLES.values())}),
        )
    finally:
        store.dispose()


@pytest.fixture
def client(store_settings: Settings) -> Iterator[TestClient]:
    publish_everything(store_settings)
    with TestClient(create_app(store_settings, ApiLimits())) as test_client:
        yield test_client


def post(client: TestClient, user: str, events: list[tuple[str, str]], **extra: object) -> None:
    body = [
        {
            "user_id": user,
            "item_id": item,
            "event_type": kind,
            "timestamp": f"2026-01-02T09:{minute:02d}:00Z",
            **extra,
        }
        for minute, (item, kind) in enumerate(events)
    ]
    response = client.post("/events", json=body)
    assert response.status_code == 202, response.text


def served(client: TestClient, user: str, k: int = 5) -> dict:
    response = client.get(f"/recommendations/{user}", params={"k": k})
    assert response.status_code == 200, response.text
    return response.json()


def published_rows(settings: Settings) -> list[dict]:
    store = ServingStore(settings.serving_url)
    try:
        candidates, _related, _titles = store.personalisation_inputs("u1", [], 1)
        return [store.list_rows("u1"), candidates, store.trending_rows()]
    finally:
        store.dispose()


def test_a_new_users_three_clicks_give_a_personal_list_naming_them(
    client: TestClient, store_settings: Settings
) -> None:
    assert served(client, "newbie")["items"][0]["item_id"] == "hot-1"  # trending before
    post(client, "newbie", [("a", "click"), ("b", "click"), ("c", "click")])
    body = served(client, "newbie", k=6)
    assert body["personalised"] is True
    assert body["fresh_events"] == 3
    assert [item["item_id"] for item in body["items"]] == ["r3", "r1", "r2", "r4", "hot-1", "hot-2"]
    reasons = [item["reason"] for item in body["items"][:4]]
    assert reasons == [
        "because you just clicked Beta",
        "because you just clicked Alpha",
        "because you just clicked Alpha",
        "because you just clicked Gamma",
    ]
    assert body["model_version"] == "t1"  # the fallback's origin


def test_a_consumed_item_leaves_at_once_and_the_published_lists_stay(
    client: TestClient, store_settings: Settings
) -> None:
    before = published_rows(store_settings)
    assert [item["item_id"] for item in served(client, "u1")["items"]][:2] == ["i1", "i2"]
    post(client, "u1", [("i1", "purchase")])
    body = served(client, "u1")
    assert [item["item_id"] for item in body["items"]] == ["i2", "i3", "i4", "i5", "i6"]
    assert body["personalised"] is True
    post(client, "u1", [("i2", "rate")], value=4.5)
    post(client, "u1", [("i3", "click")])  # a click is consumption under the default rules
    assert [item["item_id"] for item in served(client, "u1")["items"]] == [
        "i4",
        "i5",
        "i6",
        "i7",
        "i8",
    ]
    assert published_rows(store_settings) == before


def test_ignored_impressions_demote_an_item_as_the_rules_say(client: TestClient) -> None:
    post(client, "u1", [("i2", "impression")] * 4)
    body = served(client, "u1")
    # 4 unclicked impressions, 2 free: 0.8 x 0.85 ** 2 = 0.578, between i4 (0.6) and i5 (0.5).
    assert [item["item_id"] for item in body["items"]] == ["i1", "i3", "i4", "i2", "i5"]
    assert body["items"][3]["score"] == pytest.approx(0.578)
    assert body["items"][3]["reason"] == "because you viewed X"


def test_a_known_users_click_moves_related_items_up(client: TestClient) -> None:
    post(client, "u1", [("a", "view")])
    items = served(client, "u1", k=10)["items"]
    # r1 and r2 are no candidates of u1's; the view gives them 0.3 times their related score
    # (0.27, 0.18): each enters above the candidates it now outranks (i8, 0.2), below the
    # ranker's better-scored ones.
    assert [item["item_id"] for item in items] == [
        *("i1", "i2", "i3", "i4", "i5", "i6", "i7"),
        *("r1", "i8", "r2"),
    ]
    assert items[7]["reason"] == "because you just viewed Alpha"


@pytest.mark.parametrize(
    "body",
    [
        [{"user_id": "u1", "item_id": "i1", "event_type": "purchase"}],  # no timestamp
        [
            {"user_id": "u1", "item_id": "i1", "event_type": "purchase", "timestamp": 1},
            {"user_id": "u1", "item_id": "i2", "event_type": "teleport", "timestamp": 1},
        ],
        {"user_id": "u1"},
    ],
    ids=["missing-field", "one-bad-event", "not-an-array"],
)
def test_refused_events_change_nothing(client: TestClient, body: object) -> None:
    before = served(client, "u1")
    assert client.post("/events", json=body).status_code == 422
    after = served(client, "u1")
    assert after == before
    assert after["personalised"] is False


def test_a_publish_that_reflects_the_events_ends_their_request_time_effect(
    client: TestClient, store_settings: Settings
) -> None:
    post(client, "u1", [("i1", "purchase")])
    response = client.post(
        "/events",
        json=[{"user_id": "u1", "item_id": "i2", "event_type": "purchase", "timestamp": 7}],
    )
    first_file = response.json()["file"]
    store = ServingStore(store_settings.serving_url)
    try:
        loaded_at = datetime(2026, 1, 3)
        assert store.mark_loaded({first_file: loaded_at}) == {first_file: 1}
        # A refresh of u1 that covers loads up to loaded_at: i2's purchase is in the new list.
        new_list = ranked("u1", {"i1": 0.9, "i3": 0.7}, "refreshed", "v2")
        store.publish(new_list, users=["u1"], events_loaded_through=loaded_at)
        assert [event["item_id"] for event in store.recent_events("u1")] == ["i1"]
    finally:
        store.dispose()
    body = served(client, "u1")
    # i1's purchase still applies; the list's candidates went with the old list, so trending
    # fills up.
    assert [item["item_id"] for item in body["items"]] == ["i3", "hot-1", "hot-2", "hot-3", "hot-4"]
    assert body["fresh_events"] == 1


def test_two_serve_workers_reflect_a_post_in_the_next_read(
    settings: Settings, tmp_path: Path
) -> None:
    publish_everything(settings)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    command = [sys.executable, "-m", "orchestration.app.cli", "serve", "--port", str(port)]
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [*command, "--workers", "2"],
            cwd=PROJECT_ROOT,
            env=dict(os.environ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the workers are its children: stopped with it
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"server exited early:\n{log_path.read_text()}"
            try:
                if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"no answer in 60 s:\n{log_path.read_text()}"
            time.sleep(0.2)
        with httpx.Client(base_url=base_url, timeout=5) as client:
            for round_number, item in enumerate(("i1", "i2", "i3")):
                event = {"user_id": "u1", "item_id": item, "event_type": "purchase"}
                posted = client.post("/events", json=[{**event, "timestamp": round_number}])
                assert posted.status_code == 202
                # A new connection each time, so that either worker may answer.
                body = httpx.get(f"{base_url}/recommendations/u1", params={"k": 3}).json()
                assert item not in [entry["item_id"] for entry in body["items"]]
                assert body["fresh_events"] == round_number + 1
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert "2 worker(s)" in log_path.read_text()


def test_the_openapi_description_documents_request_time_personalisation(
    client: TestClient,
) -> None:
    spec = client.get("/openapi.json").json()
    description = spec["paths"]["/recommendations/{user_id}"]["get"]["description"]
    assert "Request-time personalisation" in description
    assert "because you just viewed" in description
    fields = spec["components"]["schemas"]["RecommendationList"]["properties"]
    assert {"personalised", "fresh_events"} <= set(fields)
