"""`freshrank ingest`'s command: land the files, load them through the ingest job, report each."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestration.ingest import commands
from orchestration.ingest.landing import land_file, load_pending
from orchestration.settings import Settings
from tests.orchestration.ingest.test_landing import EVENT_HEADER, GOOD_EVENT, table, write


def test_a_file_another_run_loaded_first_reports_that_runs_outcome(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two ingests at once: the run that holds the warehouse first loads every file waiting in
    # the landing folder, the other's too, and the other finds nothing left for its own run.
    source = write(
        tmp_path / "events.csv", f"{EVENT_HEADER}\n{GOOD_EVENT}\n,i2,view,2024-05-01T10:00:00Z,\n"
    )

    def land_and_lose_the_race(path: Path, kind: str, deployment: Settings) -> Path:
        landed = land_file(path, kind, deployment)
        load_pending(kind, deployment, "the-other-run")
        return landed

    monkeypatch.setattr(commands, "land_file", land_and_lose_the_race)
    (result,) = commands.ingest_files(settings, {"events": [source]})

    assert (result.status, result.rows_loaded, result.rows_quarantined) == ("loaded", 1, 1)
    assert result.file == str(source)
    assert "row 2, column user_id" in result.message
    ledger = table(settings, "SELECT batch_id FROM raw.ingest_ledger")
    assert ledger["batch_id"].tolist() == ["the-other-run"]
