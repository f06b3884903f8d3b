from __future__ import annotations

import dataclasses
import gzip
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from ml.rules import REASON_TRENDING_CONTEXT
from orchestration.ingest.landing import pending_files, read_landed_file, validate_events
from orchestration.serving import api
from orchestration.serving.api import ApiLimits, create_app
from orchestration.serving.store import ServingStore
from orchestration.settings import PROJECT_ROOT, Settings

GENERATED = datetime(2026, 1, 1, 12, 0, 0)
TRENDING_GENERATED = datetime(2026, 1, 1, 12, 30, 0)
API_FILE_NAME = re.compile(r"^api-\d{8}T\d{12}Z-[0-9a-f]{8}\.jsonl$")

EVENTS = [
    {"user_id": "007", "item_id": "042", "event_type": "view", "timestamp": "2026-01-01T10:00:00Z"},
    {
        "user_id": "007",
        "item_id": "042",
        "event_type": "rate",
        "timestamp": 1767261600,
        "value": 4.5,
        "event_id": "e-2",
        "session_id": "s-1",
        "context": {"device": "phone", "page": "home"},
        "campaign": "spring",
    },
    {"user_id": "u2", "item_id": "7", "event_type": "purchase", "timestamp": "2026-01-01 11:00"},
]


def make_lists(users: list[str], k: int) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "user_id": user,
                "rank": rank,
                "item_id": f"{user}-item-{rank}",
                "score": 1.0 / rank,
                "reason": "because you watched X",
                "model_version": "v1",
                "generated_at": GENERATED,
            }
            for user in users
            for rank in range(1, k + 1)
        ]
    )


def make_trending(k: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "rank": list(range(1, k + 1)),
            "item_id": [f"hot-{rank}" for rank in range(1, k + 1)],
            "score": [10.0 - rank for rank in range(1, k + 1)],
            "reason": ["trending now"] * k,
            "model_version": ["trending-v1"] * k,
            "generated_at": [TRENDING_GENERATED] * k,
        }
    )


def publish(settings: Settings, *, trending: bool = True) -> None:
    store = ServingStore(settings.serving_url)
    try:
        store.publish(make_lists(["u1", "007"], 5), trending=make_trending(4) if trending else None)
    finally:
        store.dispose()


@pytest.fixture
def store_settings(settings: Settings, serving_url: str) -> Settings:
    """The temporary settings, on each serving-store backend."""
    return dataclasses.replace(settings, serving_url=serving_url)


@pytest.fixture
def client(store_settings: Settings) -> Iterator[TestClient]:
    publish(store_settings)
    with TestClient(create_app(store_settings, ApiLimits())) as test_client:
        yield test_client


def events_folder(settings: Settings) -> Path:
    return settings.landing_folder("events")


def landed(settings: Settings) -> list[str]:
    """Every file in the events landing folder, hidden ones included."""
    return sorted(path.name for path in events_folder(settings).iterdir())


# ---------------------------------------------------------------------------------------------
# GET /recommendations/{user_id}


def test_known_user_gets_their_list_best_first(client: TestClient) -> None:
    response = client.get("/recommendations/u1")
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == "u1"
    assert [item["item_id"] for item in body["items"]] == [
        f"u1-item-{rank}" for rank in range(1, 6)
    ]
    assert body["items"][0] == {
        "item_id": "u1-item-1",
        "score": 1.0,
        "reason": "because you watched X",
    }
    assert body["model_version"] == "v1"
    assert body["generated_at"] == "2026-01-01T12:00:00Z"


def test_k_limits_the_list(client: TestClient) -> None:
    body = client.get("/recommendations/u1", params={"k": 2}).json()
    assert [item["item_id"] for item in body["items"]] == ["u1-item-1", "u1-item-2"]


def test_unknown_user_gets_trending(client: TestClient) -> None:
    response = client.get("/recommendations/someone-new", params={"k": 3})
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == "someone-new"
    assert [item["item_id"] for item in body["items"]] == ["hot-1", "hot-2", "hot-3"]
    assert {item["reason"] for item in body["items"]} == {"trending now"}
    assert body["model_version"] == "trending-v1"
    assert body["generated_at"] == "2026-01-01T12:30:00Z"


