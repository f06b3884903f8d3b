"""Shared fixtures: an isolated FRESHRANK_HOME and serving-store URLs for every backend."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestration.settings import Settings

POSTGRES_URL_VARIABLE = "FRESHRANK_TEST_POSTGRES_URL"
# Commands invoked in this process must not lower the test run's own CPU priority for the rest
# of the session (test_launcher.py checks the lowering in child processes).
os.environ["FRESHRANK_BATCH_NICE"] = "0"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings whose every path lies under a fresh temporary FRESHRANK_HOME."""
    for variable in (
        "FRESHRANK_LANDING_DIR",
        "FRESHRANK_WAREHOUSE_PATH",
        "FRESHRANK_SERVING_URL",
        "MLFLOW_TRACKING_URI",
        "FRESHRANK_MLFLOW_ARTIFACTS",
        "DAGSTER_HOME",
    ):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("FRESHRANK_HOME", str(tmp_path / "home"))
    result = Settings.from_env()
    result.ensure_dirs()
    return result


@pytest.fixture(params=["sqlite", "postgresql"])
def serving_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A serving-store URL: SQLite always; PostgreSQL when FRESHRANK_TEST_POSTGRES_URL is set."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'serving.db'}"
        return
    base_url = os.environ.get(POSTGRES_URL_VARIABLE)
    if not base_url:
        pytest.skip(f"{POSTGRES_URL_VARIABLE} is not set: no PostgreSQL server to test against")
    schema = f"freshrank_test_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(base_url)
    with engine.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in base_url else "?"
    yield f"{base_url}{separator}options=-csearch_path%3D{schema}"
    with engine.begin() as connection:
        connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()
