"""`forget`: nothing of a forgotten user remains in any table or kept file; others stay.

A real warehouse (files ingested with pseudonymisation on, dbt marts built, a scored table in
``ml``) and the serving store on SQLite and PostgreSQL, with a row for the user in every table
that has a user_id column, whichever code created it.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import sqlalchemy as sa

from orchestration.ingest.landing import land_file, load_pending
from orchestration.privacy.erase import privacy_log
from orchestration.privacy.forget import forget_user
from orchestration.serving.store import ServingStore
from orchestration.settings import Settings
from tests.dbt.warehouse_runs import orchestration_vars, run_dbt
from tests.orchestration.privacy.stores import (
    fill_user_tables,
    serving_values_containing,
    warehouse_values_containing,
)

KEY = "a-test-key-of-enough-length"
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
EVENTS = (
    "user_id,item_id,event_type,timestamp\n"
    "alice,i1,view,2024-05-01T10:00:00Z\n"
    "alice,i2,purchase,2024-05-01T10:05:00Z\n"
    "bob,i1,view,2024-05-01T11:00:00Z\n"
    "bob,i2,click,2024-05-02T11:00:00Z\n"
    "alice,i3,no-such-type,2024-05-02T12:00:00Z\n"
    "carol,i3,view,2024-05-03T12:00:00Z\n"
)
JSON_EVENTS = (
    '{"user_id": "alice", "item_id": "i3", "event_type": "like", "timestamp": 1714557600}\n'
    '{"user_id": "alice", "item_id": broken\n'
    '{"user_id": "bob", "item_id": "i3", "event_type": "view", "timestamp": 1714557700}\n'
)
ITEMS = "item_id,title\ni1,One\ni2,Two\ni3,Three\n"


def private_settings(home: Path, monkeypatch: pytest.MonkeyPatch, serving_url: str) -> Settings:
    for variable in ("FRESHRANK_LANDING_DIR", "FRESHRANK_WAREHOUSE_PATH", "DAGSTER_HOME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("FRESHRANK_HOME", str(home))
    monkeypatch.setenv("FRESHRANK_PSEUDONYMISE_KEY", KEY)
    monkeypatch.setenv("FRESHRANK_SERVING_URL", serving_url)
    return Settings.from_env()


@pytest.fixture(scope="module")
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


@pytest.mark.slow  # one dbt build for both backends
def test_forget_removes_the_user_everywhere_and_keeps_the_others(
    built_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serving_url: str
) -> None:
    home = tmp_path / "home"
    shutil.copytree(built_home, home)
    settings = private_settings(home, monkeypatch, serving_url)
    pseudonymiser = settings.pseudonymiser
    assert pseudonymiser is not None
    alice, bob = pseudonymiser.pseudonym("alice"), pseudonymiser.pseudonym("bob")
    store = ServingStore(serving_url)
    store.publish(
        pd.DataFrame(
            {
                "user_id": [alice, bob],
                "rank": 1,
                "item_id": "i3",
                "score": 1.0,
                "reason": "popular now",
                "model_version": "1",
                "generated_at": datetime(2024, 5, 5),
            }
        )
    )
    store.dispose()
    engine = sa.create_engine(serving_url)
    filled = fill_user_tables(engine, alice, datetime(2024, 5, 1))
    fill_user_tables(engine, bob, datetime(2024, 5, 1))
    assert "recommendations" in filled
    texts = [alice, "alice"]
    assert warehouse_values_containing(settings.warehouse_path, texts)  # it was there

    report = forget_user(" alice ", settings)

    assert warehouse_values_containing(settings.warehouse_path, texts) == []
    assert serving_values_containing(engine, texts) == []
    # Not even in the files' free blocks: the warehouse is compacted, SQLite deletes securely.
    stored_files = [settings.warehouse_path]
    if engine.dialect.name == "sqlite":
        database = Path(engine.url.database or "")
        stored_files += [database, database.with_name(database.name + "-wal")]
    for path in stored_files:
        if path.exists():
            assert alice.encode() not in path.read_bytes(), path
    assert report.serving_rows["recommendations"] == 2  # the published row and the filled one
    assert {"raw.events", "marts.interactions", "marts.users", "ml.scored"} <= set(
        report.warehouse_rows
    )
    # Kept files: the waiting and archived ones rewritten; the rejected one reported.
    rejected = home / "landing" / "rejected" / "events"
    assert report.unreadable_files == [str(path) for path in rejected.iterdir()]
    for path in (home / "landing").rglob("*"):
        if path.is_file() and path.parent != rejected:
            content = path.read_bytes()
            assert b"alice" not in content and alice.encode() not in content, path
    assert report.files_changed == 3 and report.file_rows >= 4
    # Bob is untouched everywhere.
    assert warehouse_values_containing(settings.warehouse_path, [bob])
    with engine.connect() as connection:
        assert (
            connection.execute(
                sa.text("SELECT count(*) FROM recommendations WHERE user_id = :u"), {"u": bob}
            ).scalar_one()
            == 2
        )
    waiting = next((home / "landing" / "events").iterdir())
    assert "bob" in waiting.read_text(encoding="utf-8")  # ingestion pseudonymises it later
    # The log says that and how much, never whose.
    (entry,) = privacy_log(engine)
    assert entry["action"] == "forget" and entry["rows_removed"] == report.rows_removed
    assert "alice" not in str(entry) and alice not in str(entry)
    engine.dispose()


def test_forget_without_pseudonymisation_and_an_empty_id(
    settings: Settings, tmp_path: Path
) -> None:
    source = tmp_path / "events.csv"
    source.write_text(EVENTS, encoding="utf-8")
    land_file(source, "events", settings)
    load_pending("events", settings, "b1", now=NOW)
    report = forget_user("alice", settings)
    assert report.warehouse_rows["raw.events"] == 2
    assert report.warehouse_rows["raw.quarantine"] == 1
    assert warehouse_values_containing(settings.warehouse_path, ["alice"]) == []
    assert b"alice" not in settings.warehouse_path.read_bytes()
    assert not report.pseudonymised
    with pytest.raises(ValueError, match="empty"):
        forget_user("  ", settings)