def test_ids_are_text(client: TestClient) -> None:
    assert client.get("/recommendations/007").json()["items"][0]["item_id"] == "007-item-1"
    assert client.get("/recommendations/7").json()["model_version"] == "trending-v1"


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/recommendations/u%001", "string_pattern_mismatch"),
        ("/recommendations/u%091", "string_pattern_mismatch"),
        ("/recommendations/" + "u" * 256, "string_too_long"),
        ("/items/i%00/similar", "string_pattern_mismatch"),
    ],
)
def test_an_id_no_list_could_be_stored_under_is_422(
    client: TestClient, path: str, problem: str
) -> None:
    """Ids as ingestion admits them only: a NUL reached PostgreSQL and came back as a 500."""
    response = client.get(path)
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == problem


def test_an_id_of_255_characters_is_an_id(client: TestClient) -> None:
    response = client.get("/recommendations/" + "u" * 255, params={"k": 1})
    assert response.status_code == 200
    assert response.json()["model_version"] == "trending-v1"


def test_ids_may_hold_a_slash(store_settings: Settings) -> None:
    store = ServingStore(store_settings.serving_url)
    try:
        store.publish(make_lists(["tenant/7"], 3), related=make_related(["shop/i1"], 3))
    finally:
        store.dispose()
    with TestClient(create_app(store_settings, ApiLimits())) as test_client:
        body = test_client.get("/recommendations/tenant%2F7").json()
        similar = test_client.get("/items/shop%2Fi1/similar").json()
    assert body["user_id"] == "tenant/7"
    assert body["items"][0]["item_id"] == "tenant/7-item-1"
    assert similar["item_id"] == "shop/i1"
    assert similar["items"][0]["item_id"] == "shop/i1-related-1"


def test_nothing_published_is_404(store_settings: Settings) -> None:
    with TestClient(create_app(store_settings)) as test_client:
        response = test_client.get("/recommendations/u1")
    assert response.status_code == 404
    assert "nothing has been published yet" in response.json()["detail"]
    assert "freshrank build" in response.json()["detail"]


def test_unknown_user_without_trending_is_404(store_settings: Settings) -> None:
    publish(store_settings, trending=False)
    with TestClient(create_app(store_settings)) as test_client:
        assert test_client.get("/recommendations/u1").status_code == 200
        response = test_client.get("/recommendations/someone-new")
    assert response.status_code == 404
    assert "no trending list" in response.json()["detail"]


def make_context_trending(key: str, values: list[str], k: int) -> pd.DataFrame:
    """k rows per context value, item ids naming the value and the rank."""
    return pd.concat(
        [
            make_trending(k).assign(
                context_key=key,
                context_value=value,
                item_id=[f"{key}-{value}-{rank}" for rank in range(1, k + 1)],
                reason=REASON_TRENDING_CONTEXT,
            )
            for value in values
        ],
        ignore_index=True,
    )


def frozen_clock(moment: datetime) -> type[datetime]:
    """A datetime class whose now() is `moment`, for the API's request time."""

    class FrozenDatetime(datetime):
        @classmethod
        def now(cls, tz=None) -> datetime:  # noqa: ANN001 - datetime's own signature
            return moment.astimezone(tz) if tz is not None else moment

    return FrozenDatetime


@pytest.fixture
def context_client(store_settings: Settings) -> Iterator[TestClient]:
    """Lists for u1 and 007, global trending, and trending for hours 9 and 21."""
    store = ServingStore(store_settings.serving_url)
    try:
        store.publish(
            make_lists(["u1", "007"], 5),
            trending=make_trending(4),
            context_trending=make_context_trending("hour", ["9", "21"], 3),
        )
    finally:
        store.dispose()
    with TestClient(create_app(store_settings, ApiLimits())) as test_client:
        yield test_client


