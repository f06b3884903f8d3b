"""Landing files into the raw warehouse tables, with a ledger of deliveries and a row quarantine.

A delivery is one file of one kind (``events`` or ``items``) in CSV, Parquet or JSON Lines. Each
file is loaded exactly once: its rows either land in ``raw.<kind>`` or in ``raw.quarantine`` with
the first rule they break, and one ``raw.ingest_ledger`` row records the outcome, all in one DuckDB
transaction. Files that cannot be read at all are rejected whole. This module is plain Python (no
dagster import) so the assets, the CLI and the tests share it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ml.constants import (
    ATTRIBUTES,
    AVAILABLE,
    CATEGORIES,
    CATEGORY_SEPARATOR,
    CONTEXT,
    CREATED_AT,
    DESCRIPTION,
    EVENT_ID,
    EVENT_TYPE,
    ITEM_ID,
    OCCURRED_AT,
    OPTIONAL_EVENT_COLUMNS,
    OPTIONAL_ITEM_COLUMNS,
    REQUIRED_EVENT_COLUMNS,
    REQUIRED_ITEM_COLUMNS,
    SESSION_ID,
    TIMESTAMP,
    TITLE,
    USER_ID,
    VALUE,
)
from orchestration.settings import Settings

logger = logging.getLogger("freshrank.ingest")

KINDS = ("events", "items")
SUPPORTED_EXTENSIONS = (".csv", ".parquet", ".jsonl", ".ndjson")
JSON_LINES_EXTENSIONS = (".jsonl", ".ndjson")

LOADED = "loaded"
DUPLICATE = "duplicate"
REJECTED = "rejected"

SOURCE_FILE = "source_file"
SOURCE_ROW = "source_row"
BATCH_ID = "batch_id"
LOADED_AT = "loaded_at"

REQUIRED_COLUMNS = {"events": REQUIRED_EVENT_COLUMNS, "items": REQUIRED_ITEM_COLUMNS}
OPTIONAL_COLUMNS = {"events": OPTIONAL_EVENT_COLUMNS, "items": OPTIONAL_ITEM_COLUMNS}

# Epoch numbers above this are milliseconds (1e11 seconds is the year 5138).
EPOCH_MILLISECONDS_ABOVE = 1e11
# pandas keeps nanosecond times, which span roughly the years 1677 to 2262.
_MAX_EPOCH_MICROSECONDS = 9.2e15

_LANDED_PREFIX = re.compile(r"^[0-9a-f]{8}__")
_ISO_DATE_START = re.compile(r"^\d{4}-?\d{2}-?\d{2}")
# A time of day followed by a zone designator: Z, +hh, +hhmm or +hh:mm.
_ISO_WITH_ZONE = re.compile(r"^\d{4}-?\d{2}-?\d{2}[Tt ].*(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$")
_TRUE_TEXTS = frozenset({"true", "t", "yes", "y", "1"})
_FALSE_TEXTS = frozenset({"false", "f", "no", "n", "0"})
_SHOWN_VALUE_LENGTH = 80
_NOT_A_TIME = (
    "is not a time: expected ISO-8601 text (e.g. 2024-05-01T12:30:00Z) or epoch "
    "seconds/milliseconds, between the years 1677 and 2262"
)

# Table layouts: the one place that names the raw columns and their types.
EVENT_TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    (EVENT_ID, "VARCHAR"),
    (USER_ID, "VARCHAR"),
    (ITEM_ID, "VARCHAR"),
    (EVENT_TYPE, "VARCHAR"),
    (OCCURRED_AT, "TIMESTAMP"),
    (VALUE, "DOUBLE"),
    (SESSION_ID, "VARCHAR"),
    (CONTEXT, "VARCHAR"),
    (ATTRIBUTES, "VARCHAR"),
    (SOURCE_FILE, "VARCHAR"),
    (SOURCE_ROW, "BIGINT"),
    (BATCH_ID, "VARCHAR"),
    (LOADED_AT, "TIMESTAMP"),
)
ITEM_TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    (ITEM_ID, "VARCHAR"),
    (TITLE, "VARCHAR"),
    (DESCRIPTION, "VARCHAR"),
    (CATEGORIES, "VARCHAR"),
    (CREATED_AT, "TIMESTAMP"),
    (AVAILABLE, "BOOLEAN"),
    (ATTRIBUTES, "VARCHAR"),
    (SOURCE_FILE, "VARCHAR"),
    (SOURCE_ROW, "BIGINT"),
    (BATCH_ID, "VARCHAR"),
    (LOADED_AT, "TIMESTAMP"),
)
QUARANTINE_TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("kind", "VARCHAR"),
    (SOURCE_FILE, "VARCHAR"),
    (SOURCE_ROW, "BIGINT"),
    ("column_name", "VARCHAR"),
    ("reason", "VARCHAR"),
    ("record", "VARCHAR"),
    (BATCH_ID, "VARCHAR"),
    ("quarantined_at", "TIMESTAMP"),
)
LEDGER_TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("delivery_id", "VARCHAR"),
    ("kind", "VARCHAR"),
    ("file_name", "VARCHAR"),
    ("landed_path", "VARCHAR"),
    ("content_hash", "VARCHAR"),
    ("status", "VARCHAR"),
    ("rows_read", "BIGINT"),
    ("rows_loaded", "BIGINT"),
    ("rows_quarantined", "BIGINT"),
    ("message", "VARCHAR"),
    (BATCH_ID, "VARCHAR"),
    ("processed_at", "TIMESTAMP"),
)
RAW_TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "events": EVENT_TABLE_COLUMNS,
    "items": ITEM_TABLE_COLUMNS,
    "quarantine": QUARANTINE_TABLE_COLUMNS,
    "ingest_ledger": LEDGER_TABLE_COLUMNS,
}
# validate_* return these: the table minus what load_pending stamps on.
CLEAN_COLUMNS = {
    kind: tuple(name for name, _ in RAW_TABLES[kind] if name not in (BATCH_ID, LOADED_AT))
    for kind in KINDS
}
QUARANTINE_COLUMNS = tuple(
    name for name, _ in QUARANTINE_TABLE_COLUMNS if name not in (BATCH_ID, "quarantined_at")
)


class FileRejected(Exception):
    """A whole file cannot be loaded (unreadable, wrong extension, missing required columns)."""


@dataclass(frozen=True)
class FileResult:
    """What happened to one delivered file."""

    file: str
    kind: str
    status: str
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    message: str
    content_hash: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Tables and the landing folder


def ensure_raw_tables(warehouse_path: Path) -> None:
    """Create the ``raw`` schema and its four tables in the warehouse if they are missing."""
    warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(warehouse_path)) as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS raw")
        for table, columns in RAW_TABLES.items():
            body = ", ".join(f"{name} {sql_type}" for name, sql_type in columns)
            con.execute(f"CREATE TABLE IF NOT EXISTS raw.{table} ({body})")


def land_file(source: Path, kind: str, settings: Settings) -> Path:
    """Copy a user's file into the landing folder of its kind; the original is left untouched."""
    _check_kind(kind)
    source = Path(source)
    extension = source.suffix.lower()
    if extension not in SUPPORTED_EXTENSIONS:
        raise ValueError(
            f"cannot land '{source.name}' as {kind}: unsupported extension "
            f"'{source.suffix or '(none)'}'; use one of {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    if not source.is_file():
        raise FileNotFoundError(f"cannot land {source}: no such file")
    folder = settings.landing_folder(kind)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{uuid.uuid4().hex[:8]}__{source.name}"
    # Copy under a hidden name, then rename, so a sensor never picks up a half-written file.
    partial = folder / f".{target.name}.partial"
    shutil.copyfile(source, partial)
    partial.replace(target)
    logger.info("landed %s as %s", source, target)
    return target


def pending_files(kind: str, settings: Settings) -> list[Path]:
    """Files waiting in the landing folder of one kind, oldest first (hidden files skipped)."""
    _check_kind(kind)
    folder = settings.landing_folder(kind)
    if not folder.is_dir():
        return []
    waiting: list[tuple[int, str, Path]] = []
    for path in folder.iterdir():
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            modified = path.stat().st_mtime_ns
        except FileNotFoundError:  # taken away while we looked
            continue
        waiting.append((modified, path.name, path))
    return [path for _, _, path in sorted(waiting)]


def original_name(landed: Path) -> str:
    """The name the user gave the file, without the token that land_file put in front."""
    return _LANDED_PREFIX.sub("", landed.name, count=1)


# ---------------------------------------------------------------------------------------------
# Loading


def load_pending(
    kind: str, settings: Settings, batch_id: str, now: datetime | None = None
) -> list[FileResult]:
    """Load every pending file of one kind; ``now`` (default: the clock) bounds future events."""
    _check_kind(kind)
    ensure_raw_tables(settings.warehouse_path)
    check_time = _naive_utc(now if now is not None else datetime.now(UTC))
    results: list[FileResult] = []
    last_stamp: datetime | None = None
    for landed in pending_files(kind, settings):
        # Audit stamps strictly increase so "latest loaded_at wins" follows delivery order.
        stamp = _naive_utc(datetime.now(UTC))
        if last_stamp is not None and stamp <= last_stamp:
            stamp = last_stamp + timedelta(microseconds=1)
        last_stamp = stamp
        results.append(_load_one(landed, kind, settings, batch_id, check_time, stamp))
    return results


def _load_one(
    landed: Path, kind: str, settings: Settings, batch_id: str, now: datetime, stamp: datetime
) -> FileResult:
    """Ledger, then read, validate and write one file in one transaction, then move it away."""
    name = original_name(landed)
    content_hash = _sha256(landed)
    delivery = _Delivery(
        kind=kind,
        landed=landed,
        name=name,
        content_hash=content_hash,
        batch_id=batch_id,
        stamp=stamp,
    )
    earlier = _earlier_load(settings.warehouse_path, kind, content_hash)
    if earlier is not None:
        return _finish_duplicate(delivery, settings, earlier)
    try:
        frame, malformed = read_landed_file(landed, kind)
    except FileRejected as rejection:
        return _finish_rejected(delivery, settings, str(rejection))
    if kind == "events":
        clean, quarantine = validate_events(frame, name, settings, now)
    else:
        clean, quarantine = validate_items(frame, name, now)
    if not malformed.empty:
        quarantine = pd.concat(
            [part for part in (quarantine, malformed) if not part.empty], ignore_index=True
        ).sort_values(SOURCE_ROW, kind="stable", ignore_index=True)
    counts = (len(frame) + len(malformed), len(clean), len(quarantine))
    if counts[0] != counts[1] + counts[2]:
        raise RuntimeError(
            f"internal error in {kind} file '{name}': {counts[0]} row(s) read but {counts[1]} "
            f"loaded + {counts[2]} quarantined; nothing was written"
        )
    message = f"loaded {counts[1]} of {counts[0]} row(s), quarantined {counts[2]}"
    with duckdb.connect(str(settings.warehouse_path)) as con:
        con.begin()
        try:
            # Re-check inside the transaction: another run may have loaded the same bytes.
            earlier = _earlier_load_in(con, kind, content_hash)
            if earlier is None:
                _insert_frame(con, kind, clean, [batch_id, stamp])
                _insert_frame(con, "quarantine", quarantine, [batch_id, stamp])
                _insert_ledger(con, delivery, LOADED, counts, message)
                con.commit()
            else:
                con.rollback()
        except BaseException:
            con.rollback()
            raise
    if earlier is not None:
        return _finish_duplicate(delivery, settings, earlier)
    logger.info(
        "%s file '%s': read %d, loaded %d, quarantined %d (batch %s)",
        kind,
        name,
        *counts,
        batch_id,
    )
    _move(landed, settings.landing_dir / "archive" / kind, batch_id)
    return delivery.result(LOADED, counts, message)


@dataclass(frozen=True)
class _Delivery:
    kind: str
    landed: Path
    name: str
    content_hash: str
    batch_id: str
    stamp: datetime

    def result(self, status: str, counts: tuple[int, int, int], message: str) -> FileResult:
        rows_read, rows_loaded, rows_quarantined = counts
        return FileResult(
            file=str(self.landed),
            kind=self.kind,
            status=status,
            rows_read=rows_read,
            rows_loaded=rows_loaded,
            rows_quarantined=rows_quarantined,
            message=message,
            content_hash=self.content_hash,
        )


def _finish_duplicate(
    delivery: _Delivery, settings: Settings, earlier: tuple[str, str]
) -> FileResult:
    earlier_name, earlier_batch = earlier
    message = (
        f"{delivery.kind} file '{delivery.name}' has the same content as '{earlier_name}', "
        f"already loaded in batch {earlier_batch}; nothing new was loaded"
    )
    _write_ledger_only(settings.warehouse_path, delivery, DUPLICATE, message)
    logger.info("%s (batch %s)", message, delivery.batch_id)
    _move(delivery.landed, settings.landing_dir / "archive" / delivery.kind, delivery.batch_id)
    return delivery.result(DUPLICATE, (0, 0, 0), message)


def _finish_rejected(delivery: _Delivery, settings: Settings, message: str) -> FileResult:
    _write_ledger_only(settings.warehouse_path, delivery, REJECTED, message)
    folder = settings.landing_dir / "rejected" / delivery.kind
    moved = _move(delivery.landed, folder, delivery.batch_id)
    logger.warning(
        "%s; nothing loaded, file kept as %s (batch %s)", message, moved, delivery.batch_id
    )
    return delivery.result(REJECTED, (0, 0, 0), message)


def _earlier_load(warehouse_path: Path, kind: str, content_hash: str) -> tuple[str, str] | None:
    with duckdb.connect(str(warehouse_path)) as con:
        return _earlier_load_in(con, kind, content_hash)


def _earlier_load_in(
    con: duckdb.DuckDBPyConnection, kind: str, content_hash: str
) -> tuple[str, str] | None:
    row = con.execute(
        "SELECT file_name, batch_id FROM raw.ingest_ledger "
        "WHERE kind = ? AND content_hash = ? AND status = ? ORDER BY processed_at LIMIT 1",
        [kind, content_hash, LOADED],
    ).fetchall()
    return (str(row[0][0]), str(row[0][1])) if row else None


def _write_ledger_only(
    warehouse_path: Path, delivery: _Delivery, status: str, message: str
) -> None:
    with duckdb.connect(str(warehouse_path)) as con:
        _insert_ledger(con, delivery, status, (0, 0, 0), message)


def _insert_ledger(
    con: duckdb.DuckDBPyConnection,
    delivery: _Delivery,
    status: str,
    counts: tuple[int, int, int],
    message: str,
) -> None:
    placeholders = ", ".join("?" for _ in LEDGER_TABLE_COLUMNS)
    con.execute(
        f"INSERT INTO raw.ingest_ledger VALUES ({placeholders})",
        [
            uuid.uuid4().hex,
            delivery.kind,
            delivery.name,
            str(delivery.landed),
            delivery.content_hash,
            status,
            *counts,
            message,
            delivery.batch_id,
            delivery.stamp,
        ],
    )


def _insert_frame(
    con: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame, stamps: list[Any]
) -> None:
    """Append a validated frame; the last two table columns (batch id and time) come as stamps."""
    if frame.empty:
        return
    columns = RAW_TABLES[table]
    from_frame = ", ".join(f"CAST({name} AS {sql_type})" for name, sql_type in columns[:-2])
    view = f"incoming_{table}"
    con.register(view, frame)
    try:
        con.execute(f"INSERT INTO raw.{table} SELECT {from_frame}, ?, ? FROM {view}", stamps)
    finally:
        con.unregister(view)


def _move(landed: Path, folder: Path, batch_id: str) -> Path:
    """Move a processed file out of the landing folder, never overwriting an earlier one."""
    folder.mkdir(parents=True, exist_ok=True)
    safe_batch = re.sub(r"[^A-Za-z0-9._-]", "_", batch_id)
    target = folder / f"{safe_batch}__{landed.name}"
    counter = 1
    while target.exists():
        target = folder / f"{safe_batch}__{counter}__{landed.name}"
        counter += 1
    try:
        shutil.move(landed, target)
    except OSError as error:
        # The rows are committed; a file left behind is seen as a duplicate next time.
        logger.warning("could not move %s to %s: %s", landed, target, error)
        return landed
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Reading


def read_landed_file(path: Path, kind: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a landed file into object columns plus ``source_row``, and its malformed lines.

    CSV cells stay strings; Parquet and JSON values keep their Python types (ints, lists,
    datetimes) for validation to interpret. ``source_row`` is the 1-based record number: the
    data row after the header in CSV and Parquet, the line number in JSON Lines. Raises
    FileRejected when the file cannot be used at all.
    """
    _check_kind(kind)
    name = original_name(path)
    extension = path.suffix.lower()
    malformed = _empty_quarantine()
    source_rows: np.ndarray | None = None
    if extension == ".csv":
        frame = _read_csv(path, name)
    elif extension == ".parquet":
        frame = _read_parquet(path, name)
    elif extension in JSON_LINES_EXTENSIONS:
        frame, source_rows, malformed = _read_json_lines(path, name, kind)
    else:
        raise FileRejected(
            f"cannot read '{name}': unsupported extension '{path.suffix or '(none)'}'; "
            f"deliver {kind} as {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    frame.columns = [str(column).strip() for column in frame.columns]
    if SOURCE_ROW in frame.columns:
        # Keep the user's own column (it ends up in attributes) next to ours.
        frame = frame.rename(columns={SOURCE_ROW: f"{SOURCE_ROW}_in_file"})
    if source_rows is None:
        source_rows = np.arange(1, len(frame) + 1, dtype="int64")
    frame[SOURCE_ROW] = source_rows
    # A JSON Lines file whose every line is malformed has no columns, yet its lines are rows.
    if len(frame) > 0 or malformed.empty:
        missing = [column for column in REQUIRED_COLUMNS[kind] if column not in frame.columns]
        if missing:
            raise FileRejected(
                f"{kind} file '{name}' lacks required column(s): {', '.join(missing)}; "
                f"a {kind} file needs {', '.join(REQUIRED_COLUMNS[kind])} "
                f"(optional: {', '.join(OPTIONAL_COLUMNS[kind])})"
            )
    return frame, malformed


def _read_csv(path: Path, name: str) -> pd.DataFrame:
    try:
        return pd.read_csv(
            path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig"
        )
    except pd.errors.EmptyDataError:
        raise FileRejected(f"cannot read '{name}': the file is empty (no header row)") from None
    except UnicodeDecodeError as error:
        raise FileRejected(
            f"cannot read '{name}': not UTF-8 text ({error}); save it as UTF-8 and deliver again"
        ) from None
    except (pd.errors.ParserError, ValueError, OSError) as error:
        raise FileRejected(
            f"cannot read '{name}': {str(error).strip()}; check its quoting and that every line "
            "has as many fields as the header"
        ) from None


def _read_parquet(path: Path, name: str) -> pd.DataFrame:
    try:
        table = pq.read_table(path)
        # Python objects, not pandas dtypes: integer ids with nulls must not become floats.
        columns = {
            field.name: pd.Series(table.column(index).to_pylist(), dtype=object)
            for index, field in enumerate(table.schema)
        }
    except (pa.ArrowException, OSError, ValueError) as error:
        raise FileRejected(f"cannot read '{name}': {str(error).strip()}") from None
    return pd.DataFrame(columns, index=pd.RangeIndex(table.num_rows))


def _read_json_lines(
    path: Path, name: str, kind: str
) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """(records as columns, their line numbers, quarantine rows for malformed lines)."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise FileRejected(
            f"cannot read '{name}': not UTF-8 text ({error}); save it as UTF-8 and deliver again"
        ) from None
    except OSError as error:
        raise FileRejected(f"cannot read '{name}': {str(error).strip()}") from None
    records: list[dict[str, Any]] = []
    record_lines: list[int] = []
    malformed: list[dict[str, Any]] = []
    # Split on newlines only: str.splitlines would also cut at U+2028 inside JSON strings.
    for line_number, raw_line in enumerate(text.split("\n"), start=1):
        line = raw_line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            reason = f"malformed JSON line {line_number}: {error.msg} (column {error.colno})"
            malformed.append(_malformed_row(kind, name, line_number, reason, line))
            continue
        if not isinstance(record, dict):
            reason = f"malformed JSON line {line_number}: a {type(record).__name__}, not an object"
            malformed.append(_malformed_row(kind, name, line_number, reason, line))
            continue
        records.append(record)
        record_lines.append(line_number)
    if not records and not malformed:
        raise FileRejected(f"cannot read '{name}': the file is empty (no JSON lines)")
    keys: dict[str, None] = {}
    for record in records:
        keys.update(dict.fromkeys(record))
    # Column by column with object dtype, so 7 stays 7 (not 7.0) next to a missing value.
    frame = pd.DataFrame(
        {key: pd.Series([record.get(key) for record in records], dtype=object) for key in keys},
        index=pd.RangeIndex(len(records)),
    )
    quarantine = pd.DataFrame(malformed, columns=list(QUARANTINE_COLUMNS))
    rows = np.asarray(record_lines, dtype="int64")
    return frame, rows, quarantine.astype({SOURCE_ROW: "int64"})


def _malformed_row(
    kind: str, name: str, line_number: int, reason: str, line: str
) -> dict[str, Any]:
    return {
        "kind": kind,
        SOURCE_FILE: name,
        SOURCE_ROW: line_number,
        "column_name": None,
        "reason": reason,
        "record": line,
    }


def _empty_quarantine() -> pd.DataFrame:
    frame = pd.DataFrame({column: pd.Series(dtype=object) for column in QUARANTINE_COLUMNS})
    return frame.astype({SOURCE_ROW: "int64"})


# ---------------------------------------------------------------------------------------------
# Validation


def validate_events(
    frame: pd.DataFrame, source_file: str, settings: Settings, now: datetime
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split event rows into raw.events rows (minus batch stamps) and quarantine rows.

    Each bad row is quarantined once, for the first rule it breaks, in this order: user_id,
    item_id, event_type, timestamp (missing, unparseable, too far after ``now``), value.
    """
    frame = frame.reset_index(drop=True)
    allowed = tuple(settings.event_weights)
    user_ids = _texts(_column(frame, USER_ID))
    item_ids = _texts(_column(frame, ITEM_ID))
    event_types = _texts(_column(frame, EVENT_TYPE))
    raw_types = _column(frame, EVENT_TYPE)
    raw_times = _column(frame, TIMESTAMP)
    times = _parse_times(raw_times)
    raw_values = _column(frame, VALUE)
    values, value_present = _parse_numbers(raw_values)
    load_time = _naive_utc(now)
    too_far = times.too_late | (times.parsed > _latest_allowed(load_time, settings))

    rules = _Rules(frame.index)
    rules.add(user_ids.isna(), USER_ID, "user_id is missing or empty")
    rules.add(item_ids.isna(), ITEM_ID, "item_id is missing or empty")
    rules.add(
        event_types.isna(),
        EVENT_TYPE,
        "event_type is missing or empty; expected one of: " + ", ".join(allowed),
    )
    rules.add(
        ~event_types.isin(allowed),
        EVENT_TYPE,
        lambda index: raw_types[index].map(
            lambda raw: (
                f"event_type {_show(raw)} is not one of the configured event types: "
                + ", ".join(allowed)
            )
        ),
    )
    rules.add(~times.present, TIMESTAMP, "timestamp is missing or empty")
    rules.add(
        times.parsed.isna() & ~times.too_late,
        TIMESTAMP,
        lambda index: raw_times[index].map(lambda raw: f"timestamp {_show(raw)} {_NOT_A_TIME}"),
    )
    rules.add(
        too_far,
        TIMESTAMP,
        lambda index: raw_times[index].map(
            lambda raw: (
                f"timestamp {_show(raw)} is more than "
                f"{settings.future_tolerance_hours:g} h after the load time "
                f"{load_time.isoformat(timespec='seconds')} UTC"
            )
        ),
    )
    rules.add(
        (event_types == "rate") & values.isna(),
        VALUE,
        lambda index: raw_values[index].map(
            lambda raw: (
                "a 'rate' event needs a numeric value, got "
                + (_show(raw) if _is_present(raw) else "none")
            )
        ),
    )
    rules.add(
        value_present & values.isna(),
        VALUE,
        lambda index: raw_values[index].map(lambda raw: f"value {_show(raw)} is not a number"),
    )

    good = rules.passed()
    clean = pd.DataFrame(
        {
            EVENT_ID: _texts(_column(frame, EVENT_ID))[good],
            USER_ID: user_ids[good],
            ITEM_ID: item_ids[good],
            EVENT_TYPE: event_types[good],
            OCCURRED_AT: times.parsed[good],
            VALUE: values[good],
            SESSION_ID: _texts(_column(frame, SESSION_ID))[good],
            CONTEXT: _column(frame, CONTEXT)[good].map(_json_text).astype(object),
            ATTRIBUTES: _attributes(frame.loc[good], "events"),
            SOURCE_FILE: source_file,
            SOURCE_ROW: _source_rows(frame)[good],
        },
        columns=list(CLEAN_COLUMNS["events"]),
    )
    missing_ids = clean[EVENT_ID].isna()
    if missing_ids.any():
        clean.loc[missing_ids, EVENT_ID] = derived_event_ids(clean.loc[missing_ids])
    return clean.reset_index(drop=True), rules.quarantine(frame, "events", source_file)


def validate_items(
    frame: pd.DataFrame, source_file: str, now: datetime
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split item rows into raw.items rows (minus batch stamps) and quarantine rows.

    Rules, first broken wins: item_id, title, created_at (when given, a time), available (when
    given, a boolean; missing means available). ``now`` is taken for symmetry with
    validate_events, but no item rule reads the clock: a future created_at is a planned release.
    """
    del now
    frame = frame.reset_index(drop=True)
    item_ids = _texts(_column(frame, ITEM_ID))
    titles = _texts(_column(frame, TITLE))
    raw_created = _column(frame, CREATED_AT)
    created = _parse_times(raw_created)
    raw_available = _column(frame, AVAILABLE)
    available = raw_available.map(_parse_flag)

    rules = _Rules(frame.index)
    rules.add(item_ids.isna(), ITEM_ID, "item_id is missing or empty")
    rules.add(titles.isna(), TITLE, "title is missing or empty")
    rules.add(
        created.present & created.parsed.isna(),
        CREATED_AT,
        lambda index: raw_created[index].map(lambda raw: f"created_at {_show(raw)} {_NOT_A_TIME}"),
    )
    rules.add(
        available.isna(),
        AVAILABLE,
        lambda index: raw_available[index].map(
            lambda raw: f"available {_show(raw)} is not a boolean (use true/false, 1/0, yes/no)"
        ),
    )

    good = rules.passed()
    clean = pd.DataFrame(
        {
            ITEM_ID: item_ids[good],
            TITLE: titles[good],
            DESCRIPTION: _texts(_column(frame, DESCRIPTION))[good],
            CATEGORIES: _column(frame, CATEGORIES)[good].map(_categories_text).astype(object),
            CREATED_AT: created.parsed[good],
            AVAILABLE: available[good].astype(bool),
            ATTRIBUTES: _attributes(frame.loc[good], "items"),
            SOURCE_FILE: source_file,
            SOURCE_ROW: _source_rows(frame)[good],
        },
        columns=list(CLEAN_COLUMNS["items"]),
    )
    return clean.reset_index(drop=True), rules.quarantine(frame, "items", source_file)


def _latest_allowed(load_time: datetime, settings: Settings) -> pd.Timestamp:
    """The latest event time accepted; a huge tolerance (even inf) means no limit."""
    try:
        return pd.Timestamp(load_time + timedelta(hours=settings.future_tolerance_hours))
    except (OverflowError, ValueError):
        return pd.Timestamp.max


def derived_event_ids(events: pd.DataFrame) -> pd.Series:
    """Deterministic ids for events delivered without one, so a re-delivered event collapses.

    The id is a sha256 of user_id, item_id, event_type, occurred_at (ISO, microseconds) and
    value; ``events`` has the columns of raw.events (occurred_at parsed, value a float or NaN).
    """
    times = np.datetime_as_string(events[OCCURRED_AT].to_numpy(dtype="datetime64[us]"), unit="us")
    values = ["" if pd.isna(number) else repr(float(number)) for number in events[VALUE]]
    keys = zip(events[USER_ID], events[ITEM_ID], events[EVENT_TYPE], times, values, strict=True)
    return pd.Series(
        [hashlib.sha256("\x1f".join(map(str, key)).encode()).hexdigest()[:32] for key in keys],
        index=events.index,
        dtype=object,
    )


class _Rules:
    """Row rules applied in order; a row keeps only the first rule it breaks."""

    def __init__(self, index: pd.Index) -> None:
        self.reasons = pd.Series(None, index=index, dtype=object)
        self.columns = pd.Series(None, index=index, dtype=object)

    def add(
        self, broken: pd.Series, column: str, reason: str | Callable[[pd.Index], pd.Series]
    ) -> None:
        """Quarantine rows that pass every earlier rule but break this one (reason per row)."""
        hits = broken.astype(bool) & self.reasons.isna()
        if not hits.any():
            return
        index = hits.index[hits.to_numpy()]
        self.reasons[index] = reason if isinstance(reason, str) else reason(index)
        self.columns[index] = column

    def passed(self) -> pd.Series:
        return self.reasons.isna()

    def quarantine(self, frame: pd.DataFrame, kind: str, source_file: str) -> pd.DataFrame:
        failed = self.reasons.notna()
        rows = frame.loc[failed]
        originals = [column for column in frame.columns if column != SOURCE_ROW]
        records = [
            json.dumps(
                {column: _json_safe(value) for column, value in zip(originals, row, strict=True)},
                ensure_ascii=False,
            )
            for row in rows[originals].itertuples(index=False, name=None)
        ]
        quarantine = pd.DataFrame(
            {
                "kind": kind,
                SOURCE_FILE: source_file,
                SOURCE_ROW: _source_rows(frame)[failed].to_numpy(dtype="int64"),
                "column_name": self.columns[failed].to_numpy(dtype=object),
                "reason": self.reasons[failed].to_numpy(dtype=object),
                "record": pd.Series(records, dtype=object).to_numpy(),
            },
            columns=list(QUARANTINE_COLUMNS),
        )
        return quarantine if len(quarantine) else _empty_quarantine()


# ---------------------------------------------------------------------------------------------
# Value parsing (vectorised where the column allows it)


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame.columns:
        return frame[name].astype(object)
    return pd.Series(None, index=frame.index, dtype=object)


def _source_rows(frame: pd.DataFrame) -> pd.Series:
    if SOURCE_ROW in frame.columns:
        return frame[SOURCE_ROW].astype("int64")
    return pd.Series(np.arange(1, len(frame) + 1), index=frame.index, dtype="int64")


def _is_present(value: object) -> bool:
    """False for None, NaN, NaT and blank text."""
    if value is None or value is pd.NaT:
        return False
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, float | np.floating):
        return not math.isnan(value)
    return True


def _all_strings(values: pd.Series) -> bool:
    return pd.api.types.infer_dtype(values, skipna=False) in ("string", "empty")


def _texts(values: pd.Series) -> pd.Series:
    """Text identifiers and labels: stripped strings, None when empty; 7 and 7.0 become '7'."""
    if _all_strings(values):
        stripped = values.str.strip()
        return stripped.where(stripped != "", None).astype(object)
    return values.map(_text).astype(object)


def _text(value: object) -> str | None:
    if not _is_present(value):
        return None
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool | np.bool_):
        return str(bool(value)).lower()
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        return str(int(number)) if number.is_integer() else repr(number)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return json.dumps(_json_safe(value), ensure_ascii=False)


