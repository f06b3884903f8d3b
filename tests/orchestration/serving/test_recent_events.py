"""Ingestion keeps the serving store's recent events: API files are marked loaded, other files
add their users' newest events, and `freshrank ingest` runs it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
from fastapi.testclient import TestClient

from orchestration.ingest.commands import ingest_files
from orchestration.ingest.landing import load_pending
from orchestration.serving import recent_events
from orchestration.serving.api import ApiLimits, create_app
from orchestration.serving.recent_events import remember_loaded_events
from orchestration.serving.store import ServingStore
from orchestration.settings import Settings


def write_events(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp"])
    frame.to_csv(path, index=False)
    return path


def test_api_events_are_marked_and_other_files_add_each_users_newest(
    settings: Settings, tmp_path: Path
) -> None:
    settings = dataclasses.replace(settings, recent_events_per_user=2)
    with TestClient(create_app(settings, ApiLimits())) as client:
        posted = client.post(
            "/events",
            json=[{"user_id": "u1", "item_id": "a", "event_type": "view", "timestamp": 60}],
        )
    api_file = posted.json()["file"]
    delivered = write_events(
        settings.landing_folder("events") / "delivery.csv",
        [
            ("u2", "x", "view", "2026-01-02T09:00:00Z"),
            ("u2", "y", "click", "2026-01-02T09:05:00Z"),
            ("u2", "z", "view", "2026-01-02T09:01:00Z"),
            ("u3", "x", "view", "2026-01-02T09:00:00Z"),
        ],
    )
    load_pending("events", settings, batch_id="batch-1")
    assert remember_loaded_events(settings, "batch-1") == 1 + 3

    store = ServingStore(settings.serving_url)
    try:
        (api_event,) = store.recent_events("u1")
        assert api_event["source_file"] == api_file
        # u2's two newest by event time, oldest first; every row is marked loaded.
        assert [event["item_id"] for event in store.recent_events("u2")] == ["z", "y"]
        assert [event["item_id"] for event in store.recent_events("u3")] == ["x"]
        assert {event["source_file"] for event in store.recent_events("u3")} == {delivered.name}
        # A publish through the newest load drops them all: the lists reflect them now.
        with store.engine.connect() as connection:
            (newest,) = connection.exec_driver_sql("select max(loaded_at) from recent_events").one()
        lists = pd.DataFrame(
            columns=["user_id", "rank", "item_id", "score", "reason", "model_version"]
        ).assign(generated_at=pd.Series(dtype="datetime64[ns]"))
        store.publish(lists, events_loaded_through=pd.Timestamp(newest).to_pydatetime())
        assert [store.recent_events(user) for user in ("u1", "u2", "u3")] == [[], [], []]
    finally:
        store.dispose()


def test_a_backfill_is_left_to_the_next_publish(
    settings: Settings, monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(recent_events, "MAX_USERS_PER_LOAD", 1)
    write_events(
        settings.landing_folder("events") / "backfill.csv",
        [("u1", "x", "view", "2026-01-02T09:00:00Z"), ("u2", "x", "view", "2026-01-02T09:00:00Z")],
    )
    load_pending("events", settings, batch_id="batch-2")
    assert remember_loaded_events(settings, "batch-2") == 0


def test_freshrank_ingest_records_recent_events(settings: Settings, tmp_path: Path) -> None:
    events = write_events(tmp_path / "events.csv", [("u9", "x", "click", "2026-01-02T09:00:00Z")])
    ingest_files(settings, {"events": [events]})
    store = ServingStore(settings.serving_url)
    try:
        assert [event["item_id"] for event in store.recent_events("u9")] == ["x"]
    finally:
        store.dispose()
