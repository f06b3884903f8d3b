"""Retention: by the wall clock, off by default, everywhere events are kept; the Dagster job."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import duckdb
import pytest
import sqlalchemy as sa
from dagster import build_schedule_context

from ml.constants import OCCURRED_AT
from orchestration.ingest.landing import land_file, load_pending
from orchestration.privacy.erase import privacy_log, warehouse_tables_with
from orchestration.privacy.landed_files import event_files
from orchestration.privacy.retention import TIME_COLUMNS, apply_retention, retention_cutoff
from orchestration.privacy.schedules import retention_job, retention_schedule
from orchestration.settings import Settings
from tests.orchestration.privacy.stores import (
    EVENTS,
    NOW,
    create_serving_tables,
    fill_user_tables,
)

# One day before 2024-05-02 12:00: the events of 2024-05-01 are older, the later ones are not.
CLOCK = datetime(2024, 5, 2, 12, 0, tzinfo=UTC)
CUTOFF = datetime(2024, 5, 1, 12, 0)


def test_the_cutoff_is_the_wall_clock_minus_the_days() -> None:
    assert retention_cutoff(1, CLOCK) == CUTOFF
    assert retention_cutoff(0.5, datetime(2024, 5, 2, 12, 0)) == datetime(2024, 5, 2, 0, 0)


def test_retention_is_off_by_default(settings: Settings) -> None:
    assert settings.retention_days is None
    assert apply_retention(settings) is None
    skip = retention_schedule(build_schedule_context(resources={"settings": settings}))
    assert "FRESHRANK_RETENTION_DAYS" in str(skip.skip_message)


def test_retention_setting_must_be_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHRANK_RETENTION_DAYS", "0")
    with pytest.raises(ValueError, match="FRESHRANK_RETENTION_DAYS"):
        Settings.from_env()


@pytest.mark.slow  # shares the dbt-built warehouse with the forget test
def test_retention_deletes_old_events_everywhere(
    built_settings: Settings, serving_url: str
) -> None:
    settings = replace(built_settings, retention_days=1.0)
    create_serving_tables(settings)
    engine = sa.create_engine(serving_url)
    fill_user_tables(engine, "old", datetime(2024, 5, 1, 9, 0))
    fill_user_tables(engine, "new", datetime(2024, 5, 2, 9, 0))

    report = apply_retention(settings, now=CLOCK)

    assert report is not None and report.cutoff == CUTOFF
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        tables = warehouse_tables_with(con, OCCURRED_AT)
        assert {'"raw"."events"', '"marts"."interactions"'} <= set(tables)
        for table in tables:
            oldest, count = con.execute(
                f"SELECT min({OCCURRED_AT}), count(*) FROM {table}"
            ).fetchone()
            assert count == 0 or oldest >= CUTOFF, table
        (kept,) = con.execute("SELECT count(*) FROM raw.events").fetchone()
    assert kept == 2  # bob on 05-02, carol on 05-03 (the 05-04 file still waits in landing)
    assert report.warehouse_rows["raw.events"] == 5
    assert {"recent_events", "exposures"} <= set(report.serving_rows)
    with engine.connect() as connection:
        for table in sa.inspect(engine).get_table_names():
            columns = {column["name"] for column in sa.inspect(engine).get_columns(table)}
            for column in columns & set(TIME_COLUMNS):
                times = connection.execute(sa.text(f"SELECT {column} FROM {table}")).all()
                assert times and all(_naive(row[0]) >= CUTOFF for row in times), table
    # Archived files lost their old rows; the file still waiting (2024-05-04) kept its rows.
    for path in event_files(settings):
        if "rejected" not in path.parts:
            assert "2024-05-01" not in path.read_text(encoding="utf-8"), path
    assert report.files_changed == 2
    (entry,) = privacy_log(engine)
    assert entry["action"] == "retention" and entry["rows_removed"] == report.rows_removed
    engine.dispose()


def _naive(moment: object) -> datetime:
    value = moment if isinstance(moment, datetime) else datetime.fromisoformat(str(moment))
    return value.replace(tzinfo=None)


def test_the_retention_job_runs_from_the_setting(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = settings.home / "events.csv"
    source.write_text(EVENTS, encoding="utf-8")
    land_file(source, "events", settings)
    load_pending("events", settings, "b1", now=NOW)
    monkeypatch.setenv("FRESHRANK_RETENTION_DAYS", "30")  # every event of 2024 is older
    resources = {"settings": Settings.from_env()}

    assert isinstance(retention_schedule(build_schedule_context(resources=resources)).tags, dict)
    result = retention_job.execute_in_process(resources=resources)

    assert result.success
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw.events").fetchone() == (0,)
    assert list((settings.landing_dir / "archive" / "events").iterdir()) == []
