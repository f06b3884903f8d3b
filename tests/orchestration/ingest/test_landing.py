"""Landing files into raw tables: formats, row rules, the ledger, duplicates and rejections."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestration.ingest import landing
from orchestration.ingest.landing import (
    KINDS,
    FileRejected,
    FileResult,
    ensure_raw_tables,
    land_file,
    load_pending,
    pending_files,
    read_landed_file,
    validate_events,
    validate_items,
)
from orchestration.settings import Settings

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
# A gzip stream of a few thousand lines, cut in the middle (a transfer that stopped).
CUT_GZIP = gzip.compress(
    ("item_id,title\n" + "".join(f"i{n},title {n}\n" for n in range(5000))).encode()
)[:2000]
EVENT_HEADER = "user_id,item_id,event_type,timestamp,value"
GOOD_EVENT = "u1,i1,view,2024-05-01T10:00:00Z,"
ITEM_HEADER = "item_id,title,description,categories,created_at,available"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings under tmp_path, with the default event types and future tolerance."""
    for variable in (
        "FRESHRANK_LANDING_DIR",
        "FRESHRANK_WAREHOUSE_PATH",
        "FRESHRANK_EVENT_WEIGHTS",
        "FRESHRANK_FUTURE_TOLERANCE_HOURS",
    ):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("FRESHRANK_HOME", str(tmp_path / "home"))
    return Settings.from_env()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def deliver(
    settings: Settings, kind: str, *sources: Path, batch_id: str = "batch-1"
) -> list[FileResult]:
    """Land the files and load them, checking the rows-in = loaded + quarantined invariant."""
    for source in sources:
        land_file(source, kind, settings)
    results = load_pending(kind, settings, batch_id, now=NOW)
    for result in results:
        assert result.rows_read == result.rows_loaded + result.rows_quarantined
    return results


def table(settings: Settings, sql: str) -> pd.DataFrame:
    with duckdb.connect(str(settings.warehouse_path)) as con:
        return con.execute(sql).df()


def quarantine_rows(settings: Settings) -> pd.DataFrame:
    return table(
        settings,
        "SELECT kind, source_file, source_row, column_name, reason, record "
        "FROM raw.quarantine ORDER BY source_file, source_row",
    )


# ---------------------------------------------------------------------------------------------
# Row rules: one bad row beside one good row, each quarantined for the right column

BAD_EVENT_ROWS = {
    "missing user_id": (",i1,view,2024-05-01T10:00:00Z,", "user_id", "user_id is missing"),
    "missing item_id": ("u1, ,view,2024-05-01T10:00:00Z,", "item_id", "item_id is missing"),
    "unknown event_type": (
        "u1,i1,teleport,2024-05-01T10:00:00Z,",
        "event_type",
        "'teleport' is not one of the configured event types: impression, view, click",
    ),
    "missing timestamp": ("u1,i1,view,,", "timestamp", "timestamp is missing"),
    "missing event_type": ("u1,i1, ,2024-05-01,", "event_type", "missing or empty; expected one"),
    "unparseable timestamp": ("u1,i1,view,last tuesday,", "timestamp", "'last tuesday' is not"),
    "impossible date": ("u1,i1,view,2024-02-30,", "timestamp", "'2024-02-30' is not a time"),
    "timestamp beyond tolerance": (
        "u1,i1,view,2024-06-03T12:00:01Z,",
        "timestamp",
        "more than 24 h after the load time 2024-06-01T12:00:00 UTC",
    ),
    "timestamp past 2262": ("u1,i1,view,2999-01-01,", "timestamp", "more than 24 h after"),
    "rate without value": (
        "u1,i1,rate,2024-05-01T10:00:00Z,",
        "value",
        "a 'rate' event needs a numeric value, got none",
    ),
    "rate with text value": (
        "u1,i1,rate,2024-05-01T10:00:00Z,five",
        "value",
        "a 'rate' event needs a numeric value, got 'five'",
    ),
    "non-numeric value": ("u1,i1,purchase,2024-05-01T10:00:00Z,12€", "value", "'12€' is not a"),
    "infinite value": ("u1,i1,purchase,2024-05-01T10:00:00Z,inf", "value", "'inf' is not a"),
    # The serving store keys ids as VARCHAR(255); PostgreSQL would refuse the whole publish.
    "user_id too long to serve": (
        "u" * 256 + ",i1,view,2024-05-01T10:00:00Z,",
        "user_id",
        "is 256 characters long; an id may be at most 255",
    ),
    "NUL in item_id": (
        "u1,i\x001,view,2024-05-01T10:00:00Z,",
        "item_id",
        "item_id holds a control character",
    ),
    "tab in user_id": ("u\t1,i1,view,2024-05-01T10:00:00Z,", "user_id", "holds a control"),
}


@pytest.mark.parametrize("case", list(BAD_EVENT_ROWS))
def test_bad_event_row_is_quarantined_with_its_column(
    settings: Settings, tmp_path: Path, case: str
) -> None:
    row, column, reason = BAD_EVENT_ROWS[case]
    source = write(tmp_path / "events.csv", f"{EVENT_HEADER}\n{GOOD_EVENT}\n{row}\n")

    (result,) = deliver(settings, "events", source)

    assert (result.status, result.rows_read, result.rows_loaded) == ("loaded", 2, 1)
    assert result.rows_quarantined == 1
    quarantined = quarantine_rows(settings)
    assert quarantined["column_name"].tolist() == [column]
    assert reason in quarantined["reason"].iloc[0]
    assert quarantined["source_row"].tolist() == [2]
    assert json.loads(quarantined["record"].iloc[0])["event_type"] == row.split(",")[2]
    # The load's message says where and why, as the ledger keeps it.
    where = f"quarantined 1: row 2, column {column}: {quarantined['reason'].iloc[0]}"
    assert result.message.endswith(where)
    assert table(settings, "SELECT message FROM raw.ingest_ledger")["message"].tolist() == [
        result.message
    ]
    assert table(settings, "SELECT user_id FROM raw.events")["user_id"].tolist() == ["u1"]


