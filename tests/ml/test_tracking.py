"""The promotion gate and alias moves, on a real MLflow SQLite registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml import tracking


def test_worse_challenger_is_never_promoted() -> None:
    decision = tracking.gate(0.20, {"ease": 0.21, "popularity": 0.10}, None, margin=0.0)
    assert not decision.passed
    assert any("does not beat ease" in reason for reason in decision.reasons)
    assert not tracking.gate(0.20, {"ease": 0.10}, champion=0.25, margin=0.0).passed


def test_margin_is_required() -> None:
    assert not tracking.gate(0.205, {"ease": 0.20}, None, margin=0.01).passed
    assert tracking.gate(0.215, {"ease": 0.20}, None, margin=0.01).passed
    assert tracking.gate(0.215, {"ease": 0.20}, champion=0.2, margin=0.01).passed
    assert not tracking.gate(float("nan"), {"ease": 0.2}, None, margin=0.0).passed


@pytest.fixture
def registry(tmp_path: Path):
    client = tracking.configure(
        f"sqlite:///{tmp_path / 'mlflow.db'}", (tmp_path / "artifacts").as_uri()
    )
    client.create_registered_model(tracking.REGISTERED_MODEL)
    for _ in range(3):
        client.create_model_version(tracking.REGISTERED_MODEL, source=(tmp_path / "m").as_uri())
    return client


def test_promote_and_rollback_move_the_aliases(registry) -> None:
    assert tracking.alias_version(registry, tracking.CHAMPION) is None
    registry.set_registered_model_alias(tracking.REGISTERED_MODEL, tracking.CHALLENGER, "2")
    assert tracking.promote(registry, "1") is None
    assert tracking.promote(registry, "2") == "1"
    assert tracking.alias_version(registry, tracking.CHAMPION) == "2"
    assert tracking.alias_version(registry, tracking.PREVIOUS_CHAMPION) == "1"
    assert tracking.alias_version(registry, tracking.CHALLENGER) is None  # promoted
    assert tracking.rollback(registry) == "1"
    assert tracking.alias_version(registry, tracking.CHAMPION) == "1"
    version = registry.get_model_version(tracking.REGISTERED_MODEL, "2")
    assert version.tags.get("rolled_back") == "true"
    with pytest.raises(RuntimeError, match="nothing to roll back"):
        tracking.rollback(registry)


def test_promoting_an_unknown_version_is_an_error(registry) -> None:
    with pytest.raises(Exception, match="9"):
        tracking.promote(registry, "9")
    assert tracking.alias_version(registry, tracking.CHAMPION) is None
