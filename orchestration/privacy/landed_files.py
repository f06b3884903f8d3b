"""Rewriting kept event files (landing, archive): without some rows, or with pseudonymised ids.

Forgetting a user and retention must reach the files kept after loading, and with
pseudonymisation on the archive must not keep the ids it replaced. A file is read by the same
DuckDB readers as ingestion (``orchestration/ingest/sources.py``), its user ids and times
interpreted by the same contract cells, and written back in its own format (CSV, Parquet, JSON
Lines) under its own name, atomically. Lines of a JSON Lines file that are not JSON objects are
not records and are not kept. A file left without rows is deleted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from ml.constants import TIMESTAMP, USER_ID
from orchestration.ingest.rules import SOURCE_ROW, Cell, identifier, literal, user_texts
from orchestration.ingest.sources import (
    GZIP,
    FileRejected,
    count_rows,
    delivered_format,
    opened_source,
    readable_path,
    unsupported_extension,
)
from orchestration.privacy.pseudonyms import Pseudonymiser
from orchestration.settings import Settings

logger = logging.getLogger("freshrank.privacy")

# (text SQL of a row's stripped user id, SQL of its naive UTC event time) -> SQL that is true
# for a row to drop.
RowFilter = Callable[[str, str], str]


@dataclass(frozen=True)
class Rewritten:
    """What rewriting one file did."""

    path: Path
    rows_before: int
    rows_after: int

    @property
    def changed(self) -> bool:
        return self.rows_after != self.rows_before


def rewrite_events_file(
    path: Path,
    drop: RowFilter | None = None,
    pseudonymiser: Pseudonymiser | None = None,
) -> Rewritten:
    """Rewrite an events file without the rows ``drop`` selects and, with a ``pseudonymiser``,
    with its user ids pseudonymised; a file left without rows is deleted. The file is left
    untouched when no row is dropped and nothing is pseudonymised. Raises FileRejected when
    the file cannot be read."""
    with (
        duckdb.connect(":memory:") as con,
        readable_path(path) as readable,
        opened_source(con, readable, "events", path.name) as source,
    ):
        rows_before = count_rows(con, source, path.name)
        user, moment = (
            Cell.of(name, source.columns[name])
            if name in source.columns
            else Cell("NULL", "missing")
            for name in (USER_ID, TIMESTAMP)
        )
        dropped = "false" if drop is None else drop(user.text(), moment.time())
        pseudonym = None
        if pseudonymiser is not None:
            pseudonym = pseudonymiser.lookup(con, user_texts(source.view, source.columns))
        projections = [
            _pseudonymised(name, user, pseudonym)
            if name == USER_ID and pseudonym is not None
            else identifier(name)
            for name in source.columns
        ]
        kept = (
            f"SELECT {', '.join(projections)} FROM {source.view} "
            f"WHERE NOT coalesce({dropped}, false) ORDER BY {SOURCE_ROW}"
        )
        try:
            # Without a filter only lines that are not records go: count what the view holds.
            counted = source.view if drop is None else f"({kept})"
            (rows_after,) = con.execute(f"SELECT count(*) FROM {counted}").fetchall()[0]
            result = Rewritten(path, rows_before, int(rows_after))
            if not (result.changed or pseudonym is not None):
                return result
            if result.rows_after == 0:
                path.unlink()
                logger.info("deleted %s: no rows left", path)
                return result
            _copy_atomically(con, kept, path)
        except duckdb.Error as error:
            raise FileRejected(f"cannot rewrite '{path}': {error}") from error
    return result


def _pseudonymised(name: str, user: Cell, pseudonym: Callable[[str], str]) -> str:
    """The user id column with its pseudonym, as JSON in a JSON Lines file, else as text."""
    replaced = pseudonym(user.text())
    if user.family == "json":
        replaced = f"to_json({replaced})"
    return f"{replaced} AS {identifier(name)}"


def _copy_atomically(con: duckdb.DuckDBPyConnection, query: str, path: Path) -> None:
    """Write the rows of ``query`` in ``path``'s format beside it, then swap it in (the old
    modification time kept: the landing folder loads files oldest first)."""
    delivered = delivered_format(path)
    if delivered is None:
        raise FileRejected(
            f"cannot rewrite '{path}': unsupported extension '{unsupported_extension(path)}'"
        )
    extension, compressed = delivered
    if extension == ".csv":
        options = "FORMAT csv, HEADER true, DELIMITER ','"
    elif extension == ".parquet":
        options = "FORMAT parquet"
    else:
        options = "FORMAT json"
    if compressed:
        options += ", COMPRESSION gzip"  # a kept file stays as it was delivered
    partial = path.with_name(f".{path.name}.rewrite{extension}{GZIP if compressed else ''}")
    times = path.stat()
    try:
        con.execute(f"COPY ({query}) TO {literal(str(partial))} ({options})")
        os.utime(partial, ns=(times.st_atime_ns, times.st_mtime_ns))
        os.replace(partial, path)
    except BaseException:
        with suppress(FileNotFoundError):
            partial.unlink()
        raise


def event_files(settings: Settings) -> list[Path]:
    """Every kept events file: waiting in landing, archived after loading, rejected."""
    folders = (
        settings.landing_folder("events"),
        settings.archive_folder("events"),
        settings.rejected_folder("events"),
    )
    return sorted(
        path
        for folder in folders
        if folder.is_dir()
        for path in folder.iterdir()
        if path.is_file() and not path.name.startswith(".")
    )


def older_than(cutoff: datetime) -> RowFilter:
    """Rows whose event time is before ``cutoff`` (naive UTC)."""
    return lambda _user, moment: f"{moment} < TIMESTAMP {literal(cutoff.isoformat(sep=' '))}"