BAD_ITEM_ROWS = {
    "missing item_id": (",Title,,,,", "item_id", "item_id is missing"),
    "missing title": ("i2,  ,,,,", "title", "title is missing"),
    "unparseable created_at": ("i2,Title,,,someday,", "created_at", "'someday' is not a time"),
    "unparseable available": ("i2,Title,,,,maybe", "available", "'maybe' is not a boolean"),
    "item_id too long to serve": ("i" * 256 + ",Title,,,,", "item_id", "is 256 characters long"),
}


@pytest.mark.parametrize("case", list(BAD_ITEM_ROWS))
def test_bad_item_row_is_quarantined_with_its_column(
    settings: Settings, tmp_path: Path, case: str
) -> None:
    row, column, reason = BAD_ITEM_ROWS[case]
    source = write(tmp_path / "items.csv", f"{ITEM_HEADER}\ni1,Good,,,,\n{row}\n")

    (result,) = deliver(settings, "items", source)

    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (2, 1, 1)
    quarantined = quarantine_rows(settings)
    assert quarantined[["kind", "column_name"]].values.tolist() == [["items", column]]
    assert reason in quarantined["reason"].iloc[0]
    assert table(settings, "SELECT item_id FROM raw.items")["item_id"].tolist() == ["i1"]


def test_a_row_is_quarantined_once_for_the_first_rule_it_breaks(settings: Settings) -> None:
    frame = pd.DataFrame(
        {
            "user_id": [""],
            "item_id": [""],
            "event_type": ["teleport"],
            "timestamp": ["never"],
            "value": ["x"],
            "source_row": [1],
        }
    )

    clean, quarantined = validate_events(frame, "f.csv", settings, NOW)

    assert clean.empty
    assert quarantined["column_name"].tolist() == ["user_id"]


def test_value_is_optional_except_for_rate(settings: Settings) -> None:
    frame = pd.DataFrame(
        {
            "user_id": ["u1", "u1"],
            "item_id": ["i1", "i2"],
            "event_type": ["click", "rate"],
            "timestamp": ["2024-05-01", "2024-05-01"],
            "value": ["", " 4.5 "],
            "source_row": [1, 2],
        }
    )

    clean, quarantined = validate_events(frame, "f.csv", settings, NOW)

    assert quarantined.empty
    assert clean["value"].isna().tolist() == [True, False]
    assert clean["value"].iloc[1] == 4.5


