"""With pseudonymisation on, no delivered user id reaches the raw tables or the archive."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from orchestration.ingest.landing import WITHHELD_RECORD, land_file, load_pending
from orchestration.settings import Settings
from tests.orchestration.privacy.stores import KEY, NOW


@pytest.fixture
def private_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("FRESHRANK_PSEUDONYMISE_KEY", KEY)
    return Settings.from_env()


def test_ids_are_replaced_in_raw_tables_quarantine_and_archive(
    private_settings: Settings, tmp_path: Path
) -> None:
    pseudonymiser = private_settings.pseudonymiser
    assert pseudonymiser is not None
    already = pseudonymiser.pseudonym("posted-user")  # as the API lands posted events
    csv_file = tmp_path / "events.csv"
    csv_file.write_text(
        "user_id,item_id,event_type,timestamp\n"
        "alice,i1,view,2024-05-01T10:00:00Z\n"
        " bob ,i2,click,2024-05-01T11:00:00Z\n"
        "carol,i3,no-such-type,2024-05-01T12:00:00Z\n",
        encoding="utf-8",
    )
    json_file = tmp_path / "events.jsonl"
    json_file.write_text(
        f'{{"user_id": "{already}", "item_id": "i1", "event_type": "view", '
        '"timestamp": "2024-05-02T10:00:00Z"}\n'
        '{"user_id": 42, "item_id": "i2", "event_type": "view", "timestamp": 1714557600}\n'
        '{"user_id": "dave", "item_id": "i3", broken\n',
        encoding="utf-8",
    )
    land_file(csv_file, "events", private_settings)
    land_file(json_file, "events", private_settings)
    results = load_pending("events", private_settings, "b1", now=NOW)
    assert [(r.rows_loaded, r.rows_quarantined) for r in results] == [(2, 1), (2, 1)]

    with duckdb.connect(str(private_settings.warehouse_path)) as con:
        users = sorted(row[0] for row in con.sql("SELECT user_id FROM raw.events").fetchall())
        records = [row[0] for row in con.sql("SELECT record FROM raw.quarantine").fetchall()]
    expected = sorted(pseudonymiser.pseudonym(name) for name in ("alice", "bob", "42"))
    assert users == sorted([*expected, already])  # the posted pseudonym is not hashed twice
    assert pseudonymiser.pseudonym("carol") in records[0] and "carol" not in records[0]
    assert records[1] == WITHHELD_RECORD

    archived = list((private_settings.landing_dir / "archive" / "events").iterdir())
    assert len(archived) == 2
    for path in archived:
        text = path.read_text(encoding="utf-8")
        for raw_id in ("alice", "bob", "carol", "dave", "42,", ": 42"):
            assert raw_id not in text, (path.name, raw_id)
    archived_csv = next(path for path in archived if path.suffix == ".csv")
    assert pseudonymiser.pseudonym("alice") in archived_csv.read_text(encoding="utf-8")


def test_without_a_key_ids_are_kept(settings: Settings, tmp_path: Path) -> None:
    source = tmp_path / "events.csv"
    source.write_text(
        "user_id,item_id,event_type,timestamp\nalice,i1,view,2024-05-01T10:00:00Z\n",
        encoding="utf-8",
    )
    land_file(source, "events", settings)
    load_pending("events", settings, "b1", now=NOW)
    with duckdb.connect(str(settings.warehouse_path)) as con:
        assert con.sql("SELECT user_id FROM raw.events").fetchall() == [("alice",)]


def test_a_file_of_malformed_lines_leaves_nothing_in_the_archive(
    private_settings: Settings, tmp_path: Path
) -> None:
    source = tmp_path / "broken.jsonl"
    source.write_text('{"user_id": "alice", broken\n', encoding="utf-8")
    land_file(source, "events", private_settings)
    (result,) = load_pending("events", private_settings, "b1", now=NOW)
    assert (result.rows_loaded, result.rows_quarantined) == (0, 1)
    archive = private_settings.landing_dir / "archive" / "events"
    assert not archive.exists() or list(archive.iterdir()) == []
    assert list((private_settings.landing_dir / "events").iterdir()) == []