def served(client: TestClient, user_id: str, **params: object) -> dict:
    response = client.get(f"/recommendations/{user_id}", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def item_ids(body: dict) -> list[str]:
    return [item["item_id"] for item in body["items"]]


def test_unknown_user_with_a_context_gets_its_trending_list(
    context_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The request time says hour 21: a given context wins over it.
    monkeypatch.setattr(api, "datetime", frozen_clock(datetime(2026, 1, 1, 21, 30, tzinfo=UTC)))
    body = served(context_client, "someone-new", context="9")
    assert body["user_id"] == "someone-new"
    assert item_ids(body) == ["hour-9-1", "hour-9-2", "hour-9-3"]
    assert {item["reason"] for item in body["items"]} == {REASON_TRENDING_CONTEXT}
    assert body["model_version"] == "trending-v1"
    assert body["generated_at"] == "2026-01-01T12:30:00Z"
    assert item_ids(served(context_client, "someone-new", context="09", k=2)) == [
        "hour-9-1",
        "hour-9-2",
    ]
    assert item_ids(served(context_client, "someone-new", context="21")) == [
        "hour-21-1",
        "hour-21-2",
        "hour-21-3",
    ]


def test_unknown_user_without_a_context_follows_the_request_hour(
    context_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "datetime", frozen_clock(datetime(2026, 1, 1, 21, 30, tzinfo=UTC)))
    evening = ["hour-21-1", "hour-21-2", "hour-21-3"]
    assert item_ids(served(context_client, "someone-new")) == evening
    assert item_ids(served(context_client, "someone-new", context="")) == evening
    # No list for hour 3: the global trending list, with its own reason.
    monkeypatch.setattr(api, "datetime", frozen_clock(datetime(2026, 1, 1, 3, 0, tzinfo=UTC)))
    body = served(context_client, "someone-new", k=3)
    assert item_ids(body) == ["hot-1", "hot-2", "hot-3"]
    assert {item["reason"] for item in body["items"]} == {"trending now"}


def test_unknown_user_with_a_context_without_a_list_gets_global_trending(
    context_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "datetime", frozen_clock(datetime(2026, 1, 1, 9, 0, tzinfo=UTC)))
    for context in ("14", "evening"):
        body = served(context_client, "someone-new", context=context)
        assert item_ids(body) == ["hot-1", "hot-2", "hot-3", "hot-4"], context


def test_known_user_ignores_the_context(context_client: TestClient) -> None:
    for params in ({}, {"context": "9"}, {"context": "21"}):
        body = served(context_client, "u1", **params)
        assert item_ids(body) == [f"u1-item-{rank}" for rank in range(1, 6)]
        assert body["items"][0]["reason"] == "because you watched X"
        assert body["model_version"] == "v1"


def test_the_context_key_follows_the_settings(
    store_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = dataclasses.replace(store_settings, context_key="device")
    store = ServingStore(settings.serving_url)
    try:
        store.publish(
            make_lists(["u1"], 2),
            trending=make_trending(2),
            context_trending=pd.concat(
                [
                    make_context_trending("device", ["tv"], 2),
                    make_context_trending("hour", ["9"], 2),
                ]
            ),
        )
    finally:
        store.dispose()
    monkeypatch.setattr(api, "datetime", frozen_clock(datetime(2026, 1, 1, 9, 0, tzinfo=UTC)))
    with TestClient(create_app(settings, ApiLimits())) as test_client:
        assert item_ids(served(test_client, "new", context="tv")) == ["device-tv-1", "device-tv-2"]
        # A device cannot be read off the clock, and hour lists are not the device's.
        assert item_ids(served(test_client, "new")) == ["hot-1", "hot-2"]
        assert item_ids(served(test_client, "new", context="9")) == ["hot-1", "hot-2"]


def test_context_too_long_is_422(context_client: TestClient) -> None:
    response = context_client.get("/recommendations/new", params={"context": "9" * 256})
    assert response.status_code == 422


@pytest.mark.parametrize("k", ["0", "101", "-1", "ten"])
def test_k_out_of_range_is_422(client: TestClient, k: str) -> None:
    assert client.get("/recommendations/u1", params={"k": k}).status_code == 422


# ---------------------------------------------------------------------------------------------
# GET /items/{item_id}/similar


def make_related(items: list[str], k: int) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "item_id": item,
                "rank": rank,
                "related_item_id": f"{item}-related-{rank}",
                "score": 1.0 - rank / 10,
                "reason": "often viewed together" if rank == 1 else "similar text",
                "model_version": "v1",
                "generated_at": GENERATED,
            }
            for item in items
            for rank in range(1, k + 1)
        ]
    )


@pytest.fixture
def related_client(store_settings: Settings) -> Iterator[TestClient]:
    store = ServingStore(store_settings.serving_url)
    try:
        store.publish(make_lists(["u1"], 5), related=make_related(["i1", "007"], 12))
    finally:
        store.dispose()
    with TestClient(create_app(store_settings, ApiLimits())) as test_client:
        yield test_client


