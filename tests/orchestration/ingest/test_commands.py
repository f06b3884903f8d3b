"""`freshrank ingest`'s command: land the files, load them through the ingest job, report each."""

from __future__ import annotations

import gzip
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


def test_a_folder_of_part_files_loads_each_file_and_leaves_the_markers(
    settings: Settings, tmp_path: Path
) -> None:
    """An export written as part files (Spark's, Hive-partitioned): every data file under the
    folder loads, in name order; _SUCCESS and .crc checksums are not deliveries."""
    export = tmp_path / "export"
    write(export / "part-00000.csv", f"{EVENT_HEADER}\n{GOOD_EVENT}\n")
    (export / "day=2024-05-02").mkdir(parents=True)
    (export / "day=2024-05-02" / "part-00001.csv.gz").write_bytes(
        gzip.compress(f"{EVENT_HEADER}\nu2,i2,view,2024-05-02T10:00:00Z,\n".encode())
    )
    write(export / "_SUCCESS", "")
    write(export / ".part-00000.csv.crc", "checksum")
    write(export / "notes.txt", "not a delivery")

    results = commands.ingest_files(settings, {"events": [export]})

    assert [Path(result.file).name for result in results] == [
        "part-00001.csv.gz",
        "notes.txt",
        "part-00000.csv",
    ]
    assert [result.status for result in results] == ["loaded", "rejected", "loaded"]
    assert "unsupported extension '.txt'" in results[1].message
    users = table(settings, "SELECT user_id FROM raw.events ORDER BY user_id")
    assert users["user_id"].tolist() == ["u1", "u2"]


def test_a_folder_without_delivery_files_is_reported(settings: Settings, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    write(empty / "_SUCCESS", "")

    (result,) = commands.ingest_files(settings, {"items": [empty]})

    assert result.status == "rejected"
    assert result.message == f"cannot land the folder {empty}: it holds no delivery files"


def test_paths_given_as_text_load_as_paths_do(settings: Settings, tmp_path: Path) -> None:
    """What a caller holds as text (the demo's sample files, a path from a config) loads too."""
    write(tmp_path / "export" / "part-00000.csv", f"{EVENT_HEADER}\n{GOOD_EVENT}\n")
    source = write(tmp_path / "events.csv", f"{EVENT_HEADER}\nu2,i2,view,2024-05-02T10:00:00Z,\n")

    results = commands.ingest_files(settings, {"events": [str(source), str(tmp_path / "export")]})

    assert [(Path(result.file).name, result.status) for result in results] == [
        ("events.csv", "loaded"),
        ("part-00000.csv", "loaded"),
    ]