def test_configured_event_types_decide_what_is_allowed(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRESHRANK_EVENT_WEIGHTS", '{"play": 1, "skip": -1}')
    custom = Settings.from_env()
    source = write(tmp_path / "e.csv", f"{EVENT_HEADER}\nu1,i1,play,2024-05-01,\n{GOOD_EVENT}\n")

    (result,) = deliver(custom, "events", source)

    assert (result.rows_loaded, result.rows_quarantined) == (1, 1)
    assert "configured event types: play, skip" in quarantine_rows(custom)["reason"].iloc[0]


# ---------------------------------------------------------------------------------------------
# Identifiers, timestamps, attributes


def test_ids_stay_strings_so_007_and_7_differ(settings: Settings, tmp_path: Path) -> None:
    source = write(
        tmp_path / "events.csv",
        f"{EVENT_HEADER}\n007,007,view,2024-05-01,\n7,7,view,2024-05-01,\n",
    )

    deliver(settings, "events", source)

    events = table(settings, "SELECT user_id, item_id FROM raw.events ORDER BY source_row")
    assert events.values.tolist() == [["007", "007"], ["7", "7"]]


def test_epoch_and_iso_timestamps_become_naive_utc(settings: Settings, tmp_path: Path) -> None:
    stamps = {
        "1714557600": datetime(2024, 5, 1, 10, 0),  # epoch seconds
        "1714557600123": datetime(2024, 5, 1, 10, 0, 0, 123000),  # epoch milliseconds
        "1714557600.5": datetime(2024, 5, 1, 10, 0, 0, 500000),
        "2024-05-01T12:00:00+02:00": datetime(2024, 5, 1, 10, 0),
        # No zone: taken as UTC, not as the offset of the row before it.
        "2024-05-01 10:00:00": datetime(2024, 5, 1, 10, 0),
        "2024-05-01T05:00:00-05:00": datetime(2024, 5, 1, 10, 0),
        "2024-05-01": datetime(2024, 5, 1),
        "2024-05-01T10:00:00Z": datetime(2024, 5, 1, 10, 0),
        "2024-05-01T10:00:00.250": datetime(2024, 5, 1, 10, 0, 0, 250000),
    }
    rows = "".join(f"u{i},i1,view,{stamp},\n" for i, stamp in enumerate(stamps))
    source = write(tmp_path / "events.csv", f"{EVENT_HEADER}\n{rows}")

    (result,) = deliver(settings, "events", source)

    assert result.rows_loaded == len(stamps)
    loaded = table(settings, "SELECT occurred_at FROM raw.events ORDER BY source_row")
    assert loaded["occurred_at"].tolist() == [pd.Timestamp(stamp) for stamp in stamps.values()]


def test_iso_basic_format_and_times_without_seconds(settings: Settings, tmp_path: Path) -> None:
    stamps = {
        "20240501T100000Z": datetime(2024, 5, 1, 10, 0),
        "20240501T1000+0200": datetime(2024, 5, 1, 8, 0),
        "2024-05-01T10Z": datetime(2024, 5, 1, 10, 0),
        "2024-05-01T10:30Z": datetime(2024, 5, 1, 10, 30),
        # A basic-format date, not 20,240,501 epoch seconds (1970-08-23); eight digits that
        # make no date (month 13) stay epoch seconds.
        "20240501": datetime(2024, 5, 1),
        "20241301": datetime(1970, 8, 23, 6, 35, 1),
    }
    rows = "".join(f"u{i},i1,view,{stamp},\n" for i, stamp in enumerate(stamps))
    source = write(tmp_path / "events.csv", f"{EVENT_HEADER}\n{rows}")

    (result,) = deliver(settings, "events", source)

    assert result.rows_loaded == len(stamps)
    loaded = table(settings, "SELECT occurred_at FROM raw.events ORDER BY source_row")
    assert loaded["occurred_at"].tolist() == [pd.Timestamp(stamp) for stamp in stamps.values()]


def test_future_tolerance_comes_from_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    monkeypatch.setenv("FRESHRANK_FUTURE_TOLERANCE_HOURS", "1")
    strict = Settings.from_env()
    source = write(
        tmp_path / "events.csv",
        f"{EVENT_HEADER}\nu1,i1,view,2024-06-01T12:59:00Z,\nu1,i1,view,2024-06-01T13:01:00Z,\n",
    )

    (result,) = deliver(strict, "events", source)

    assert (result.rows_loaded, result.rows_quarantined) == (1, 1)
    quarantined = quarantine_rows(strict)
    assert quarantined["source_row"].tolist() == [2]
    assert "more than 1 h after the load time" in quarantined["reason"].iloc[0]


def test_extra_columns_are_kept_as_attributes(settings: Settings, tmp_path: Path) -> None:
    source = write(
        tmp_path / "events.csv",
        "user_id,item_id,event_type,timestamp,device,campaign\n"
        "u1,i1,view,2024-05-01,mobile,spring\n"
        "u2,i1,view,2024-05-01,,\n",
    )

    deliver(settings, "events", source)

    attributes = table(settings, "SELECT attributes FROM raw.events ORDER BY source_row")
    first, second = attributes["attributes"].tolist()
    assert json.loads(first) == {"device": "mobile", "campaign": "spring"}
    assert second is None


def test_event_ids_are_kept_or_derived_the_same_way_in_every_format(
    settings: Settings, tmp_path: Path
) -> None:
    csv_source = write(
        tmp_path / "a.csv",
        "event_id,user_id,item_id,event_type,timestamp,value\n"
        ",u1,i1,rate,2024-05-01T10:00:00Z,4\n"
        "given-1,u1,i2,view,2024-05-01T10:00:00Z,\n",
    )
    json_source = write(
        tmp_path / "b.jsonl",
        json.dumps(
            {
                "user_id": "u1",
                "item_id": "i1",
                "event_type": "rate",
                "timestamp": 1714557600,
                "value": 4.0,
            }
        )
        + "\n",
    )

    deliver(settings, "events", csv_source, json_source)

    ids = table(settings, "SELECT source_file, event_id FROM raw.events ORDER BY event_id")
    by_file = ids.groupby("source_file")["event_id"].apply(sorted).to_dict()
    derived = [event_id for event_id in by_file["a.csv"] if event_id != "given-1"]
    assert "given-1" in by_file["a.csv"]
    assert by_file["b.jsonl"] == derived
    assert len(derived[0]) == 32


# ---------------------------------------------------------------------------------------------
# Formats


def test_parquet_events_and_items(settings: Settings, tmp_path: Path) -> None:
    events = pa.table(
        {
            "user_id": pa.array([7, None, 8], pa.int64()),
            "item_id": pa.array([1, 2, 3], pa.int64()),
            "event_type": ["view", "view", "rate"],
            "timestamp": pa.array(
                [datetime(2024, 5, 1, 12, tzinfo=UTC)] * 3, pa.timestamp("us", tz="Europe/Paris")
            ),
            "value": pa.array([None, None, 3.5]),
            "context": pa.array([{"device": "tv"}, None, None]),
        }
    )
    items = pa.table(
        {
            "item_id": pa.array([1, 2], pa.int64()),
            "title": ["One", "Two"],
            "categories": pa.array([["drama", "crime"], []]),
            "available": pa.array([False, None]),
        }
    )
    pq.write_table(events, tmp_path / "events.parquet")
    pq.write_table(items, tmp_path / "items.parquet")

    (event_result,) = deliver(settings, "events", tmp_path / "events.parquet")
    (item_result,) = deliver(settings, "items", tmp_path / "items.parquet")

    assert (event_result.rows_loaded, event_result.rows_quarantined) == (2, 1)
    loaded = table(
        settings,
        "SELECT user_id, item_id, occurred_at, value, context FROM raw.events ORDER BY source_row",
    )
    assert loaded["user_id"].tolist() == ["7", "8"]  # not "7.0" although the column had a null
    assert loaded["item_id"].tolist() == ["1", "3"]
    assert loaded["occurred_at"].iloc[0] == pd.Timestamp("2024-05-01 12:00:00")
    assert json.loads(loaded["context"].iloc[0]) == {"device": "tv"}
    assert loaded["value"].iloc[1] == 3.5
    assert quarantine_rows(settings)["column_name"].tolist() == ["user_id"]
    assert item_result.rows_loaded == 2
    catalog = table(settings, "SELECT item_id, categories, available FROM raw.items ORDER BY 1")
    assert catalog.values.tolist() == [["1", "drama|crime", False], ["2", None, True]]


def test_a_parquet_date_as_an_eight_digit_integer(settings: Settings, tmp_path: Path) -> None:
    events = pa.table(
        {
            "user_id": ["u1", "u2"],
            "item_id": ["i1", "i2"],
            "event_type": ["view", "view"],
            "timestamp": pa.array([20240501, 1714557600], pa.int64()),
        }
    )
    pq.write_table(events, tmp_path / "events.parquet")

    (result,) = deliver(settings, "events", tmp_path / "events.parquet")

    assert result.rows_loaded == 2
    loaded = table(settings, "SELECT occurred_at FROM raw.events ORDER BY source_row")
    assert loaded["occurred_at"].tolist() == [
        pd.Timestamp("2024-05-01"),
        pd.Timestamp("2024-05-01 10:00:00"),
    ]


@pytest.mark.parametrize("zone", [None, "UTC", "Europe/Paris"])
def test_parquet_times_in_nanoseconds_as_pandas_writes_them(
    settings: Settings, tmp_path: Path, zone: str | None
) -> None:
    moments = pd.to_datetime(["2024-05-01T14:00:00+02:00", "2024-05-02T00:30:00+02:00"], utc=True)
    frame = pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "item_id": ["i1", "i2"],
            "event_type": pd.Categorical(["view", "purchase"]),
            "timestamp": moments.tz_localize(None) if zone is None else moments.tz_convert(zone),
        }
    )
    frame.to_parquet(tmp_path / "events.parquet")  # datetime64[ns(, zone)]: TIMESTAMP(TZ)_NS

    (result,) = deliver(settings, "events", tmp_path / "events.parquet")

    assert (result.rows_loaded, result.rows_quarantined) == (2, 0), result.message
    loaded = table(settings, "SELECT occurred_at FROM raw.events ORDER BY source_row")
    assert loaded["occurred_at"].tolist() == [
        pd.Timestamp("2024-05-01 12:00:00"),
        pd.Timestamp("2024-05-01 22:30:00"),
    ]


