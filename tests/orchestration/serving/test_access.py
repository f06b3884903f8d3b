"""API keys, scopes and the rate limit: every refusal, with its status and message; and the API
hashing user ids when pseudonymisation is on."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from orchestration.ingest.landing import pending_files
from orchestration.serving.access import (
    KeyRing,
    RateLimiter,
    api_keys_table,
    create_key,
    list_keys,
    revoke_key,
)
from orchestration.serving.api import create_app
from orchestration.serving.store import ServingStore
from orchestration.settings import Settings

EVENT = {"user_id": "u1", "item_id": "i1", "event_type": "view", "timestamp": 1767261600}
KEY = "a-test-key-of-enough-length"


@pytest.fixture
def settings(settings: Settings, serving_url: str) -> Settings:
    """The shared settings, with the serving store (and so the keys) on each backend."""
    return dataclasses.replace(settings, serving_url=serving_url)


def publish(settings: Settings, user_id: str) -> None:
    store = ServingStore(settings.serving_url)
    store.publish(
        pd.DataFrame(
            {
                "user_id": [user_id],
                "rank": [1],
                "item_id": ["i9"],
                "score": [1.0],
                "reason": ["popular now"],
                "model_version": ["v1"],
                "generated_at": [datetime(2026, 1, 1)],
            }
        )
    )
    store.dispose()


def client_for(settings: Settings, **changes: object) -> TestClient:
    return TestClient(create_app(dataclasses.replace(settings, **changes)))


def engine_of(settings: Settings) -> sa.Engine:
    return sa.create_engine(settings.serving_url)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_without_keys_writes_and_reads_are_open(settings: Settings) -> None:
    with client_for(settings) as client:
        assert client.post("/events", json=[EVENT]).status_code == 202


def test_once_a_key_exists_writes_need_one(settings: Settings) -> None:
    engine = engine_of(settings)
    _, write_key = create_key(engine, "ingest-service", "write")
    _, read_key = create_key(engine, "web", "read")
    publish(settings, "u1")
    with client_for(settings) as client:
        missing = client.post("/events", json=[EVENT])
        assert missing.status_code == 401
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        assert "POST /events needs an API key with scope write" in missing.json()["detail"]
        unknown = client.post("/events", json=[EVENT], headers=bearer("frk_nope_nope"))
        assert unknown.status_code == 401
        assert "unknown or revoked API key" in unknown.json()["detail"]
        tampered = client.post("/events", json=[EVENT], headers=bearer(write_key + "x"))
        assert tampered.status_code == 401
        wrong_scope = client.post("/events", json=[EVENT], headers={"X-API-Key": read_key})
        assert wrong_scope.status_code == 403
        assert "API key 'web'" in wrong_scope.json()["detail"]
        assert "needs scope write" in wrong_scope.json()["detail"]
        assert client.post("/events", json=[EVENT], headers=bearer(write_key)).status_code == 202
        assert (
            client.post("/events", json=[EVENT], headers={"X-API-Key": write_key}).status_code
            == 202
        )
        # Reads stay open unless configured.
        assert client.get("/recommendations/u1").status_code == 200
    assert len(pending_files("events", settings)) == 2  # refused batches wrote nothing


def test_always_requires_a_key_even_before_one_exists(settings: Settings) -> None:
    with client_for(settings, api_require_keys="always") as client:
        refused = client.post("/events", json=[EVENT])
    assert refused.status_code == 401
    assert "freshrank api-key create" in refused.json()["detail"]


def test_keyed_reads(settings: Settings) -> None:
    engine = engine_of(settings)
    _, read_key = create_key(engine, "web", "read")
    _, write_key = create_key(engine, "ingest", "write")
    publish(settings, "u1")
    with client_for(settings, api_keys_for_reads=True) as client:
        missing = client.get("/recommendations/u1")
        assert missing.status_code == 401
        assert (
            "GET /recommendations/u1 needs an API key with scope read" in missing.json()["detail"]
        )
        assert client.get("/items/i1/similar").status_code == 401
        assert client.get("/recommendations/u1", headers=bearer(read_key)).status_code == 200
        assert client.get("/recommendations/u1", headers=bearer(write_key)).status_code == 200
        assert client.get("/health").status_code == 200  # for load balancers


def test_a_revoked_key_is_refused(settings: Settings) -> None:
    engine = engine_of(settings)
    key_id, write_key = create_key(engine, "old", "write")
    create_key(engine, "other", "write")
    with client_for(settings) as client:
        assert client.post("/events", json=[EVENT], headers=bearer(write_key)).status_code == 202
    assert revoke_key(engine, key_id)
    assert KeyRing(engine, cache_seconds=0).find(write_key) is None
    with client_for(settings) as client:
        refused = client.post("/events", json=[EVENT], headers=bearer(write_key))
    assert refused.status_code == 401
    assert not revoke_key(engine, key_id)  # already revoked


def test_rate_limit_per_key_with_retry_after(settings: Settings) -> None:
    engine = engine_of(settings)
    _, first = create_key(engine, "first", "write")
    _, second = create_key(engine, "second", "write")
    # A token every 20 s: a slow machine's seconds between the posts cannot refill one.
    with client_for(settings, api_events_per_second=0.05, api_events_burst=2) as client:
        statuses = [
            client.post("/events", json=[EVENT], headers=bearer(first)).status_code
            for _ in range(3)
        ]
        limited = client.post("/events", json=[EVENT], headers=bearer(first))
        other = client.post("/events", json=[EVENT], headers=bearer(second))
    assert statuses == [202, 202, 429]
    assert limited.status_code == 429
    # 20 s for a whole token, less what the seconds since the bucket emptied gave back (the
    # exact figures are test_token_bucket_known_answers').
    assert 15 <= int(limited.headers["Retry-After"]) <= 20
    assert "rate limit reached for API key" in limited.json()["detail"]
    assert other.status_code == 202  # every key has its own bucket


def test_token_bucket_known_answers() -> None:
    limiter = RateLimiter(per_second=2.0, burst=3)
    assert [limiter.wait_seconds("k", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait_seconds("k", now=0.0) == pytest.approx(0.5)
    assert limiter.wait_seconds("k", now=0.25) == pytest.approx(0.25)  # half a token back
    assert limiter.wait_seconds("k", now=0.5) == 0.0
    assert limiter.wait_seconds("other", now=0.5) == 0.0
    assert limiter.wait_seconds("k", now=100.0) == 0.0  # refills to the burst, not beyond
    assert [limiter.wait_seconds("k", now=100.0) for _ in range(3)][-1] > 0


def test_keys_are_stored_hashed_and_listed_without_secrets(settings: Settings) -> None:
    engine = engine_of(settings)
    key_id, plain = create_key(engine, "svc", "read")
    assert plain.startswith(f"frk_{key_id}_")
    secret = plain.split("_", 2)[2]
    with engine.connect() as connection:
        stored = [
            str(value) for row in connection.execute(sa.select(api_keys_table)) for value in row
        ]
    assert not any(secret in value for value in stored)
    (listed,) = list_keys(engine)
    assert listed["name"] == "svc" and listed["scope"] == "read"
    assert set(listed) == {"key_id", "name", "scope", "created_at", "revoked_at"}
    with pytest.raises(ValueError, match="scope 'admin' must be one of: read, write"):
        create_key(engine, "svc", "admin")
    with pytest.raises(ValueError, match="needs a name"):
        create_key(engine, " ", "read")
    with pytest.raises(ValueError, match="at most 255 characters"):
        create_key(engine, "n" * 256, "read")


def test_the_api_hashes_user_ids_when_pseudonymising(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRESHRANK_PSEUDONYMISE_KEY", KEY)
    private = Settings.from_env()
    pseudonymiser = private.pseudonymiser
    assert pseudonymiser is not None
    publish(private, pseudonymiser.pseudonym("u1"))
    with TestClient(create_app(private)) as client:
        served = client.get("/recommendations/u1")
        posted = client.post("/events", json=[EVENT, {**EVENT, "user_id": 42}])
    assert served.status_code == 200
    assert served.json()["user_id"] == "u1"  # the caller's id comes back
    assert served.json()["items"][0]["item_id"] == "i9"
    assert posted.status_code == 202
    (landed,) = pending_files("events", private)
    text = landed.read_text(encoding="utf-8")
    assert pseudonymiser.pseudonym("u1") in text and pseudonymiser.pseudonym("42") in text
    assert '"u1"' not in text and ": 42" not in text