def test_similar_items_best_first(related_client: TestClient) -> None:
    response = related_client.get("/items/i1/similar")
    assert response.status_code == 200
    body = response.json()
    assert body["item_id"] == "i1"
    assert body["model_version"] == "v1"
    assert body["generated_at"] == "2026-01-01T12:00:00Z"
    # The default k is the configured top-k (10).
    assert [item["item_id"] for item in body["items"]] == [f"i1-related-{n}" for n in range(1, 11)]
    assert body["items"][0] == {
        "item_id": "i1-related-1",
        "score": pytest.approx(0.9),
        "reason": "often viewed together",
    }
    assert body["items"][1]["reason"] == "similar text"


def test_similar_items_k_and_text_ids(related_client: TestClient) -> None:
    items = related_client.get("/items/007/similar", params={"k": 3}).json()["items"]
    assert [item["item_id"] for item in items] == [
        "007-related-1",
        "007-related-2",
        "007-related-3",
    ]
    assert related_client.get("/items/7/similar").status_code == 404


def test_similar_items_of_an_unknown_item_is_404(related_client: TestClient) -> None:
    response = related_client.get("/items/nope/similar")
    assert response.status_code == 404
    assert "no published related items for item 'nope'" in response.json()["detail"]


@pytest.mark.parametrize("k", ["0", "101", "-1", "ten"])
def test_similar_items_k_out_of_range_is_422(related_client: TestClient, k: str) -> None:
    assert related_client.get("/items/i1/similar", params={"k": k}).status_code == 422


def test_similar_items_are_in_the_openapi_description(related_client: TestClient) -> None:
    operation = related_client.get("/openapi.json").json()["paths"]["/items/{item_id}/similar"]
    assert "often viewed together" in operation["get"]["description"]


# ---------------------------------------------------------------------------------------------
# POST /events


def test_good_batch_lands_as_one_json_lines_file(settings: Settings) -> None:
    with TestClient(create_app(settings)) as test_client:
        response = test_client.post("/events", json=EVENTS)
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == len(EVENTS)
    assert API_FILE_NAME.match(body["file"]), body["file"]
    assert landed(settings) == [body["file"]]
    path = events_folder(settings) / body["file"]
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == EVENTS
    assert json.loads(lines[0])["user_id"] == "007"


def test_landed_file_is_what_ingestion_loads(settings: Settings) -> None:
    with TestClient(create_app(settings)) as test_client:
        name = test_client.post("/events", json=EVENTS).json()["file"]
    path = events_folder(settings) / name
    assert pending_files("events", settings) == [path]
    frame, malformed = read_landed_file(path, "events")
    clean, quarantine = validate_events(frame, name, settings, datetime(2026, 1, 2, tzinfo=UTC))
    assert malformed.empty and quarantine.empty
    assert clean["user_id"].tolist() == ["007", "007", "u2"]
    assert clean["item_id"].tolist() == ["042", "042", "7"]
    assert json.loads(clean["attributes"].iloc[1]) == {"campaign": "spring"}


def test_each_batch_gets_its_own_file(settings: Settings) -> None:
    with TestClient(create_app(settings)) as test_client:
        first = test_client.post("/events", json=EVENTS[:1]).json()["file"]
        second = test_client.post("/events", json=EVENTS[1:]).json()["file"]
    assert first != second
    assert landed(settings) == sorted([first, second])


