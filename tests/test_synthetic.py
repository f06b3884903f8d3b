"""The synthetic-data generator: deterministic by seed, and every row it writes passes ingest."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from benchmarks.synthetic import EVENT_TYPES, MANIFEST, SyntheticConfig, existing, generate
from orchestration.ingest.landing import land_file, load_pending
from orchestration.settings import Settings

TINY = SyntheticConfig(events=3_000, users=200, items=80, days=30)


def contents(folder: Path) -> dict[str, bytes]:
    """The data files' bytes (the manifest also records how long the run took)."""
    return {
        path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.name != MANIFEST
    }


def test_same_seed_same_bytes_other_seed_other_log(tmp_path: Path) -> None:
    first = generate(TINY, tmp_path / "a")
    generate(TINY, tmp_path / "b")
    generate(SyntheticConfig(**{**TINY.__dict__, "seed": 1}), tmp_path / "c")

    assert contents(tmp_path / "a") == contents(tmp_path / "b")
    assert (tmp_path / "a" / "events.parquet").read_bytes() != (
        tmp_path / "c" / "events.parquet"
    ).read_bytes()
    assert existing(TINY, tmp_path / "a") == first
    assert existing(SyntheticConfig(**{**TINY.__dict__, "seed": 1}), tmp_path / "a") is None


@pytest.mark.parametrize("file_format", ["parquet", "csv", "jsonl"])
def test_every_generated_row_passes_the_ingest_contract(
    settings: Settings, tmp_path: Path, file_format: str
) -> None:
    config = SyntheticConfig(**{**TINY.__dict__, "format": file_format, "event_files": 2})
    files = generate(config, tmp_path / "log")
    for path in files.events:
        land_file(path, "events", settings)
    land_file(files.items, "items", settings)

    results = load_pending("events", settings, "b1") + load_pending("items", settings, "b1")

    assert [result.status for result in results] == ["loaded"] * 3
    assert sum(result.rows_read for result in results[:2]) == config.events
    assert results[2].rows_read == config.items
    assert all(result.rows_quarantined == 0 for result in results)
    with duckdb.connect(str(settings.warehouse_path)) as con:
        types = {
            row[0] for row in con.execute("select distinct event_type from raw.events").fetchall()
        }
        (early,) = con.execute(
            "select count(*) from raw.events e join raw.items i using (item_id) "
            "where e.occurred_at < i.created_at"
        ).fetchone()
        (unrated,) = con.execute(
            "select count(*) from raw.events where event_type = 'rate' and value is null"
        ).fetchone()
        (no_session,) = con.execute(
            "select count(*) from raw.events where session_id is null or context is null"
        ).fetchone()
    assert types == set(EVENT_TYPES)
    assert (early, unrated, no_session) == (0, 0, 0)
