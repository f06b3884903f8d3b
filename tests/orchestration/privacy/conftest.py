"""A FRESHRANK_HOME with a real warehouse, built once: files ingested with pseudonymisation on,
the dbt marts built, a scored table in ``ml``; each test gets a copy."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from orchestration.ingest.landing import land_file, load_pending
from orchestration.settings import Settings
from tests.dbt.warehouse_runs import orchestration_vars, run_dbt
from tests.orchestration.privacy.stores import (
    EVENTS,
    ITEMS,
    JSON_EVENTS,
    NOW,
    private_settings,
)


@pytest.fixture(scope="session")
def built_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A FRESHRANK_HOME after ingesting three users' files and building the dbt marts, with a
    file still waiting in landing and one rejected."""
    work = tmp_path_factory.mktemp("forget")
    home = work / "home"
    with pytest.MonkeyPatch.context() as monkeypatch:
        settings = private_settings(home, monkeypatch, f"sqlite:///{work / 'unused.db'}")
        sources = {
            "events.csv": EVENTS,
            "events.jsonl": JSON_EVENTS,
            "unreadable.csv": "user_id,timestamp\nalice,2024-05-01\n",  # no item_id: rejected
            "items.csv": ITEMS,
        }
        for name, text in sources.items():
            (work / name).write_text(text, encoding="utf-8")
            land_file(work / name, "items" if name == "items.csv" else "events", settings)
        load_pending("items", settings, "b1", now=NOW)
        load_pending("events", settings, "b1", now=NOW)
        run_dbt(work, settings.warehouse_path, arguments=orchestration_vars())
        with duckdb.connect(str(settings.warehouse_path)) as con:
            con.execute("CREATE SCHEMA IF NOT EXISTS ml")
            con.execute("CREATE TABLE ml.scored AS SELECT user_id, item_id FROM marts.interactions")
        waiting = work / "waiting.csv"
        waiting.write_text(
            "user_id,item_id,event_type,timestamp\nalice,i1,view,2024-05-04T10:00:00Z\n"
            "bob,i3,view,2024-05-04T10:00:00Z\n",
            encoding="utf-8",
        )
        land_file(waiting, "events", settings)
    return home


@pytest.fixture
def built_settings(
    built_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serving_url: str
) -> Settings:
    """Settings on a copy of the built home, the serving store at ``serving_url``."""
    home = tmp_path / "home"
    shutil.copytree(built_home, home)
    return private_settings(home, monkeypatch, serving_url)
