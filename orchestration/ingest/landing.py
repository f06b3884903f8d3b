"""Landing files into the raw warehouse tables, with a ledger of deliveries and a row quarantine.

A delivery is one file of one kind (``events`` or ``items``) in CSV, Parquet or JSON Lines (the
text formats may be gzipped). Each file is loaded exactly once: its rows either land in
``raw.<kind>`` or in ``raw.quarantine`` with the first rule they break, and one
``raw.ingest_ledger`` row records the outcome, all in one DuckDB transaction. Files that cannot
be read at all are rejected whole. DuckDB reads the file with its own readers (``sources.py``)
and checks the rows in SQL (``rules.py``), streaming; this module keeps the landing folder, the
ledger and the transaction. It is plain Python (no dagster import)
so the assets, the CLI and the tests share it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from ml.constants import (
    ATTRIBUTES,
    AVAILABLE,
    CATEGORIES,
    CONTEXT,
    CREATED_AT,
    DESCRIPTION,
    EVENT_ID,
    EVENT_TYPE,
    ITEM_ID,
    OCCURRED_AT,
    SESSION_ID,
    TITLE,
    USER_ID,
    VALUE,
)
from orchestration.ingest.rules import (
    SOURCE_ROW,
    CheckedRows,
    checked_rows,
    literal,
    user_texts,
)
from orchestration.ingest.sources import (
    SUPPORTED_EXTENSIONS,
    FileRejected,
    Source,
    count_rows,
    delivered_format,
    open_frame,
    opened_source,
    readable_path,
    unread_columns,
    unreadable,
    unsupported_extension,
)
from orchestration.privacy.landed_files import rewrite_events_file
from orchestration.settings import Settings

logger = logging.getLogger("freshrank.ingest")

KINDS = ("events", "items")

LOADED = "loaded"
DUPLICATE = "duplicate"
REJECTED = "rejected"

SOURCE_FILE = "source_file"
QUARANTINE_SHOWN = 3  # quarantined rows a load's message describes (raw.quarantine has them all)
BATCH_ID = "batch_id"
LOADED_AT = "loaded_at"

WITHHELD_RECORD = "(withheld: user ids are pseudonymised and this line could not be parsed)"
_LANDED_PREFIX = re.compile(r"^[0-9a-f]{8}__")
# Quarantine rows of a file without malformed lines.
_NO_ROWS = (
    f"SELECT NULL::BIGINT AS {SOURCE_ROW}, NULL::VARCHAR AS column_name, "
    "NULL::VARCHAR AS reason, NULL::VARCHAR AS record LIMIT 0"
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
        _create_raw_tables(con)


def _create_raw_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    for table, columns in RAW_TABLES.items():
        body = ", ".join(f"{name} {sql_type}" for name, sql_type in columns)
        con.execute(f"CREATE TABLE IF NOT EXISTS raw.{table} ({body})")


def land_file(source: Path, kind: str, settings: Settings) -> Path:
    """Copy a user's file into the landing folder of its kind; the original is left untouched."""
    _check_kind(kind)
    source = Path(source)
    if delivered_format(source) is None:
        raise ValueError(
            f"cannot land '{source.name}' as {kind}: unsupported extension "
            f"'{unsupported_extension(source)}'; use one of {', '.join(SUPPORTED_EXTENSIONS)}"
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
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    check_time = _naive_utc(now if now is not None else datetime.now(UTC))
    results: list[FileResult] = []
    last_stamp: datetime | None = None
    # One connection for the whole batch: opening a DuckDB file costs more than a small load.
    with _connect(settings.warehouse_path) as con:
        _create_raw_tables(con)
        for landed in pending_files(kind, settings):
            # Audit stamps strictly increase so "latest loaded_at wins" follows delivery order.
            stamp = _naive_utc(datetime.now(UTC))
            if last_stamp is not None and stamp <= last_stamp:
                stamp = last_stamp + timedelta(microseconds=1)
            last_stamp = stamp
            delivery = _Delivery(
                kind, landed, original_name(landed), _sha256(landed), batch_id, stamp
            )
            results.append(_load_one(con, delivery, settings, check_time))
    return results


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


class _AlreadyLoaded(Exception):
    """Another run loaded the same content between our first look and our transaction."""

    def __init__(self, earlier: tuple[str, str]) -> None:
        super().__init__(earlier)
        self.earlier = earlier


def _load_one(
    con: duckdb.DuckDBPyConnection, delivery: _Delivery, settings: Settings, now: datetime
) -> FileResult:
    """Ledger, then read, check and write one file in one transaction, then move it away."""
    try:
        counts, message = _load_rows(con, delivery, settings, now)
    except FileRejected as rejection:
        return _finish_rejected(con, delivery, settings, str(rejection))
    except _AlreadyLoaded as loaded:
        return _finish_duplicate(con, delivery, settings, loaded.earlier)
    logger.info(
        "%s file '%s': read %d, loaded %d, quarantined %d (batch %s)",
        delivery.kind,
        delivery.name,
        *counts,
        delivery.batch_id,
    )
    _archive(delivery, settings)
    return delivery.result(LOADED, counts, message)


def _load_rows(
    con: duckdb.DuckDBPyConnection, delivery: _Delivery, settings: Settings, now: datetime
) -> tuple[tuple[int, int, int], str]:
    """Read, check and write one file's rows and its ledger row in one transaction; the
    counts (read, loaded, quarantined) and what to tell the person who delivered the file."""
    earlier = _earlier_load_in(con, delivery.kind, delivery.content_hash)
    if earlier is not None:
        raise _AlreadyLoaded(earlier)
    with (
        readable_path(delivery.landed) as path,
        opened_source(con, path, delivery.kind, delivery.name) as source,
    ):
        # Read whole before the transaction: an unreadable file is rejected with nothing begun.
        rows_read = count_rows(con, source, delivery.name)
        checked = _checked(con, delivery.kind, source, settings, now)
        con.begin()
        try:
            # Again inside the transaction, so that two runs never both load the same bytes.
            earlier = _earlier_load_in(con, delivery.kind, delivery.content_hash)
            if earlier is not None:
                raise _AlreadyLoaded(earlier)
            counts = _write_rows(con, delivery, source, checked, rows_read)
            shown = _first_quarantined(con, delivery) if counts[2] else []
            message = _loaded_message(counts, shown) + _absent_columns(delivery.kind, source, shown)
            _insert_ledger(con, delivery, LOADED, counts, message)
            con.commit()
        except BaseException:
            con.rollback()
            raise
    return counts, message


def _checked(
    con: duckdb.DuckDBPyConnection,
    kind: str,
    source: Source,
    settings: Settings | None,
    now: datetime,
) -> CheckedRows:
    """The rule checks for one source; events take the configured types and future bound, and
    their user ids are pseudonymised when configured."""
    if settings is None:
        return checked_rows(kind, source.view, source.columns)
    load_time = _naive_utc(now)
    too_late = (
        f" is more than {settings.future_tolerance_hours:g} h after the load time "
        f"{load_time.isoformat(timespec='seconds')} UTC"
    )
    pseudonymiser = settings.pseudonymiser
    pseudonym = None
    if pseudonymiser is not None:
        pseudonym = pseudonymiser.lookup(con, user_texts(source.view, source.columns))
    return checked_rows(
        kind,
        source.view,
        source.columns,
        allowed=tuple(settings.event_weights),
        latest=_latest_allowed(load_time, settings),
        too_late=too_late,
        pseudonym=pseudonym,
    )


def _write_rows(
    con: duckdb.DuckDBPyConnection,
    delivery: _Delivery,
    source: Source,
    checked: CheckedRows,
    rows_read: int,
) -> tuple[int, int, int]:
    """Insert the clean rows and the quarantined ones; (read, loaded, quarantined)."""
    stamps = {"file": delivery.name, "batch": delivery.batch_id, "stamp": delivery.stamp}
    table_columns = ", ".join(name for name, _ in RAW_TABLES[delivery.kind])
    clean = ", ".join(checked.clean.values())
    quarantine_columns = ", ".join(name for name, _ in QUARANTINE_TABLE_COLUMNS)
    try:
        (rows_loaded,) = _one(
            con,
            f"INSERT INTO raw.{delivery.kind} ({table_columns}) "
            f"SELECT {clean}, $file, {SOURCE_ROW}, $batch, $stamp "
            f"FROM ({checked.select}) WHERE broken_rule IS NULL",
            stamps,
        )
        (rows_quarantined,) = _one(
            con,
            f"INSERT INTO raw.quarantine ({quarantine_columns}) "
            f"SELECT $kind, $file, {SOURCE_ROW}, column_name, reason, record, $batch, $stamp "
            f"FROM ({_quarantined(checked, source)}) ORDER BY {SOURCE_ROW}",
            {**stamps, "kind": delivery.kind},
        )
    except duckdb.Error as error:
        raise unreadable(delivery.name, error) from error
    counts = (int(rows_read), int(rows_loaded), int(rows_quarantined))
    if counts[0] != counts[1] + counts[2]:
        raise RuntimeError(
            f"internal error in {delivery.kind} file '{delivery.name}': {counts[0]} row(s) read "
            f"but {counts[1]} loaded + {counts[2]} quarantined; nothing was written"
        )
    return counts


def _quarantined(checked: CheckedRows, source: Source) -> str:
    """SQL of the rows that break a rule (and malformed lines): source_row, column, reason,
    record."""
    broken = (
        f"SELECT {SOURCE_ROW}, {checked.column_name} AS column_name, {checked.reason} AS reason, "
        f"{checked.record} AS record FROM ({checked.select}) WHERE broken_rule IS NOT NULL"
    )
    if source.malformed is None:
        return broken
    if checked.pseudonymised:
        # A line that is not JSON cannot have its user id replaced: keep why, not the line.
        return (
            f"{broken} UNION ALL SELECT {SOURCE_ROW}, column_name, reason, "
            f"{literal(WITHHELD_RECORD)} AS record FROM ({source.malformed})"
        )
    return f"{broken} UNION ALL {source.malformed}"


def _first_quarantined(con: duckdb.DuckDBPyConnection, delivery: _Delivery) -> list[tuple]:
    """(row, column, reason) of the delivery's first quarantined rows, at most QUARANTINE_SHOWN.
    Its stamp tells them apart from another file of the same name in the same batch."""
    return con.execute(
        f"SELECT {SOURCE_ROW}, column_name, reason FROM raw.quarantine WHERE kind = $kind "
        f"AND {BATCH_ID} = $batch AND {SOURCE_FILE} = $file AND quarantined_at = $stamp "
        f"ORDER BY {SOURCE_ROW} LIMIT $shown",
        {
            "kind": delivery.kind,
            "batch": delivery.batch_id,
            "file": delivery.name,
            "stamp": delivery.stamp,
            "shown": QUARANTINE_SHOWN,
        },
    ).fetchall()


def _loaded_message(counts: tuple[int, int, int], quarantined: list[tuple]) -> str:
    """What happened to the file's rows, with where and why the first quarantined ones broke."""
    message = f"loaded {counts[1]} of {counts[0]} row(s), quarantined {counts[2]}"
    if not quarantined:
        return message
    shown = "; ".join(
        f"row {row}" + (f", column {column}" if column else "") + f": {reason}"
        for row, column, reason in quarantined
    )
    more = counts[2] - len(quarantined)
    return f"{message}: {shown}" + (f"; and {more} more in raw.quarantine" if more > 0 else "")


def _absent_columns(kind: str, source: Source, quarantined: list[tuple]) -> str:
    """When rows were quarantined for a contract column the file does not have (a 'rate' event
    needs a value), say so and name the columns the contract does not read: the value is
    often there under another name (``rating``)."""
    present = {column.lower() for column in source.columns}
    absent = sorted({column for _, column, _ in quarantined if column and column not in present})
    if not absent:
        return ""
    return f"; the file has no {', '.join(absent)} column" + unread_columns(
        kind, list(source.columns), absent
    )


def _finish_duplicate(
    con: duckdb.DuckDBPyConnection,
    delivery: _Delivery,
    settings: Settings,
    earlier: tuple[str, str],
) -> FileResult:
    earlier_name, earlier_batch = earlier
    message = (
        f"{delivery.kind} file '{delivery.name}' has the same content as '{earlier_name}', "
        f"already loaded in batch {earlier_batch}; nothing new was loaded"
    )
    _insert_ledger(con, delivery, DUPLICATE, (0, 0, 0), message)
    logger.info("%s (batch %s)", message, delivery.batch_id)
    _archive(delivery, settings)
    return delivery.result(DUPLICATE, (0, 0, 0), message)


def _finish_rejected(
    con: duckdb.DuckDBPyConnection, delivery: _Delivery, settings: Settings, message: str
) -> FileResult:
    _insert_ledger(con, delivery, REJECTED, (0, 0, 0), message)
    folder = settings.rejected_folder(delivery.kind)
    moved = _move(delivery.landed, folder, delivery.batch_id)
    logger.warning(
        "%s; nothing loaded, file kept as %s (batch %s)", message, moved, delivery.batch_id
    )
    return delivery.result(REJECTED, (0, 0, 0), message)


def _earlier_load_in(
    con: duckdb.DuckDBPyConnection, kind: str, content_hash: str
) -> tuple[str, str] | None:
    row = con.execute(
        "SELECT file_name, batch_id FROM raw.ingest_ledger "
        "WHERE kind = ? AND content_hash = ? AND status = ? ORDER BY processed_at LIMIT 1",
        [kind, content_hash, LOADED],
    ).fetchall()
    return (str(row[0][0]), str(row[0][1])) if row else None


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


def _archive(delivery: _Delivery, settings: Settings) -> Path:
    """Move a processed file to the archive. With pseudonymisation on, an events file is first
    rewritten with its user ids pseudonymised, so the archive never keeps the ids replaced. (A
    crash between the two leaves the rewritten file to be loaded again: its events keep their
    ids, and the marts deduplicate them.)"""
    pseudonymiser = settings.pseudonymiser
    if pseudonymiser is not None and delivery.kind == "events":
        rewrite_events_file(delivery.landed, pseudonymiser=pseudonymiser)
        if not delivery.landed.exists():  # no line was a record: nothing to keep
            return delivery.landed
    return _move(delivery.landed, settings.archive_folder(delivery.kind), delivery.batch_id)


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
# The same reading and checking on DataFrames, for small files, the API's tests and inspection


def read_landed_file(path: Path, kind: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A landed file's rows (``source_row`` plus its columns, as DuckDB read them: Arrow-backed
    columns that keep their types, JSON values included) and its malformed JSON lines as
    quarantine rows. Raises FileRejected when the file cannot be used at all. Holds the whole
    file in memory: for inspection and small files; loading streams instead."""
    _check_kind(kind)
    name = original_name(path)
    with (
        _connect(None) as con,
        readable_path(path) as readable,
        opened_source(con, readable, kind, name) as source,
    ):
        count_rows(con, source, name)
        try:
            rows = con.execute(f"SELECT * FROM {source.view} ORDER BY {SOURCE_ROW}")
            frame = rows.to_arrow_table().to_pandas(types_mapper=pd.ArrowDtype)
            malformed = _quarantine_frame(con, kind, name, source.malformed or _NO_ROWS)
        except duckdb.Error as error:
            raise unreadable(name, error) from error
    return frame, malformed


def validate_events(
    frame: pd.DataFrame, source_file: str, settings: Settings, now: datetime
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split event rows into raw.events rows (minus batch stamps) and quarantine rows.

    Each bad row is quarantined once, for the first rule it breaks, in this order: user_id,
    item_id, event_type, timestamp (missing, unparseable, too far after ``now``), value.
    """
    return _validate_frame("events", frame, source_file, settings, now)


def validate_items(
    frame: pd.DataFrame, source_file: str, now: datetime
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split item rows into raw.items rows (minus batch stamps) and quarantine rows.

    Rules, first broken wins: item_id, title, created_at (when given, a time), available (when
    given, a boolean; missing means available). ``now`` is taken for symmetry with
    validate_events, but no item rule reads the clock: a future created_at is a planned release.
    """
    return _validate_frame("items", frame, source_file, None, now)


def _validate_frame(
    kind: str, frame: pd.DataFrame, source_file: str, settings: Settings | None, now: datetime
) -> tuple[pd.DataFrame, pd.DataFrame]:
    with _connect(None) as con:
        source = open_frame(con, frame)
        checked = _checked(con, kind, source, settings, now)
        clean_columns = ", ".join(f"{sql} AS {name}" for name, sql in checked.clean.items())
        clean = con.execute(
            f"SELECT {clean_columns}, $file AS {SOURCE_FILE}, {SOURCE_ROW} "
            f"FROM ({checked.select}) WHERE broken_rule IS NULL ORDER BY {SOURCE_ROW}",
            {"file": source_file},
        ).df()
        bad = _quarantine_frame(con, kind, source_file, _quarantined(checked, source))
    return clean, bad


def _quarantine_frame(
    con: duckdb.DuckDBPyConnection, kind: str, source_file: str, rows: str
) -> pd.DataFrame:
    """Quarantine rows from SQL giving source_row, column_name, reason and record."""
    return con.execute(
        f"SELECT $kind AS kind, $file AS {SOURCE_FILE}, {SOURCE_ROW}, column_name, reason, record "
        f"FROM ({rows}) ORDER BY {SOURCE_ROW}",
        {"kind": kind, "file": source_file},
    ).df()


# ---------------------------------------------------------------------------------------------
# Helpers


@contextlib.contextmanager
def _connect(warehouse_path: Path | None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection to the warehouse (or in memory) that reads zone-less times as UTC."""
    con = duckdb.connect(str(warehouse_path) if warehouse_path is not None else ":memory:")
    try:
        con.execute("SET SESSION TimeZone = 'UTC'")
        # JSON values keep their type through Arrow (read_landed_file -> validate_*).
        con.execute("SET arrow_lossless_conversion = true")
        # Filter pushdown would copy the whole rule CASE from `WHERE broken_rule IS NULL` into
        # a filter below the layers that compute it, parsing and checking every row twice. The
        # setting is global to the database, so it is put back before the connection closes.
        (disabled,) = _one(con, "SELECT current_setting('disabled_optimizers')")
        also = ",".join(filter(None, [disabled, "filter_pushdown"]))
        con.execute(f"SET disabled_optimizers = {literal(also)}")
        try:
            yield con
        finally:
            con.execute(f"SET disabled_optimizers = {literal(disabled)}")
    finally:
        con.close()


def _one(
    con: duckdb.DuckDBPyConnection, sql: str, parameters: dict[str, Any] | None = None
) -> tuple[Any, ...]:
    row = con.execute(sql, parameters).fetchone()
    assert row is not None
    return row


def _latest_allowed(load_time: datetime, settings: Settings) -> datetime | None:
    """The latest event time accepted; None (no limit) for a huge tolerance, even inf."""
    try:
        return load_time + timedelta(hours=settings.future_tolerance_hours)
    except (OverflowError, ValueError):
        return None


def _naive_utc(moment: datetime) -> datetime:
    """A datetime as naive UTC; a naive one is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of: {', '.join(KINDS)}")
