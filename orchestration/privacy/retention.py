"""Retention: events older than FRESHRANK_RETENTION_DAYS, by the wall clock, are deleted.

Privacy rules count age from today, not from the newest event (which is what the models'
windows use), so the cut-off here is the wall clock minus the configured days. Deleted: rows
of every warehouse and serving-store table with an ``occurred_at``, ``served_at`` or
``quarantined_at`` column (raw events, the incremental interactions mart, histories, recent
events, exposures, quarantined rows: whatever holds them), and the rows of kept events files
(a file that cannot be read is deleted once it is older than the cut-off). Marts that only
aggregate events (users, trending) are rebuilt from what remains by the next refresh or build.
Off by default: nothing happens without the setting.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from ml.constants import OCCURRED_AT
from orchestration.experiments.store import SERVED_AT
from orchestration.ingest.rules import literal
from orchestration.ingest.sources import FileRejected
from orchestration.privacy.erase import (
    compact_warehouse,
    delete_in_serving_store,
    delete_in_warehouse,
    record_erasure,
)
from orchestration.privacy.landed_files import event_files, older_than, rewrite_events_file
from orchestration.settings import Settings
from orchestration.warehouse.guard import warehouse_writer

logger = logging.getLogger("freshrank.privacy")

RETENTION = "retention"
QUARANTINED_AT = "quarantined_at"
# When a row happened, wherever rows about people are kept: events, exposures, quarantine.
TIME_COLUMNS = (OCCURRED_AT, SERVED_AT, QUARANTINED_AT)


@dataclass(frozen=True)
class RetentionReport:
    """What one retention pass deleted."""

    cutoff: datetime
    warehouse_rows: dict[str, int]
    serving_rows: dict[str, int]
    file_rows: int
    files_changed: int

    @property
    def rows_removed(self) -> int:
        return sum(self.warehouse_rows.values()) + sum(self.serving_rows.values()) + self.file_rows


def retention_cutoff(retention_days: float, now: datetime | None = None) -> datetime:
    """The oldest moment kept, naive UTC: the wall clock (or ``now``) minus the days."""
    moment = now if now is not None else datetime.now(UTC)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment - timedelta(days=retention_days)


def apply_retention(settings: Settings, now: datetime | None = None) -> RetentionReport | None:
    """Delete everything older than the retention period; None when retention is off."""
    if settings.retention_days is None:
        return None
    cutoff = retention_cutoff(settings.retention_days, now)
    before = f"< TIMESTAMP {literal(cutoff.isoformat(sep=' '))}"
    with warehouse_writer(settings.warehouse_path):
        warehouse_rows = delete_in_warehouse(
            settings.warehouse_path,
            dict.fromkeys(TIME_COLUMNS, lambda column: f"{column} {before}"),
        )
        if warehouse_rows:
            compact_warehouse(settings.warehouse_path)
        file_rows, files_changed = _expire_files(settings, cutoff)
    engine = sa.create_engine(settings.serving_url)
    try:
        serving_rows = delete_in_serving_store(
            engine, dict.fromkeys(TIME_COLUMNS, lambda column: column < cutoff)
        )
        report = RetentionReport(cutoff, warehouse_rows, serving_rows, file_rows, files_changed)
        details = {
            "retention_days": settings.retention_days,
            "cutoff": cutoff,
            "warehouse_rows": warehouse_rows,
            "serving_rows": serving_rows,
            "file_rows": file_rows,
        }
        record_erasure(engine, RETENTION, report.rows_removed, files_changed, details)
    finally:
        engine.dispose()
    logger.info(
        "retention (%g days, before %s): %d row(s) and %d file(s) changed",
        settings.retention_days,
        cutoff.isoformat(timespec="seconds"),
        report.rows_removed,
        files_changed,
    )
    return report


def _expire_files(settings: Settings, cutoff: datetime) -> tuple[int, int]:
    """Rewrite every kept events file without its old rows: (rows removed, files changed)."""
    rows, changed = 0, 0
    drop = older_than(cutoff)
    for path in event_files(settings):
        try:
            result = rewrite_events_file(path, drop=drop)
        except FileRejected:
            modified = datetime.fromtimestamp(path.stat().st_mtime, UTC).replace(tzinfo=None)
            if modified < cutoff:
                path.unlink()
                logger.info("deleted %s: unreadable and older than the retention period", path)
                changed += 1
            continue
        if result.changed:
            rows += result.rows_before - result.rows_after
            changed += 1
    return rows, changed
