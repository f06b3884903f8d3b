"""GET /recommendations/{user_id} while an experiment runs: the variant's list, named, logged."""

from __future__ import annotations

import dataclasses

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from ml.experiments.assignment import ExperimentDesign, Variant
from orchestration.experiments.store import ExperimentStore
from orchestration.serving.api import ApiLimits, create_app
from orchestration.serving.store import ServingStore
from orchestration.settings import Settings
from tests.orchestration.experiments.test_store import variant_lists
from tests.orchestration.serving.test_api import make_lists, make_trending

# Users whose place for "ab1" is known (ml.experiments.assignment.bucket): with shares 0.3/0.3,
# "u1" (0.272) is in A, "u7" (0.446) in B, and "alice" (0.651) is not enrolled.
SHARES = (0.3, 0.3)


@pytest.fixture
def serving(settings: Settings, serving_url: str):
    """Settings on each backend, with u1/u7/alice's main lists and a trending list published."""
    settings = dataclasses.replace(settings, serving_url=serving_url)
    store = ServingStore(settings.serving_url)
    store.publish(make_lists(["u1", "u7", "alice"], 5), trending=make_trending(4))
    store.dispose()
    engine = sa.create_engine(serving_url)
    yield settings, ExperimentStore(engine)
    engine.dispose()


def start(experiments: ExperimentStore) -> ExperimentDesign:
    design = ExperimentDesign(
        "ab1",
        (Variant("A", SHARES[0], "champion", "1"), Variant("B", SHARES[1], "challenger", "2")),
    )
    experiments.start(design)
    experiments.publish_lists("ab1", variant_lists(design, ["u1", "u7"], k=5))
    return design


def test_the_assumed_places_hold() -> None:
    design = ExperimentDesign(
        "ab1", (Variant("A", SHARES[0], "champion"), Variant("B", SHARES[1], "challenger"))
    )
    assert [design.assign(user) for user in ("u1", "u7", "alice")] == ["A", "B", None]


def test_without_an_experiment_nothing_changes_and_nothing_is_logged(serving) -> None:
    settings, experiments = serving
    with TestClient(create_app(settings, ApiLimits())) as client:
        body = client.get("/recommendations/u1?k=3").json()
    assert body["experiment"] is None and body["variant"] is None
    assert [item["item_id"] for item in body["items"]] == ["u1-item-1", "u1-item-2", "u1-item-3"]
    assert experiments.all() == []


def test_enrolled_users_get_their_variants_list_and_each_read_is_an_exposure(serving) -> None:
    settings, experiments = serving
    start(experiments)
    with TestClient(create_app(settings, ApiLimits())) as client:
        treated = client.get("/recommendations/u7?k=2").json()
        first = client.get("/recommendations/u1").json()
        again = client.get("/recommendations/u1").json()
        outsider = client.get("/recommendations/alice?k=2").json()
    assert (treated["experiment"], treated["variant"]) == ("ab1", "B")
    assert [item["item_id"] for item in treated["items"]] == ["B-1", "B-2"]
    assert treated["model_version"] == "freshrank-ranking/2:ranker"
    assert first == again and first["variant"] == "A"
    assert [item["item_id"] for item in first["items"]] == [f"A-{rank}" for rank in range(1, 6)]
    # Not enrolled: the published list, as without an experiment, and no exposure.
    assert outsider["experiment"] is None and outsider["items"][0]["item_id"] == "alice-item-1"
    exposures = experiments.exposures("ab1")
    assert exposures[["user_id", "variant"]].values.tolist() == [
        ["u7", "B"],
        ["u1", "A"],
        ["u1", "A"],
    ]
    assert exposures["items"].iloc[0] == ["B-1", "B-2"]


def test_an_enrolled_user_without_a_list_gets_trending_and_is_logged(serving) -> None:
    settings, experiments = serving
    start(experiments)
    # "newcomer-1" lands in A for "ab1" (0.004) and has no list of its own.
    with TestClient(create_app(settings, ApiLimits())) as client:
        body = client.get("/recommendations/newcomer-1?k=2").json()
    assert body["variant"] == "A"
    assert [item["item_id"] for item in body["items"]] == ["hot-1", "hot-2"]
    assert experiments.exposures("ab1")["items"].tolist() == [["hot-1", "hot-2"]]


def test_a_stopped_experiment_is_no_longer_served(serving) -> None:
    settings, experiments = serving
    start(experiments)
    experiments.stop("ab1")
    with TestClient(create_app(settings, ApiLimits())) as client:
        body = client.get("/recommendations/u7?k=2").json()
    assert body["variant"] is None and body["items"][0]["item_id"] == "u7-item-1"


def test_request_time_personalisation_keeps_a_variant_to_its_own_items(serving) -> None:
    settings, experiments = serving
    store = ServingStore(settings.serving_url)
    champion_pool = make_lists(["u7"], 5).assign(
        item_id=[f"cand-{rank}" for rank in range(1, 6)], score=10.0
    )
    store.publish(make_lists(["u1", "u7", "alice"], 5), candidates=champion_pool)
    store.dispose()
    start(experiments)
    viewed = {"user_id": "u7", "item_id": "B-1", "event_type": "view", "timestamp": "2026-01-02"}
    with TestClient(create_app(settings, ApiLimits())) as client:
        assert client.post("/events", json=[viewed]).status_code == 202
        body = client.get("/recommendations/u7?k=5").json()
    served = [item["item_id"] for item in body["items"]]
    assert body["variant"] == "B" and body["fresh_events"] == 1
    assert "B-1" not in served  # consumed at request time
    assert not [item for item in served if item.startswith("cand-")], served