def test_a_list_or_an_object_is_not_an_id(settings: Settings, tmp_path: Path) -> None:
    good = {"item_id": "i1", "event_type": "view", "timestamp": "2024-05-01T10:00:00Z"}
    lines = [
        {**good, "user_id": "u1"},
        {**good, "user_id": ["u2"]},
        {**good, "user_id": "u3", "item_id": {"id": "i3"}},
    ]
    source = write(tmp_path / "e.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    (result,) = deliver(settings, "events", source)
    assert (result.rows_loaded, result.rows_quarantined) == (1, 2)
    reasons = quarantine_rows(settings)[["column_name", "reason"]].values.tolist()
    assert reasons == [
        ["user_id", 'user_id ["u2"] is a list or an object, not an id'],
        ["item_id", 'item_id {"id":"i3"} is a list or an object, not an id'],
    ]

    items = pa.table({"item_id": pa.array([["a"], None, ["c"]]), "title": ["A", "B", "C"]})
    pq.write_table(items, tmp_path / "items.parquet")
    (result,) = deliver(settings, "items", tmp_path / "items.parquet", batch_id="batch-2")
    assert (result.rows_loaded, result.rows_quarantined) == (0, 3)


def test_ids_of_255_characters_load_whatever_their_bytes(
    settings: Settings, tmp_path: Path
) -> None:
    """The bound is in characters, as VARCHAR(255) counts them: 255 'é' are 510 bytes."""
    user, item = "é" * 255, "i" * 255
    source = write(tmp_path / "events.csv", f"{EVENT_HEADER}\n{user},{item},view,2024-05-01,\n")
    (result,) = deliver(settings, "events", source)
    assert (result.rows_loaded, result.rows_quarantined) == (1, 0), result.message
    loaded = table(settings, "SELECT user_id, item_id FROM raw.events")
    assert loaded.values.tolist() == [[user, item]]


def test_json_lines_with_a_malformed_line(settings: Settings, tmp_path: Path) -> None:
    source = write(
        tmp_path / "events.ndjson",
        '{"user_id": 7, "item_id": "007", "event_type": "click", "timestamp": 1714557600}\n'
        "\n"
        '{"user_id": "u2", "item_id": \n'
        "[1, 2]\n"
        '{"user_id": "u3", "item_id": "i3", "event_type": "view", '
        '"timestamp": "2024-05-01T10:00:00Z", "session_id": 42, "context": "web"}\n',
    )

    (result,) = deliver(settings, "events", source)

    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (4, 2, 2)
    quarantined = quarantine_rows(settings)
    assert quarantined["source_row"].tolist() == [3, 4]  # line numbers in the file
    assert quarantined["column_name"].isna().all()
    assert quarantined["record"].tolist() == ['{"user_id": "u2", "item_id": ', "[1, 2]"]
    assert quarantined["reason"].str.startswith("malformed JSON line").all()
    assert "quarantined 2: row 3: malformed JSON line 3" in result.message
    loaded = table(
        settings,
        "SELECT user_id, item_id, session_id, context, source_row FROM raw.events ORDER BY 5",
    )
    assert loaded.values.tolist() == [["7", "007", None, None, 1], ["u3", "i3", "42", '"web"', 5]]


def test_a_loads_message_shows_the_first_quarantined_rows(
    settings: Settings, tmp_path: Path
) -> None:
    bad = [f"u{n},i1,teleport,2024-05-01T10:00:00Z," for n in range(5)]
    source = write(tmp_path / "events.csv", "\n".join([EVENT_HEADER, GOOD_EVENT, *bad, ""]))

    (result,) = deliver(settings, "events", source)

    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (6, 1, 5)
    shown = re.findall(r"row (\d+), column (\w+): ", result.message)
    assert shown == [("2", "event_type"), ("3", "event_type"), ("4", "event_type")]
    assert result.message.endswith("; and 2 more in raw.quarantine")


def test_a_loads_message_shows_only_its_own_files_rows(settings: Settings, tmp_path: Path) -> None:
    first = write(
        tmp_path / "monday" / "events.csv",
        f"{EVENT_HEADER}\nu1,i1,teleport,2024-05-01T10:00:00Z,\n",
    )
    second = write(
        tmp_path / "tuesday" / "events.csv",
        f"{EVENT_HEADER}\n{GOOD_EVENT}\n{GOOD_EVENT.replace('u1', 'u2')}\nu3,i1,view,never,\n",
    )

    results = deliver(settings, "events", first, second)

    assert [result.rows_quarantined for result in results] == [1, 1]
    assert "row 1, column event_type" in results[0].message
    assert results[1].message.endswith(
        "quarantined 1: row 3, column timestamp: " + quarantine_rows(settings)["reason"].iloc[1]
    )


def test_items_csv_with_every_optional_column(settings: Settings, tmp_path: Path) -> None:
    source = write(
        tmp_path / "items.csv",
        f"{ITEM_HEADER},director\n"
        'i1,Heat,"A heist, in LA",crime | thriller,2020-01-02T03:04:05+01:00,no,Mann\n'
        'i2,Up,,"[""family"", ""animation""]",1700000000,,\n',
    )

    deliver(settings, "items", source)

    items = table(settings, "SELECT * EXCLUDE (batch_id, loaded_at) FROM raw.items ORDER BY 1")
    first, second = items.to_dict("records")
    assert first["description"] == "A heist, in LA"
    assert first["categories"] == "crime|thriller"
    assert first["created_at"] == pd.Timestamp("2020-01-02 02:04:05")
    assert not first["available"]
    assert json.loads(first["attributes"]) == {"director": "Mann"}
    assert second["categories"] == "family|animation"
    assert second["created_at"] == pd.Timestamp("2023-11-14 22:13:20")
    assert second["available"]
    assert second["description"] is None


def test_items_delivered_again_are_appended_for_latest_wins(
    settings: Settings, tmp_path: Path
) -> None:
    first = write(tmp_path / "day1" / "items.csv", "item_id,title\ni1,Old title\n")
    second = write(tmp_path / "day2" / "items.csv", "item_id,title\ni1,New title\n")

    deliver(settings, "items", first, batch_id="day-1")
    deliver(settings, "items", second, batch_id="day-2")

    rows = table(settings, "SELECT title, batch_id FROM raw.items ORDER BY loaded_at, source_row")
    assert rows.values.tolist() == [["Old title", "day-1"], ["New title", "day-2"]]


# ---------------------------------------------------------------------------------------------
# The ledger, duplicates, rejections and file moves


def test_same_file_twice_is_a_duplicate(settings: Settings, tmp_path: Path) -> None:
    source = write(tmp_path / "events.csv", f"{EVENT_HEADER}\n{GOOD_EVENT}\n,i1,view,2024-05-01,\n")

    (first,) = deliver(settings, "events", source, batch_id="b1")
    (second,) = deliver(settings, "events", source, batch_id="b2")

    assert (first.status, first.rows_loaded, first.rows_quarantined) == ("loaded", 1, 1)
    assert second.status == "duplicate"
    assert (second.rows_read, second.rows_loaded, second.rows_quarantined) == (0, 0, 0)
    assert second.content_hash == first.content_hash
    assert "already loaded in batch b1" in second.message
    assert len(table(settings, "SELECT * FROM raw.events")) == 1
    assert len(table(settings, "SELECT * FROM raw.quarantine")) == 1
    ledger = table(settings, "SELECT status, file_name FROM raw.ingest_ledger ORDER BY batch_id")
    assert ledger.values.tolist() == [["loaded", "events.csv"], ["duplicate", "events.csv"]]
    archive = settings.landing_dir / "archive" / "events"
    assert sorted(path.name.split("__")[0] for path in archive.iterdir()) == ["b1", "b2"]
    assert pending_files("events", settings) == []


def test_same_content_twice_in_one_batch_loads_once(settings: Settings, tmp_path: Path) -> None:
    first = write(tmp_path / "monday.csv", f"{EVENT_HEADER}\n{GOOD_EVENT}\n")
    second = write(tmp_path / "copy.csv", f"{EVENT_HEADER}\n{GOOD_EVENT}\n")

    results = deliver(settings, "events", first, second)

    assert [result.status for result in results] == ["loaded", "duplicate"]
    assert "same content as 'monday.csv'" in results[1].message
    assert len(table(settings, "SELECT * FROM raw.events")) == 1


def test_ragged_csv_is_rejected_with_the_line(settings: Settings, tmp_path: Path) -> None:
    source = write(tmp_path / "r.csv", f"{EVENT_HEADER}\n{GOOD_EVENT}\n{GOOD_EVENT},extra\n")

    (result,) = deliver(settings, "events", source)

    assert result.status == "rejected"
    assert "cannot read 'r.csv'" in result.message
    assert "line 3" in result.message


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_a_csv_separated_otherwise_than_by_commas_loads(
    settings: Settings, tmp_path: Path, delimiter: str
) -> None:
    # A spreadsheet's semicolons (with its byte-order mark), or tabs, in a file named .csv; an
    # item id holds a comma, and the short last line is quarantined like any other.
    rows = [
        ["user_id", "item_id", "event_type", "timestamp", "value"],
        ["u1", "i1", "view", "2024-05-01T10:00:00Z", ""],
        ["u2", "i,2", "rate", "2024-05-01T11:00:00Z", "4.5"],
        ["u3", "i3", "view"],
    ]
    text = "\ufeff" + "".join(delimiter.join(row) + "\n" for row in rows)
    (result,) = deliver(settings, "events", write(tmp_path / "export.csv", text))

    assert (result.status, result.rows_loaded, result.rows_quarantined) == ("loaded", 2, 1)
    loaded = table(settings, "SELECT user_id, item_id FROM raw.events ORDER BY user_id")
    assert loaded.values.tolist() == [["u1", "i1"], ["u2", "i,2"]]
    assert "row 3, column timestamp" in result.message


def test_an_unterminated_quote_rejects_the_file_with_its_line(
    settings: Settings, tmp_path: Path
) -> None:
    text = f'{EVENT_HEADER}\n{GOOD_EVENT}\n"u2,i2,view,2024-05-01T10:00:00Z,\n{GOOD_EVENT}\n'
    (result,) = deliver(settings, "events", write(tmp_path / "q.csv", text))

    assert result.status == "rejected"
    assert "line 3 opens a quoted field that never closes" in result.message


def test_contract_columns_match_whatever_their_case(settings: Settings, tmp_path: Path) -> None:
    text = (
        "User_ID,ITEM_ID,Event_Type,TimeStamp,Value,Device\nu1,i1,rate,2024-05-01T10:00:00Z,4,tv\n"
    )
    (result,) = deliver(settings, "events", write(tmp_path / "e.csv", text))

    assert (result.status, result.rows_loaded) == ("loaded", 1)
    loaded = table(settings, "SELECT user_id, item_id, value, attributes FROM raw.events")
    assert loaded[["user_id", "item_id", "value"]].values.tolist() == [["u1", "i1", 4.0]]
    assert json.loads(loaded["attributes"].iloc[0]) == {"Device": "tv"}  # not contract: as given


def test_a_contract_column_given_twice_rejects_the_file(settings: Settings, tmp_path: Path) -> None:
    text = "user_id,item_id,event_type,timestamp,User_Id\nu1,i1,view,2024-05-01T10:00:00Z,u2\n"
    (result,) = deliver(settings, "events", write(tmp_path / "e.csv", text))

    assert result.status == "rejected"
    assert "has the column user_id twice ('user_id' and 'User_Id')" in result.message


def test_missing_required_column_rejects_the_file(settings: Settings, tmp_path: Path) -> None:
    text = "user_id,item_id,event_type,when\nu1,i1,view,2024-05-01\n"
    source = write(tmp_path / "x.csv", text)

    (result,) = deliver(settings, "events", source)

    assert result.status == "rejected"
    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (0, 0, 0)
    assert "events file 'x.csv' lacks required column(s): timestamp" in result.message
    assert table(settings, "SELECT count(*) AS n FROM raw.events")["n"].item() == 0
    assert table(settings, "SELECT count(*) AS n FROM raw.quarantine")["n"].item() == 0
    ledger = table(settings, "SELECT status, message FROM raw.ingest_ledger")
    assert ledger["status"].tolist() == ["rejected"]
    assert ledger["message"].iloc[0] == result.message
    rejected = list((settings.landing_dir / "rejected" / "events").iterdir())
    assert [path.read_text() for path in rejected] == [text]
    assert source.read_text() == text  # the user's original is untouched
    assert pending_files("events", settings) == []


def test_unreadable_parquet_is_rejected(settings: Settings, tmp_path: Path) -> None:
    source = tmp_path / "events.parquet"
    source.write_bytes(b"this is not parquet")

    (result,) = deliver(settings, "events", source)

    assert result.status == "rejected"
    assert result.message.startswith("cannot read 'events.parquet': ")
    assert len(list((settings.landing_dir / "rejected" / "events").iterdir())) == 1


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "the file is empty (no header row)"),
        ("latin.csv", "item_id,title\ni1,Caf\xe9\n".encode("latin-1"), "not UTF-8 text"),
        ("blank.jsonl", b"\n\n", "the file is empty"),
        ("notes.txt", b"item_id,title\n", "unsupported extension '.txt'"),
        ("items.parquet.gz", b"PAR1", "unsupported extension '.parquet.gz'"),
        ("plain.csv.gz", b"item_id,title\ni1,A\n", "not a gzip file"),
        ("plain.jsonl.gz", b'{"item_id": "i1"}\n', "not a gzip file"),
        ("cut.csv.gz", CUT_GZIP, "the compressed file ends early"),
        ("cut.jsonl.gz", CUT_GZIP, "the compressed file ends early"),
    ],
)
def test_files_that_cannot_be_read_are_rejected(
    settings: Settings, name: str, content: bytes, message: str
) -> None:
    folder = settings.landing_folder("items")
    folder.mkdir(parents=True)
    (folder / name).write_bytes(content)  # dropped straight into the landing folder

    (result,) = load_pending("items", settings, "b1", now=NOW)

    assert result.status == "rejected"
    assert f"'{name}'" in result.message
    assert message in result.message
    assert (settings.landing_dir / "rejected" / "items" / f"b1__{name}").exists()


