"""One configuration: orchestration passes every dbt var from the settings, and the defaults that
dbt_project.yml keeps for manual runs are the Python defaults, so the two cannot drift apart."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestration.settings import DBT_PROJECT_DIR, Settings
from orchestration.warehouse.dbt import dbt_vars


def declared_vars() -> dict[str, Any]:
    project = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())
    return project["vars"]


@pytest.fixture
def default_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings read from an environment that sets nothing but FRESHRANK_HOME."""
    for variable in list(os.environ):
        if variable.startswith("FRESHRANK_"):
            monkeypatch.delenv(variable)
    monkeypatch.setenv("FRESHRANK_HOME", str(tmp_path))
    return Settings.from_env()


def test_orchestration_passes_every_var_the_dbt_project_declares(
    default_settings: Settings,
) -> None:
    assert sorted(dbt_vars(default_settings)) == sorted(declared_vars())


def test_the_dbt_project_defaults_are_the_python_defaults(default_settings: Settings) -> None:
    assert dbt_vars(default_settings) == declared_vars()


def test_the_environment_reaches_the_dbt_vars(
    default_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = {
        "FRESHRANK_COVISITATION_WINDOW_EVENTS": ("covisitation_window_events", "3", 3),
        "FRESHRANK_COVISITATION_WINDOW_HOURS": ("covisitation_window_hours", "12", 12),
        "FRESHRANK_COVISITATION_BACKWARD_WEIGHT": ("covisitation_backward_weight", "0.25", 0.25),
        "FRESHRANK_TRENDING_SHORT_WINDOW_DAYS": ("trending_short_window_days", "2", 2.0),
        "FRESHRANK_TRENDING_LONG_WINDOW_DAYS": ("trending_long_window_days", "14", 14.0),
        "FRESHRANK_HISTORY_LENGTH": ("history_length", "20", 20),
        "FRESHRANK_EVENT_WEIGHTS": ("event_weights", '{"view": 2}', {"view": 2.0}),
    }
    for variable, (_, text, _) in overrides.items():
        monkeypatch.setenv(variable, text)
    passed = dbt_vars(Settings.from_env())
    assert {name: passed[name] for name, _, _ in overrides.values()} == {
        name: value for name, _, value in overrides.values()
    }
    # Whole-number settings stay whole: dbt renders them into SQL as written.
    assert isinstance(passed["covisitation_window_events"], int)
    assert isinstance(passed["covisitation_window_hours"], int)