def _kinds(values: pd.Series) -> pd.Series:
    """Classify each cell as missing, text, number, time or other."""
    if _all_strings(values):
        blank = values.str.strip() == ""
        return pd.Series(np.where(blank, "missing", "text"), index=values.index)
    return values.map(_kind)


def _kind(value: object) -> str:
    if not _is_present(value):
        return "missing"
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool | np.bool_):
        return "other"
    if isinstance(value, int | float | Decimal | np.integer | np.floating):
        return "number"
    if isinstance(value, datetime | date):
        return "time"
    return "other"


def _parse_numbers(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(finite floats with NaN where missing or not a number, mask of cells that hold something)."""
    kinds = _kinds(values)
    numbers = pd.Series(np.nan, index=values.index, dtype="float64")
    text = kinds == "text"
    if text.any():
        numbers[text] = pd.to_numeric(values[text].str.strip(), errors="coerce").astype("float64")
    numeric = kinds == "number"
    if numeric.any():
        numbers[numeric] = values[numeric].map(float).astype("float64")
    numbers = numbers.where(np.isfinite(numbers))
    return numbers, kinds != "missing"


class _Times(NamedTuple):
    """Parsed time cells: naive UTC times, which cells hold anything, which lie past 2262."""

    parsed: pd.Series
    present: pd.Series
    too_late: pd.Series


def _parse_times(cells: pd.Series) -> _Times:
    """Parse time cells; NaT where missing, unparseable or outside pandas' 1677-2262 range.

    ISO-8601 text with a zone is converted to UTC, without one it is taken as UTC; numbers (and
    numeric text) are epoch seconds, or milliseconds above 1e11.
    """
    kinds = _kinds(cells)
    times = pd.Series(pd.NaT, index=cells.index, dtype="datetime64[ns]")
    too_late = pd.Series(False, index=cells.index)
    text = cells[kinds == "text"].str.strip()
    numeric_text = pd.to_numeric(text, errors="coerce")
    is_number = numeric_text.notna()
    epochs = pd.concat(
        [
            numeric_text[is_number].astype("float64"),
            cells[kinds == "number"].map(float).astype("float64"),
        ]
    )
    if len(epochs):
        times[epochs.index], too_late[epochs.index] = _epochs_to_times(epochs)
    iso = text[~is_number]
    iso = iso[iso.str.match(_ISO_DATE_START)]
    with_zone = iso.str.match(_ISO_WITH_ZONE)
    # Parsed apart: pandas applies one string's offset to its zone-less neighbours.
    for group in (iso[with_zone], iso[~with_zone]):
        if len(group):
            parsed = pd.to_datetime(group, utc=True, errors="coerce", format="ISO8601")
            times[group.index] = parsed.dt.tz_convert(None)
    failed_iso = iso[times[iso.index].isna()]
    if len(failed_iso):
        too_late[failed_iso.index] = failed_iso.map(_iso_after_supported_range)
    stamped = kinds == "time"
    if stamped.any():
        times[stamped] = cells[stamped].map(_time_value).astype("datetime64[ns]")
        too_late[stamped] = cells[stamped].map(lambda moment: moment.year > pd.Timestamp.max.year)
    return _Times(times, kinds != "missing", too_late.astype(bool))


def _epochs_to_times(epochs: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(times, mask of epochs too large to represent) for epoch seconds or milliseconds."""
    seconds = epochs.where(epochs <= EPOCH_MILLISECONDS_ABOVE, epochs / 1000.0)
    microseconds = (seconds * 1e6).round()
    usable = np.isfinite(microseconds) & (microseconds.abs() < _MAX_EPOCH_MICROSECONDS)
    times = pd.Series(pd.NaT, index=epochs.index, dtype="datetime64[ns]")
    if usable.any():
        times[usable] = pd.to_datetime(microseconds[usable].astype("int64"), unit="us")
    return times, ~usable & (microseconds >= _MAX_EPOCH_MICROSECONDS)


def _iso_after_supported_range(text: str) -> bool:
    """True for a valid ISO-8601 time that pandas cannot hold because it lies after 2262."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return False
    return moment.year > pd.Timestamp.max.year


def _time_value(value: date) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, OverflowError):  # out of pandas' range, e.g. the year 1
        return pd.NaT
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp


def _naive_utc(moment: datetime) -> datetime:
    """A datetime as naive UTC; a naive one is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def _parse_flag(value: object) -> bool | None:
    """True/False for a boolean cell, True when missing (the default), None when unreadable."""
    if not _is_present(value):
        return True
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | float | np.integer | np.floating) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE_TEXTS:
            return True
        if text in _FALSE_TEXTS:
            return False
    return None