BAD_BATCHES = {
    "malformed JSON": (b'[{"user_id": "u1",', 400, "not valid JSON: Expecting"),
    "not UTF-8": (b'[{"user_id": "\xff"}]', 400, "not valid JSON"),
    "NaN": (
        b'[{"user_id": "u", "item_id": "i", "event_type": "rate", "timestamp": 1, "value": NaN}]',
        400,
        "NaN is not a JSON number",
    ),
    "an object": (
        json.dumps(EVENTS[0]).encode(),
        422,
        "JSON array of event objects, got a JSON object",
    ),
    "an empty array": (b"[]", 422, "empty array"),
    "not an object": (json.dumps([EVENTS[0], "view"]).encode(), 422, "event 1: expected an object"),
    "missing field": (
        json.dumps(
            [EVENTS[0], {key: EVENTS[0][key] for key in ("user_id", "item_id", "event_type")}]
        ).encode(),
        422,
        "event 1: missing 'timestamp'",
    ),
    "empty field": (
        json.dumps([{**EVENTS[0], "user_id": "  "}]).encode(),
        422,
        "event 0: empty 'user_id'",
    ),
    "null field": (
        json.dumps([{**EVENTS[0], "item_id": None}]).encode(),
        422,
        "event 0: empty 'item_id'",
    ),
    "an id that is an array": (
        json.dumps([{**EVENTS[0], "user_id": ["u1"]}]).encode(),
        422,
        "event 0: 'user_id' is a JSON array, not an id",
    ),
    "an id too long for the serving store": (
        json.dumps([EVENTS[0], {**EVENTS[1], "user_id": "u" * 256}]).encode(),
        422,
        "event 1: 'user_id' is 256 characters long; an id may be at most 255",
    ),
    "an id with a control character": (
        json.dumps([{**EVENTS[0], "item_id": "i\u00001"}]).encode(),
        422,
        "event 0: 'item_id' holds a control character",
    ),
    "unknown event type": (
        json.dumps([EVENTS[0], EVENTS[1], {**EVENTS[0], "event_type": "teleport"}]).encode(),
        422,
        "event 2: 'event_type' \"teleport\" is not one of the configured event types",
    ),
    "too many events": (json.dumps(EVENTS * 2).encode(), 413, "6 events in one batch"),
    "too large a body": (
        json.dumps([{**EVENTS[0], "padding": "x" * 2000}]).encode(),
        413,
        "over the limit",
    ),
}


