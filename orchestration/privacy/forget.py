"""`freshrank forget USER_ID`: remove one user from everything freshrank keeps, and say so.

The user's rows go from every warehouse table with a ``user_id`` column (raw events, staging and
intermediate tables, marts, the scored lists in ``ml``), from quarantined records that name them,
from every serving-store table with a ``user_id`` column (published lists, recent events,
exposures, candidates: whatever exists now or later), and from every kept events file (waiting,
archived, rejected), which are rewritten without their rows. With pseudonymisation on, the id
given is hashed first; rows stored under the id as given (from before pseudonymisation was
switched on) go too. The privacy log records the time and the counts, never the id: a log that
holds it, even hashed with the pseudonymisation key, would let anyone with that key test
whether a given person asked to be forgotten.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import sqlalchemy as sa

from ml.constants import USER_ID
from orchestration.ingest.rules import literal
from orchestration.ingest.sources import FileRejected
from orchestration.privacy.erase import (
    compact_warehouse,
    delete_in_serving_store,
    delete_in_warehouse,
    record_erasure,
)
from orchestration.privacy.landed_files import event_files, rewrite_events_file
from orchestration.settings import Settings
from orchestration.warehouse.guard import warehouse_writer

logger = logging.getLogger("freshrank.privacy")

FORGET = "forget"
QUARANTINE_RECORD = "record"


@dataclass(frozen=True)
class ForgetReport:
    """What forgetting one user removed (the log keeps this, without the id)."""

    forgotten_at: datetime
    pseudonymised: bool
    warehouse_rows: dict[str, int]
    serving_rows: dict[str, int]
    file_rows: int
    files_changed: int
    unreadable_files: list[str] = field(default_factory=list)  # may still hold the user

    @property
    def rows_removed(self) -> int:
        return sum(self.warehouse_rows.values()) + sum(self.serving_rows.values()) + self.file_rows


def stored_ids(user_id: str, settings: Settings) -> list[str]:
    """The ids a user can be stored under: the pseudonym (when on) and the id as given."""
    given = user_id.strip()
    if not given:
        raise ValueError("the user id to forget is empty")
    pseudonymiser = settings.pseudonymiser
    if pseudonymiser is None:
        return [given]
    return sorted({pseudonymiser.pseudonym(given), given})


def forget_user(user_id: str, settings: Settings) -> ForgetReport:
    """Remove one user everywhere, under the warehouse's writer lock, and log that it happened."""
    ids = stored_ids(user_id, settings)
    quoted = ", ".join(map(literal, ids))
    with warehouse_writer(settings.warehouse_path):
        _let_items_recount(settings.warehouse_path, quoted)
        warehouse_rows = delete_in_warehouse(
            settings.warehouse_path,
            {
                USER_ID: lambda column: f"CAST({column} AS VARCHAR) IN ({quoted})",
                QUARANTINE_RECORD: lambda column: _record_names_user(column, ids),
            },
        )
        compact_warehouse(settings.warehouse_path)
        file_rows, files_changed, unreadable = _forget_in_files(ids, settings)
    engine = sa.create_engine(settings.serving_url)
    try:
        serving_rows = delete_in_serving_store(
            engine, {USER_ID: lambda column: sa.cast(column, sa.String).in_(ids)}
        )
        counts = {
            "pseudonymised": settings.pseudonymiser is not None,
            "warehouse_rows": warehouse_rows,
            "serving_rows": serving_rows,
            "file_rows": file_rows,
            "files_changed": files_changed,
            "unreadable_files": unreadable,
        }
        rows_removed = sum(warehouse_rows.values()) + sum(serving_rows.values()) + file_rows
        forgotten_at = record_erasure(engine, FORGET, rows_removed, files_changed, counts)
    finally:
        engine.dispose()
    logger.info("forgot a user: %d row(s) and %d file(s) changed", rows_removed, files_changed)
    return ForgetReport(forgotten_at=forgotten_at, **counts)


def _let_items_recount(warehouse_path: Path, quoted_ids: str) -> None:
    """Delete the items mart's rows of the items the user touched, before their interactions
    go: the next dbt run recomputes a catalog item without a row (marts/items.sql), and its
    counts then leave the user out. (The mart is incremental: it would keep them otherwise.)"""
    if not warehouse_path.exists():
        return
    with duckdb.connect(str(warehouse_path)) as connection:
        present = connection.execute(
            "select count(*) from information_schema.tables where table_schema = 'marts' "
            "and table_name in ('items', 'interactions') and table_type = 'BASE TABLE'"
        ).fetchone()
        if present is None or present[0] < 2:
            return
        connection.execute(
            "delete from marts.items where item_id in (select item_id from marts.interactions "
            f"where cast(user_id as varchar) in ({quoted_ids}))"
        )


def _record_names_user(column: str, ids: list[str]) -> str:
    """A quarantined record (a delivered row as JSON, or a line that was not JSON) naming one
    of ``ids``: its user_id member, or for text that is not JSON the id anywhere in it (a
    malformed line is deleted rather than kept when in doubt)."""
    quoted = ", ".join(map(literal, ids))
    anywhere = " OR ".join(f"contains({column}, {literal(user)})" for user in ids)
    return (
        f"CASE WHEN json_valid({column}) AND json_type({column}) = 'OBJECT' "
        f"THEN trim(json_extract_string({column}, '$.{USER_ID}')) IN ({quoted}) "
        f"ELSE {anywhere} END"
    )


def _forget_in_files(ids: list[str], settings: Settings) -> tuple[int, int, list[str]]:
    """Rewrite every kept events file without the user's rows: (rows removed, files changed,
    unreadable files that contain the id's text, which are left for a person to handle).
    A row is the user's when its id is the id as given or the pseudonym: pseudonymising any
    other text gives another pseudonym."""
    matches = f"IN ({', '.join(map(literal, ids))})"
    rows, changed, unreadable = 0, 0, []
    for path in event_files(settings):
        try:
            result = rewrite_events_file(path, drop=lambda user, _moment: f"{user} {matches}")
        except FileRejected:
            content = path.read_bytes()
            if any(user.encode("utf-8") in content for user in ids):
                unreadable.append(str(path))
                logger.warning("%s cannot be read and may hold the user: check it by hand", path)
            continue
        if result.changed:
            rows += result.rows_before - result.rows_after
            changed += 1
    return rows, changed, unreadable
