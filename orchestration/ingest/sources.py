"""Landed files opened as DuckDB views by DuckDB's own readers, plus the little they cannot do.

Every file becomes a temporary view with ``source_row`` (the 1-based record number: the data
row after the header in CSV and Parquet, the line number in JSON Lines) and the file's columns,
names stripped. Python only reads a CSV header (DuckDB's sniffer would skip ragged lines instead
of failing), streams JSON Lines into DuckDB with their line numbers (its JSON reader drops a
malformed line without saying where), and turns reader errors into messages a user can act on.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import duckdb
import pyarrow as pa

from orchestration.ingest.rules import (
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    SOURCE_ROW,
    identifier,
    literal,
)

FORMATS = (".csv", ".parquet", ".jsonl", ".ndjson")
# Text formats may also come gzip-compressed (events.csv.gz: what exports to object stores
# usually are); Parquet compresses inside the file.
GZIP = ".gz"
GZIP_FORMATS = (".csv", ".jsonl", ".ndjson")
SUPPORTED_EXTENSIONS = (*FORMATS, *(f"{extension}{GZIP}" for extension in GZIP_FORMATS))
CUT_SHORT = "the compressed file ends early (cut short in transfer?); deliver it again"
# Strict CSV: explicit columns from the header, every line checked against them; short lines
# are padded with NULL (their rows are quarantined by the rules), long ones reject the file.
CSV_OPTIONS = (
    "header = true, auto_detect = false, quote = '\"', escape = '\"', "
    "strict_mode = true, null_padding = true"
)
# Field separators a CSV may use: the one that splits the header into the most fields wins,
# the comma on a tie (spreadsheets in many locales write ';', and tab-separated files are
# often delivered as .csv).
CSV_DELIMITERS = (",", ";", "\t", "|")
# DuckDB's parallel reader cannot pad short lines in a file whose quoted fields hold newlines;
# such a file is read again by the single-threaded reader.
_PARALLEL_PADDING_REFUSED = "does not support null_padding in conjunction with quoted new lines"
READ_BLOCK_BYTES = 8 << 20
LANDED_ROWS = "landed_rows"
_GLOB_CHARACTERS = frozenset("*?[]{}")
# DuckDB's JSON parser also accepts a trailing comma ({"a": 1,}); lines that may hold one are
# checked by Python's strict parser as they stream past.
_TRAILING_COMMA = re.compile(r",\s*[\]}]")
# Why a JSON line is not a record, NULL when it is one.
_LINE_PROBLEM = (
    "CASE WHEN trailing_comma OR NOT json_valid(line) THEN 'not valid JSON' "
    "WHEN json_type(line) <> 'OBJECT' THEN CASE json_type(line) WHEN 'ARRAY' THEN 'an array' "
    "WHEN 'VARCHAR' THEN 'a string' WHEN 'BOOLEAN' THEN 'a boolean' WHEN 'NULL' THEN 'null' "
    "ELSE 'a number' END || ', not an object' END"
)
# DuckDB errors that mean the file itself is unusable, recognised by their message.
_READER_ERROR = re.compile(r"CSV Error|unicode|utf-8|parquet|magic bytes|IO Error|compress", re.I)


class FileRejected(Exception):
    """A whole file cannot be loaded (unreadable, wrong extension, missing required columns)."""


@dataclass(frozen=True)
class Source:
    """A landed file in a DuckDB connection: the view of its rows and the file's columns
    (name -> DuckDB type); for JSON Lines also the malformed lines as quarantine rows (SQL
    giving source_row, column_name, reason and record)."""

    view: str
    columns: dict[str, str]
    malformed: str | None = None
    single_threaded: str | None = None  # SQL that re-creates the view with a one-thread reader


def count_rows(con: duckdb.DuckDBPyConnection, source: Source, name: str) -> int:
    """Rows in the file (malformed lines included), reading it whole once, so that a file that
    cannot be read is rejected before anything is written; FileRejected otherwise."""
    try:
        try:
            (rows,) = con.execute(f"SELECT count(*) FROM {source.view}").fetchall()[0]
        except duckdb.Error as error:
            if source.single_threaded is None or _PARALLEL_PADDING_REFUSED not in str(error):
                raise
            con.execute(source.single_threaded)
            (rows,) = con.execute(f"SELECT count(*) FROM {source.view}").fetchall()[0]
        if source.malformed is not None:
            rows += con.execute(f"SELECT count(*) FROM ({source.malformed})").fetchall()[0][0]
    except duckdb.Error as error:
        raise unreadable(name, error) from error
    return int(rows)


@contextlib.contextmanager
def opened_source(
    con: duckdb.DuckDBPyConnection, path: Path, kind: str, name: str
) -> Iterator[Source]:
    """A landed file as the temporary view ``landed_rows`` (dropped afterwards, with any lines
    held for it); FileRejected when it cannot be read or lacks a required column."""
    try:
        yield _open_source(con, path, kind, name)
    finally:
        con.execute(f"DROP VIEW IF EXISTS {LANDED_ROWS}")
        con.execute("DROP TABLE IF EXISTS json_lines")


def delivered_format(path: Path) -> tuple[str, bool] | None:
    """(the file's format, whether it is gzip-compressed) by its name: ``events.csv.gz`` is
    (".csv", True); None for a name of no supported format."""
    name = path.name.lower()
    for extension in FORMATS:
        if name.endswith(extension):
            return extension, False
        if extension in GZIP_FORMATS and name.endswith(extension + GZIP):
            return extension, True
    return None


def unsupported_extension(path: Path) -> str:
    """What a file name of no supported format ends with, for a message (``.parquet.gz``)."""
    suffixes = path.suffixes
    compressed = bool(suffixes) and suffixes[-1].lower() == GZIP
    return "".join(suffixes[-2:] if compressed else suffixes[-1:]) or "(none)"


def _open_source(con: duckdb.DuckDBPyConnection, path: Path, kind: str, name: str) -> Source:
    delivered = delivered_format(path)
    if delivered is None:
        raise FileRejected(
            f"cannot read '{name}': unsupported extension '{unsupported_extension(path)}'; "
            f"deliver {kind} as {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    extension, compressed = delivered
    if extension == ".csv":
        source = _open_csv(con, path, kind, name, compressed)
    elif extension == ".parquet":
        source = _open_parquet(con, path, kind, name)
    else:
        source = _open_json_lines(con, path, kind, name, compressed)
    missing = [column for column in REQUIRED_COLUMNS[kind] if column not in source.columns]
    # A JSON Lines file whose every line is malformed has no columns, yet its lines are rows.
    if missing and (source.columns or source.malformed is None):
        raise FileRejected(
            f"{kind} file '{name}' lacks required column(s): {', '.join(missing)}; "
            f"every {kind} file needs {', '.join(REQUIRED_COLUMNS[kind])} "
            f"(optional: {', '.join(OPTIONAL_COLUMNS[kind])})"
            + unread_columns(kind, list(source.columns), missing)
        )
    return source


def unread_columns(kind: str, columns: list[str], missing: list[str]) -> str:
    """The part of a message that names the file's columns the contract does not read, and
    which of them looks like a ``missing`` one spelt another way (``userId`` for user_id): a
    delivery from another system usually has the data under its own names."""
    contract = {*REQUIRED_COLUMNS[kind], *OPTIONAL_COLUMNS[kind]}
    unread = [column for column in columns if column.lower() not in contract]
    if not unread:
        return ""

    def squeezed(column: str) -> str:
        return re.sub(r"[^a-z0-9]", "", column.lower())

    spelt = {squeezed(column): column for column in unread}
    guesses = [f"'{spelt[squeezed(c)]}' for {c}" for c in missing if squeezed(c) in spelt]
    shown = ", ".join(f"'{column}'" for column in unread[:10])
    more = f" and {len(unread) - 10} more" if len(unread) > 10 else ""
    hint = f"; rename {', '.join(guesses)}" if guesses else ""
    return f"; the file's columns the contract does not read: {shown}{more}{hint}"


def open_frame(con: duckdb.DuckDBPyConnection, frame: object) -> Source:
    """A DataFrame of a landed file's rows (with or without ``source_row``) as a source."""
    con.register("landed_frame", frame)
    described = con.execute("DESCRIBE SELECT * FROM landed_frame").fetchall()
    columns = {str(row[0]): str(row[1]) for row in described if row[0] != SOURCE_ROW}
    numbered = any(row[0] == SOURCE_ROW for row in described)
    row = SOURCE_ROW if numbered else "row_number() OVER ()"
    con.execute(_view_sql(row, {name: identifier(name) for name in columns}, "landed_frame"))
    return Source(LANDED_ROWS, columns)


def unreadable(name: str, error: duckdb.Error) -> FileRejected:
    """A reader error as a rejection that says what is wrong and where; any other error (a
    mistake in freshrank's own SQL, say) is raised as it is, and the file stays pending."""
    text = str(error)
    if not _READER_ERROR.search(text):
        raise error
    line = re.search(r"CSV Error on Line: (\d+)", text)
    where = f"line {line.group(1)}" if line else "a line"
    if "unicode" in text.lower() or "utf-8" in text.lower():
        return FileRejected(
            f"cannot read '{name}': not UTF-8 text ({where}); save it as UTF-8 and deliver again"
        )
    if "end of gzip stream" in text.lower():
        return FileRejected(f"cannot read '{name}': {CUT_SHORT}")
    if "unterminated quote" in text:
        return FileRejected(
            f"cannot read '{name}': {where} opens a quoted field that never closes; "
            "check its quoting"
        )
    fields = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", text)
    if fields:
        expected, found = fields.groups()
        return FileRejected(
            f"cannot read '{name}': {where} has {found} fields where the header has {expected}; "
            "check its quoting and that every line has as many fields as the header"
        )
    first_line = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    first_line = re.sub(r"^[A-Za-z ]*Error: ", "", first_line)
    return FileRejected(f"cannot read '{name}': {first_line}")


@contextlib.contextmanager
def readable_path(path: Path) -> Iterator[Path]:
    """The path DuckDB should read: DuckDB expands glob characters even in a literal file name,
    so a name holding one is read through a hidden hard link (skipped by the landing scan)."""
    if not _GLOB_CHARACTERS.intersection(str(path)):
        yield path
        return
    delivered = delivered_format(path)
    extension = "" if delivered is None else delivered[0] + (GZIP if delivered[1] else "")
    alias = Path(path.parent, f".reading-{uuid.uuid4().hex}{extension}")
    try:
        alias.hardlink_to(path)
    except OSError:
        alias = Path(path.parent, f".reading-{uuid.uuid4().hex}{extension}")
        alias.write_bytes(path.read_bytes())
    try:
        yield alias
    finally:
        alias.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# The readers


def _open_csv(
    con: duckdb.DuckDBPyConnection, path: Path, kind: str, name: str, compressed: bool
) -> Source:
    header, delimiter = _csv_header(path, name, compressed)
    names = _column_names(header, kind, name)
    # DuckDB reads the columns as column0, column1...; the view gives them their names.
    selects = {column: f"column{index}" for index, column in enumerate(names)}
    read_columns = ", ".join(f"{literal(slot)}: 'VARCHAR'" for slot in selects.values())
    options = f"delim = {literal(delimiter)}, {CSV_OPTIONS}"
    if compressed:
        options += ", compression = 'gzip'"
    reader = f"read_csv({literal(str(path))}, columns = {{{read_columns}}}, {options}"
    row = "row_number() OVER ()"
    con.execute(_view_sql(row, selects, reader + ")"))
    single_threaded = _view_sql(row, selects, reader + ", parallel = false)")
    return Source(LANDED_ROWS, dict.fromkeys(names, "VARCHAR"), None, single_threaded)


def _opened_bytes(path: Path, compressed: bool) -> IO[bytes]:
    """The file's bytes, decompressed when it is gzip-compressed."""
    return gzip.open(path, "rb") if compressed else path.open("rb")


def _csv_header(path: Path, name: str, compressed: bool) -> tuple[list[str], str]:
    """The header's fields and the file's delimiter (of CSV_DELIMITERS)."""
    try:
        with io.TextIOWrapper(
            _opened_bytes(path, compressed), encoding="utf-8-sig", newline=""
        ) as handle:
            splits = []
            for delimiter in CSV_DELIMITERS:
                handle.seek(0)
                splits.append(next(csv.reader(handle, delimiter=delimiter), []))
    except UnicodeDecodeError as error:
        raise FileRejected(
            f"cannot read '{name}': not UTF-8 text ({error}); save it as UTF-8 and deliver again"
        ) from None
    except (csv.Error, OSError, EOFError) as error:
        raise FileRejected(f"cannot read '{name}': {_read_error(error)}") from None
    header, delimiter = max(zip(splits, CSV_DELIMITERS, strict=True), key=lambda s: len(s[0]))
    if not header:
        raise FileRejected(f"cannot read '{name}': the file is empty (no header row)")
    return header, delimiter


def _open_parquet(con: duckdb.DuckDBPyConnection, path: Path, kind: str, name: str) -> Source:
    reader = f"read_parquet({literal(str(path))})"
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()
    except duckdb.Error as error:
        raise unreadable(name, error) from None
    original = [str(row[0]) for row in described]
    names = _column_names(original, kind, name)
    row = "row_number() OVER ()"
    if "file_row_number" not in original:
        # The reader's own row numbers keep the scan parallel.
        reader = f"read_parquet({literal(str(path))}, file_row_number = true)"
        row = "file_row_number + 1"
    selects = {column: identifier(source) for column, source in zip(names, original, strict=True)}
    con.execute(_view_sql(row, selects, reader))
    types = [str(row[1]) for row in described]
    return Source(LANDED_ROWS, dict(zip(names, types, strict=True)))


def _open_json_lines(
    con: duckdb.DuckDBPyConnection, path: Path, kind: str, name: str, compressed: bool
) -> Source:
    """The lines into a temporary table (numbered, each with its problem when it is not a JSON
    object), then one JSON column per key seen in any object, in order of first appearance."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE json_lines (source_row BIGINT, line VARCHAR, problem VARCHAR)"
    )
    lines = 0
    for batch in _json_lines(path, name, compressed):
        con.register("json_batch", batch)
        con.execute(
            f"INSERT INTO json_lines SELECT source_row, line, {_LINE_PROBLEM} FROM json_batch"
        )
        con.unregister("json_batch")
        lines += batch.num_rows
    if not lines:
        raise FileRejected(f"cannot read '{name}': the file is empty (no JSON lines)")
    keys = [
        str(row[0])
        for row in con.execute(
            "SELECT key FROM (SELECT source_row, unnest(json_keys(line)) AS key, "
            "generate_subscripts(json_keys(line), 1) AS position "
            "FROM json_lines WHERE problem IS NULL) "
            "GROUP BY key ORDER BY min(source_row * 1000000 + position)"
        ).fetchall()
    ]
    # One parse per line: json_extract with a list of JSON pointers (any key text works).
    pointers = ", ".join(literal("/" + key.replace("~", "~0").replace("/", "~1")) for key in keys)
    names = _column_names(keys, kind, name)
    selects = {column: f"json_values[{index}]" for index, column in enumerate(names, 1)}
    reader = (
        f"(SELECT source_row, {f'json_extract(line, [{pointers}])' if keys else '[]'} "
        "AS json_values FROM json_lines WHERE problem IS NULL)"
    )
    con.execute(_view_sql(SOURCE_ROW, selects, reader))
    malformed = (
        "SELECT source_row, NULL AS column_name, "
        "'malformed JSON line ' || source_row || ': ' || problem AS reason, line AS record "
        "FROM json_lines WHERE problem IS NOT NULL"
    )
    return Source(LANDED_ROWS, dict.fromkeys(names, "JSON"), malformed)


def _json_lines(path: Path, name: str, compressed: bool) -> Iterator[pa.RecordBatch]:
    """(source_row, line) of the non-blank lines, in blocks; lines end at '\\n' only (JSON
    strings may hold other line separators)."""
    lines_before = 0
    try:
        with _opened_bytes(path, compressed) as handle:
            pending = b""
            for block in iter(lambda: handle.read(READ_BLOCK_BYTES), b""):
                pending += block
                cut = pending.rfind(b"\n") + 1
                if cut:
                    text, pending = pending[:cut].decode("utf-8"), pending[cut:]
                    yield _numbered_lines(text, lines_before)
                    lines_before += text.count("\n")
            if pending:
                yield _numbered_lines(pending.decode("utf-8"), lines_before)
    except UnicodeDecodeError as error:
        raise FileRejected(
            f"cannot read '{name}': not UTF-8 text ({error}); save it as UTF-8 and deliver again"
        ) from None
    except (OSError, EOFError) as error:
        raise FileRejected(f"cannot read '{name}': {_read_error(error)}") from None


def _read_error(error: Exception) -> str:
    """A read failure in words: a gzip file cut short or not gzip at all says so."""
    if isinstance(error, EOFError):
        return CUT_SHORT
    if isinstance(error, gzip.BadGzipFile):
        return f"not a gzip file ({error}); deliver it uncompressed or gzip it"
    return str(error)


def _numbered_lines(text: str, lines_before: int) -> pa.RecordBatch:
    """(source_row, line, trailing_comma) of the non-blank lines of a block of text."""
    if lines_before == 0:
        text = text.removeprefix("\ufeff")
    numbers, kept, trailing_commas = [], [], []
    for number, line in enumerate(text.removesuffix("\n").split("\n"), lines_before + 1):
        if line.strip():
            numbers.append(number)
            kept.append(line.removesuffix("\r"))
            trailing_commas.append(bool(_TRAILING_COMMA.search(line)) and not _strict_json(line))
    return pa.record_batch(
        [pa.array(numbers, pa.int64()), pa.array(kept, pa.string()), pa.array(trailing_commas)],
        names=[SOURCE_ROW, "line", "trailing_comma"],
    )


def _strict_json(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def _column_names(delivered: list[str], kind: str, name: str) -> list[str]:
    """Names stripped and made unique ('a', 'a.1'), a contract column matched whatever its case
    ('User_ID' is user_id); a user's own source_row column is kept as source_row_in_file (it
    ends up in attributes). A contract column delivered twice rejects the file: which of the
    two is meant cannot be told."""
    contract = {
        column.lower(): column for column in (*REQUIRED_COLUMNS[kind], *OPTIONAL_COLUMNS[kind])
    }
    names: list[str] = []
    for raw in delivered:
        stripped = raw.strip()
        column = contract.get(stripped.lower(), stripped) or f"column {len(names) + 1}"
        if column in names and column.lower() in contract:
            first = next(
                given for given in delivered if contract.get(given.strip().lower()) == column
            )
            raise FileRejected(
                f"{kind} file '{name}' has the column {column} twice ('{first.strip()}' and "
                f"'{stripped}'); deliver it once"
            )
        if column == SOURCE_ROW:
            column = f"{SOURCE_ROW}_in_file"
        candidate, counter = column, 1
        while candidate in names:
            candidate = f"{column}.{counter}"
            counter += 1
        names.append(candidate)
    return names


def _view_sql(row: str, selects: dict[str, str], reader: str) -> str:
    projections = "".join(f", {sql} AS {identifier(column)}" for column, sql in selects.items())
    return (
        f"CREATE OR REPLACE TEMP VIEW {LANDED_ROWS} AS "
        f"SELECT {row} AS {SOURCE_ROW}{projections} FROM {reader}"
    )
