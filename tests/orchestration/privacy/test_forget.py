"""`forget`: nothing of a forgotten user remains in any table or kept file; others stay.

A real warehouse (files ingested with pseudonymisation on, dbt marts built, a scored table in
``ml``) and the serving store on SQLite and PostgreSQL, with a row for the user in every table
that has a user_id column, whichever code created it.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from orchestration.ingest.landing import land_file, load_pending
from orchestration.privacy.erase import privacy_log
from orchestration.privacy.forget import forget_user
from orchestration.serving.store import ServingStore
from orchestration.settings import Settings
from tests.orchestration.privacy.stores import (
    EVENTS,
    NOW,
    create_serving_tables,
    fill_user_tables,
    serving_values_containing,
    warehouse_values_containing,
)


@pytest.mark.slow  # one dbt build for both backends
def test_forget_removes_the_user_everywhere_and_keeps_the_others(
    built_settings: Settings, serving_url: str
) -> None:
    settings = built_settings
    home = settings.home
    pseudonymiser = settings.pseudonymiser
    assert pseudonymiser is not None
    alice, bob = pseudonymiser.pseudonym("alice"), pseudonymiser.pseudonym("bob")
    create_serving_tables(settings)
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
    assert {"recommendations", "candidate_pools", "recent_events", "exposures"} <= set(filled)
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