def _categories_text(value: object) -> str | None:
    """'|'-joined categories from a list or a '|'-separated (or JSON array) string."""
    if isinstance(value, str) and value.strip().startswith("["):
        with contextlib.suppress(json.JSONDecodeError):
            value = json.loads(value)
    if isinstance(value, list | tuple | np.ndarray):
        parts = [_text(part) for part in value]
    elif _is_present(value):
        parts = str(value).split(CATEGORY_SEPARATOR)
    else:
        return None
    kept = [part.strip() for part in parts if part is not None and part.strip()]
    return CATEGORY_SEPARATOR.join(kept) or None


def _json_text(value: object) -> str | None:
    """JSON text for a context cell: JSON given as text is kept, anything else is encoded."""
    if not _is_present(value):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            json.loads(text)
        except json.JSONDecodeError:
            return json.dumps(text, ensure_ascii=False)
        return text
    return json.dumps(_json_safe(value), ensure_ascii=False)


def _attributes(frame: pd.DataFrame, kind: str) -> pd.Series:
    """Columns outside the contract as one JSON object per row (None when the row has none)."""
    known = {*REQUIRED_COLUMNS[kind], *OPTIONAL_COLUMNS[kind], SOURCE_ROW}
    extras = [column for column in frame.columns if column not in known]
    if not extras:
        return pd.Series(None, index=frame.index, dtype=object)
    objects = []
    for row in frame[extras].itertuples(index=False, name=None):
        kept = {
            column: _json_safe(value)
            for column, value in zip(extras, row, strict=True)
            if _is_present(value)
        }
        objects.append(json.dumps(kept, ensure_ascii=False) if kept else None)
    return pd.Series(objects, index=frame.index, dtype=object)


def _json_safe(value: object) -> Any:
    """A value json.dumps accepts (NaN becomes null, times become ISO text)."""
    if value is None or value is pd.NaT or isinstance(value, str | bool):
        return value
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, Sequence | np.ndarray | set):
        return [_json_safe(item) for item in value]
    return str(value)


def _show(value: object) -> str:
    """A cell for a message: its repr, shortened."""
    shown = repr(_json_safe(value))
    if len(shown) > _SHOWN_VALUE_LENGTH:
        shown = shown[: _SHOWN_VALUE_LENGTH - 3] + "..."
    return shown


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of: {', '.join(KINDS)}")