@pytest.mark.parametrize("case", list(BAD_BATCHES))
def test_bad_batch_is_refused_and_nothing_is_written(settings: Settings, case: str) -> None:
    body, status_code, message = BAD_BATCHES[case]
    limits = ApiLimits(max_events=5, max_body_bytes=1000)
    with TestClient(create_app(settings, limits)) as test_client:
        response = test_client.post(
            "/events", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == status_code, response.text
    assert message in response.json()["detail"]
    assert landed(settings) == []


def test_a_gzip_body_lands_what_its_plain_body_would(settings: Settings) -> None:
    plain = json.dumps(EVENTS).encode()
    with TestClient(create_app(settings)) as test_client:
        zipped = test_client.post(
            "/events", content=gzip.compress(plain), headers={"content-encoding": "gzip"}
        )
        as_is = test_client.post("/events", content=plain)
    assert zipped.status_code == as_is.status_code == 202, zipped.text
    assert zipped.json()["accepted"] == as_is.json()["accepted"] == len(EVENTS)
    folder = events_folder(settings)
    assert (folder / zipped.json()["file"]).read_bytes() == (
        folder / as_is.json()["file"]
    ).read_bytes()


BAD_GZIP_BODIES = {
    "not gzip": (b"[]", {"content-encoding": "gzip"}, 400, "body is not valid gzip"),
    "cut short": (
        gzip.compress(json.dumps(EVENTS * 20).encode())[:60],
        {"content-encoding": "gzip"},
        400,
        "the stream ends early",
    ),
    "two streams": (
        gzip.compress(b"[") + gzip.compress(b"]"),
        {"content-encoding": "gzip"},
        400,
        "more than one gzip stream",
    ),
    # About 140 compressed bytes that hold a hundred times the 1,000-byte limit.
    "a bomb": (
        gzip.compress(b"[" + b" " * 100_000 + b"]"),
        {"content-encoding": "gzip"},
        413,
        "decompressed body of at least 1001 bytes is over the limit of 1000 bytes",
    ),
    "another encoding": (b"[]", {"content-encoding": "br"}, 415, "Content-Encoding 'br'"),
}


@pytest.mark.parametrize("case", list(BAD_GZIP_BODIES))
def test_a_bad_compressed_body_is_refused_and_nothing_is_written(
    settings: Settings, case: str
) -> None:
    body, headers, status_code, message = BAD_GZIP_BODIES[case]
    with TestClient(create_app(settings, ApiLimits(max_body_bytes=1000))) as test_client:
        response = test_client.post("/events", content=body, headers=headers)
    assert response.status_code == status_code, response.text
    assert message in response.json()["detail"]
    assert landed(settings) == []


def test_body_over_the_limit_without_content_length_is_413(settings: Settings) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"["
        for _ in range(50):
            yield json.dumps(EVENTS[0]).encode() + b","
        yield json.dumps(EVENTS[0]).encode() + b"]"

    with TestClient(create_app(settings, ApiLimits(max_body_bytes=1000))) as test_client:
        response = test_client.post("/events", content=chunks())
    assert response.status_code == 413
    assert "at least" in response.json()["detail"]
    assert landed(settings) == []


def test_many_problems_are_reported_with_a_count(settings: Settings) -> None:
    batch = [{"user_id": "u1"} for _ in range(20)]
    with TestClient(create_app(settings)) as test_client:
        response = test_client.post("/events", json=batch)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("event 0: missing 'item_id'; event 0: missing 'event_type'")
    assert "and 50 more problem(s)" in detail
    assert landed(settings) == []


def test_failed_write_leaves_no_file(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(_descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(api.os, "fsync", disk_full)
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        assert test_client.post("/events", json=EVENTS).status_code == 500
    assert landed(settings) == []


# ---------------------------------------------------------------------------------------------
# GET /health and configuration


def test_health_reports_what_is_published(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "lists": 10,
        "users": 2,
        "trending": 4,
        "generated_at": "2026-01-01T12:00:00Z",
    }


def test_health_is_503_when_the_store_fails(store_settings: Settings) -> None:
    publish(store_settings)
    with TestClient(create_app(store_settings)) as test_client:
        engine = sa.create_engine(store_settings.serving_url)
        with engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE recommendations"))
        engine.dispose()
        response = test_client.get("/health")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert "recommendations" in response.json()["error"]


def test_limits_come_from_the_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHRANK_API_MAX_EVENTS", "250")
    monkeypatch.setenv("FRESHRANK_API_MAX_BODY_BYTES", "1_000_000")
    limited = Settings.from_env()
    assert ApiLimits.from_settings(limited) == ApiLimits(max_events=250, max_body_bytes=1_000_000)
    assert ApiLimits.from_settings(settings) == ApiLimits(10_000, 5 * 1024 * 1024)
    with TestClient(create_app(limited)) as client:
        response = client.post("/events", json=[{"user_id": "u"}] * 251)
    assert response.status_code == 413
    assert "over the limit of 250 (FRESHRANK_API_MAX_EVENTS)" in response.json()["detail"]


@pytest.mark.parametrize("value", ["lots", "0", "-5", "1.5"])
def test_bad_limit_in_the_environment_is_a_clear_error(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("FRESHRANK_API_MAX_EVENTS", value)
    with pytest.raises(ValueError, match="FRESHRANK_API_MAX_EVENTS=.* whole number of at least 1"):
        Settings.from_env()


# ---------------------------------------------------------------------------------------------
# The real server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("access_log", [False, True])
def test_freshrank_serve_answers_over_http(
    settings: Settings, tmp_path: Path, access_log: bool
) -> None:
    publish(settings)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "orchestration.app.cli", "serve", "--port", str(port)],
            cwd=PROJECT_ROOT,
            env={**os.environ, "FRESHRANK_API_ACCESS_LOG": "1" if access_log else ""},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, f"server exited early:\n{log_path.read_text()}"
            try:
                if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"no answer in 30 s:\n{log_path.read_text()}"
            time.sleep(0.1)
        response = httpx.get(f"{base_url}/recommendations/u1", params={"k": 3}, timeout=5)
        assert response.status_code == 200
        assert [item["item_id"] for item in response.json()["items"]] == [
            "u1-item-1",
            "u1-item-2",
            "u1-item-3",
        ]
        posted = httpx.post(f"{base_url}/events", json=EVENTS, timeout=5)
        assert posted.status_code == 202
        assert landed(settings) == [posted.json()["file"]]
    finally:
        server.terminate()  # SIGTERM to this PID: uvicorn shuts down gracefully
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    written = log_path.read_text()
    assert f"freshrank API on {base_url}" in written
    # A line per request only when FRESHRANK_API_ACCESS_LOG asks for it.
    assert ('"GET /recommendations/u1?k=3 HTTP/1.1" 200' in written) is access_log