@pytest.mark.parametrize("name", ["events.csv.gz", "events.jsonl.gz", "events.ndjson.gz"])
def test_gzip_compressed_text_loads_as_its_plain_file_would(
    settings: Settings, tmp_path: Path, name: str
) -> None:
    """An export compressed with gzip: the same rows, rules and row numbers as uncompressed."""
    if name.startswith("events.csv"):
        text = f"{EVENT_HEADER.replace(',', ';')}\n{GOOD_EVENT.replace(',', ';')}\nu2;;view;x;\n"
    else:
        good = {"user_id": "u1", "item_id": "i1", "event_type": "view", "timestamp": 1714557600}
        text = f"{json.dumps(good)}\n{{not json\n"
    source = tmp_path / name
    source.write_bytes(gzip.compress(text.encode("utf-8")))

    (result,) = deliver(settings, "events", source)

    assert (result.status, result.rows_read, result.rows_loaded) == ("loaded", 2, 1)
    assert quarantine_rows(settings)["source_row"].tolist() == [2]
    loaded = table(settings, "SELECT user_id, item_id, occurred_at FROM raw.events")
    assert loaded.values.tolist() == [["u1", "i1", pd.Timestamp("2024-05-01 10:00:00")]]


def test_header_only_csv_loads_zero_rows(settings: Settings, tmp_path: Path) -> None:
    (result,) = deliver(settings, "events", write(tmp_path / "e.csv", f"{EVENT_HEADER}\n"))

    assert (result.status, result.rows_read, result.rows_loaded) == ("loaded", 0, 0)


