"""Alias moves on a real MLflow SQLite registry (the gate itself: tests/ml/test_gate.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml import tracking


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


def test_promoting_an_unknown_version_is_an_error_naming_the_versions(registry) -> None:
    with pytest.raises(ValueError, match=r"has no version '9' \(versions: 1, 2, 3\)"):
        tracking.promote(registry, "9")
    assert tracking.alias_version(registry, tracking.CHAMPION) is None


def test_before_the_first_build_there_is_nothing_to_promote(tmp_path: Path) -> None:
    client = tracking.configure(
        f"sqlite:///{tmp_path / 'mlflow.db'}", (tmp_path / "artifacts").as_uri()
    )
    assert tracking.registered_versions(client) == []
    with pytest.raises(ValueError, match="none yet: run `freshrank build` first"):
        tracking.promote(client, "1")