def test_a_failed_write_leaves_nothing_behind(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write(tmp_path / "events.csv", f"{EVENT_HEADER}\n{GOOD_EVENT}\n,i1,view,2024-05-01,\n")
    landed = land_file(source, "events", settings)

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(landing, "_insert_ledger", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        load_pending("events", settings, "b1", now=NOW)

    for name in ("events", "quarantine", "ingest_ledger"):
        assert table(settings, f"SELECT count(*) AS n FROM raw.{name}")["n"].item() == 0
    assert pending_files("events", settings) == [landed]  # still waiting, loaded next time


# ---------------------------------------------------------------------------------------------
# Landing and the small API


def test_land_file_copies_under_a_unique_name(settings: Settings, tmp_path: Path) -> None:
    source = write(tmp_path / "events.csv", f"{EVENT_HEADER}\n{GOOD_EVENT}\n")

    first = land_file(source, "events", settings)
    second = land_file(source, "events", settings)

    assert source.exists()
    assert first != second
    assert first.parent == settings.landing_folder("events")
    assert first.name.endswith("__events.csv")
    assert pending_files("events", settings) == [first, second]
    assert landing.original_name(first) == "events.csv"


@pytest.mark.parametrize(
    ("name", "kind", "message"),
    [
        ("e.xlsx", "events", "unsupported extension '.xlsx'"),
        ("e.csv.zip", "events", "unsupported extension '.zip'"),
        ("e.csv", "users", "unknown kind"),
    ],
)
def test_land_file_refuses_early(
    settings: Settings, tmp_path: Path, name: str, kind: str, message: str
) -> None:
    source = write(tmp_path / name, "user_id\n")

    with pytest.raises(ValueError, match=message):
        land_file(source, kind, settings)

    assert not settings.landing_dir.exists()


def test_a_rejection_names_the_columns_the_contract_does_not_read(tmp_path: Path) -> None:
    """MovieLens's own ratings file: the data is there under other names."""
    text = "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n"
    source = write(tmp_path / "ratings.csv", text)

    with pytest.raises(FileRejected) as rejected:
        read_landed_file(source, "events")

    message = str(rejected.value)
    assert "lacks required column(s): user_id, item_id, event_type" in message
    assert "the file's columns the contract does not read: 'userId', 'movieId', 'rating'" in message
    assert message.endswith("; rename 'userId' for user_id")


def test_rows_quarantined_for_a_column_the_file_lacks_say_what_it_has(
    settings: Settings, tmp_path: Path
) -> None:
    """Ratings under the name 'weight': every rate event lacks its value, and the message
    says the file has no value column but has a weight column."""
    text = "user_id,item_id,event_type,timestamp,weight\nu1,i1,rate,2024-05-01T10:00:00Z,4\n"
    (result,) = deliver(settings, "events", write(tmp_path / "w.csv", text))

    assert (result.rows_read, result.rows_loaded, result.rows_quarantined) == (1, 0, 1)
    assert "row 1, column value: a 'rate' event needs a numeric value" in result.message
    assert result.message.endswith(
        "; the file has no value column; the file's columns the contract does not read: 'weight'"
    )
    # A bad value in a value column the file has: no such note.
    text = "user_id,item_id,event_type,timestamp,value\nu1,i1,rate,2024-05-01T10:00:00Z,x\n"
    (result,) = deliver(settings, "events", write(tmp_path / "v.csv", text))
    assert result.rows_quarantined == 1 and "the file has no" not in result.message


def test_read_landed_file_rejects_with_file_rejected(tmp_path: Path) -> None:
    source = write(tmp_path / "items.csv", "title\nHeat\n")

    with pytest.raises(FileRejected, match="lacks required column"):
        read_landed_file(source, "items")


def test_validate_items_defaults_available_to_true() -> None:
    frame = pd.DataFrame({"item_id": ["i1"], "title": ["Heat"], "source_row": [1]})

    clean, quarantined = validate_items(frame, "items.csv", NOW)

    assert quarantined.empty
    assert clean[["item_id", "available"]].values.tolist() == [["i1", True]]


def test_raw_tables_are_created_idempotently(settings: Settings) -> None:
    ensure_raw_tables(settings.warehouse_path)
    ensure_raw_tables(settings.warehouse_path)

    tables = table(
        settings,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'raw' ORDER BY 1",
    )
    assert tables["table_name"].tolist() == ["events", "ingest_ledger", "items", "quarantine"]
    assert KINDS == ("events", "items")


def test_file_result_to_dict() -> None:
    result = FileResult("f.csv", "events", "loaded", 2, 1, 1, "ok", "abc")

    assert result.to_dict()["rows_quarantined"] == 1


def test_a_hundred_thousand_row_csv_loads_quickly(settings: Settings, tmp_path: Path) -> None:
    rows = 100_000
    frame = pd.DataFrame(
        {
            "user_id": [f"u{index % 5000}" for index in range(rows)],
            "item_id": [f"{index % 3000:05d}" for index in range(rows)],
            "event_type": ["view", "click", "rate", "purchase"] * (rows // 4),
            "timestamp": [1714557600 + index for index in range(rows)],
            "value": [4] * rows,
            "device": ["web"] * rows,
        }
    )
    frame.loc[::1000, "user_id"] = ""
    source = tmp_path / "big.csv"
    frame.to_csv(source, index=False)

    started = time.perf_counter()
    (result,) = deliver(settings, "events", source)
    elapsed = time.perf_counter() - started

    assert (result.rows_loaded, result.rows_quarantined) == (rows - 100, 100)
    assert elapsed < 10, f"loading {rows} rows took {elapsed:.1f} s"


# ---------------------------------------------------------------------------------------------
# What DuckDB's readers needed help with


def test_derived_event_ids_match_earlier_releases(settings: Settings, tmp_path: Path) -> None:
    source = write(tmp_path / "e.csv", f"{EVENT_HEADER}\nu1,i1,rate,2024-05-01T10:00:00Z,4\n")

    deliver(settings, "events", source)

    # sha256 of user, item, type, ISO time with microseconds and repr(float(value)).
    key = "\x1f".join(["u1", "i1", "rate", "2024-05-01T10:00:00.000000", "4.0"])
    expected = hashlib.sha256(key.encode()).hexdigest()[:32]
    assert table(settings, "SELECT event_id FROM raw.events")["event_id"].tolist() == [expected]


def test_short_csv_lines_are_quarantined_even_beside_quoted_newlines(
    settings: Settings, tmp_path: Path
) -> None:
    source = write(
        tmp_path / "events.csv",
        'user_id,item_id,event_type,timestamp,note\nu1,i1,view,2024-05-01,"two\nlines"\nu2,i2\n',
    )

    (result,) = deliver(settings, "events", source)

    assert (result.status, result.rows_loaded, result.rows_quarantined) == ("loaded", 1, 1)
    assert quarantine_rows(settings)["column_name"].tolist() == ["event_type"]
    attributes = table(settings, "SELECT attributes FROM raw.events")["attributes"].iloc[0]
    assert json.loads(attributes) == {"note": "two\nlines"}


def test_file_names_with_glob_characters_load_their_own_content(
    settings: Settings, tmp_path: Path
) -> None:
    source = write(tmp_path / "events[1]*.csv", f"{EVENT_HEADER}\n{GOOD_EVENT}\n")

    (result,) = deliver(settings, "events", source)

    assert (result.status, result.rows_loaded) == ("loaded", 1)
    assert not any(path.name.startswith(".") for path in source.parent.iterdir())


def test_json_lines_that_are_all_malformed_are_all_quarantined(
    settings: Settings, tmp_path: Path
) -> None:
    source = write(
        tmp_path / "bad.jsonl", '"just a string"\n{"user_id": \n{"user_id": "u1", "b": [1,],}\n'
    )

    (result,) = deliver(settings, "events", source)

    assert (result.status, result.rows_read, result.rows_quarantined) == ("loaded", 3, 3)
    reasons = quarantine_rows(settings)["reason"].tolist()
    assert reasons == [
        "malformed JSON line 1: a string, not an object",
        "malformed JSON line 2: not valid JSON",
        "malformed JSON line 3: not valid JSON",  # trailing commas: DuckDB alone would accept
    ]


def test_json_lines_that_are_not_utf8_are_rejected(settings: Settings, tmp_path: Path) -> None:
    source = tmp_path / "latin.jsonl"
    source.write_bytes('{"item_id": "i1", "title": "Caf\xe9"}\n'.encode("latin-1"))

    (result,) = deliver(settings, "items", source)

    assert result.status == "rejected"
    assert "not UTF-8 text" in result.message


def test_parquet_with_a_file_row_number_column_keeps_it(settings: Settings, tmp_path: Path) -> None:
    items = pa.table({"item_id": ["b", "a"], "title": ["B", "A"], "file_row_number": [9, 8]})
    pq.write_table(items, tmp_path / "items.parquet")

    deliver(settings, "items", tmp_path / "items.parquet")

    rows = table(settings, "SELECT item_id, source_row, attributes FROM raw.items ORDER BY 2")
    assert rows[["item_id", "source_row"]].values.tolist() == [["b", 1], ["a", 2]]
    assert json.loads(rows["attributes"].iloc[0]) == {"file_row_number": 9}


def test_loading_leaves_the_warehouse_settings_as_they_were(
    settings: Settings, tmp_path: Path
) -> None:
    ensure_raw_tables(settings.warehouse_path)
    source = write(tmp_path / "events.csv", f"{EVENT_HEADER}\n{GOOD_EVENT}\n")
    # Held open, so that the loader's connection shares this database instance.
    with duckdb.connect(str(settings.warehouse_path)) as watcher:
        deliver(settings, "events", source)
        (disabled,) = watcher.execute("SELECT current_setting('disabled_optimizers')").fetchone()

    assert disabled == ""
