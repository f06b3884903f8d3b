"""`freshrank refresh --watch`: a warm refresher that publishes within seconds of new behaviour.

A refresh started as a new process (the CLI, or a run the daemon's sensor launches) spends most
of its time starting: Python, Dagster, dbt's Dagster integration, torch and MLflow imports. This
loop pays that once. It polls the landing zone and the raw tables, and runs refresh_job in-process
whenever files are waiting or rows were loaded since the last publish (by `freshrank ingest`,
say). The landing zone is a directory listing, so it is looked at every FILE_POLL_SECONDS (a
file is seen within a fifth of a second); the raw tables need a warehouse connection, which a
writer in another process would have to wait for, so they are looked at once an interval. Each
run is an ordinary Dagster run on the deployment's instance, under the same writer lock as any
other, so it is safe next to the daemon; it just starts sooner.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable

import duckdb

from orchestration.ingest.landing import KINDS, pending_files
from orchestration.settings import Settings
from orchestration.warehouse.guard import open_warehouse

logger = logging.getLogger("freshrank.watch")

FILE_POLL_SECONDS = 0.2
# The marts a refresh updates incrementally; only a full build creates them.
BUILT_TABLES = frozenset({"marts.interactions", "marts.items"})


def _tables(connection: duckdb.DuckDBPyConnection) -> set[str]:
    """Every table of the warehouse as schema.table."""
    query = "select schema_name || '.' || table_name from duckdb_tables()"
    return {row[0] for row in connection.execute(query).fetchall()}


def behind(settings: Settings, tables: bool = True) -> str | None:
    """Why a refresh is due (files waiting, rows loaded since the last publish), or None;
    without ``tables``, only the landing zone is looked at."""
    waiting = sum(len(pending_files(kind, settings)) for kind in KINDS)
    if waiting:
        return f"{waiting} landing file(s) waiting"
    if not tables or not settings.warehouse_path.exists():
        return None
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        existing = _tables(connection)
        if "raw.events" not in existing or "ml.publish_watermark" not in existing:
            return None  # nothing built and published yet: that is a full build's job
        (unpublished,) = connection.execute(
            "select count(*) from raw.events where loaded_at > "
            "(select coalesce(max(published_through), '-infinity'::timestamp) "
            "from ml.publish_watermark)"
        ).fetchall()[0]
    return f"{unpublished} event(s) loaded since the last publish" if unpublished else None


def built(settings: Settings) -> bool:
    """Whether a full build has made the marts that refreshes and retraining work on."""
    if not settings.warehouse_path.exists():
        return False
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        return _tables(connection) >= BUILT_TABLES


def refresh_job_for(settings: Settings) -> str:
    """The refresh job for what is waiting: refresh_events_job when nothing can change the
    item vectors (no item file in the landing zone, and the stored vectors up to date with
    every catalog row loaded: catalog_embedded), else refresh_job. The events job leaves out
    the catalog's load and the embeddings: half a second of steps with nothing to do on every
    refresh of a batch of events. A catalog row loaded after this look is embedded by the next
    refresh_job (the events job's dbt run puts it in the items mart; the stamps then differ).
    A deployment without its marts has never been built: its first refresh is the full build
    (a refresh builds only on what a build made)."""
    from orchestration.features.assets import catalog_embedded
    from orchestration.features.embedding_store import STAMP_TABLE
    from orchestration.jobs import FULL_BUILD_JOB, REFRESH_EVENTS_JOB, REFRESH_JOB

    if not settings.warehouse_path.exists():
        return FULL_BUILD_JOB
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        existing = _tables(connection)
        if not existing >= BUILT_TABLES:
            return FULL_BUILD_JOB
        if pending_files("items", settings) or not {"raw.items", STAMP_TABLE} <= existing:
            return REFRESH_JOB
        try:
            embedded = catalog_embedded(settings, connection)
        except duckdb.Error:  # an items mart from before catalog_loaded_through
            return REFRESH_JOB
    return REFRESH_EVENTS_JOB if embedded else REFRESH_JOB


def watch(
    settings: Settings,
    refresh: Callable[[], bool],
    interval_seconds: float = 1.0,
    max_runs: int | None = None,
    idle_timeout_seconds: float | None = None,
) -> int:
    """Refresh whenever one is due until stopped (SIGINT/SIGTERM), ``max_runs`` refreshes have
    run, or nothing was due for ``idle_timeout_seconds``. Landing files are looked for every
    FILE_POLL_SECONDS (or ``interval_seconds``, if shorter), the raw tables every
    ``interval_seconds``. Returns the number of refreshes."""
    stopping = False

    def stop(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        logger.info("signal %d: stopping after the current step", signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    runs, idle_since = 0, time.monotonic()
    tables_due = time.monotonic()
    try:
        while not stopping and (max_runs is None or runs < max_runs):
            tables = time.monotonic() >= tables_due
            if tables:
                tables_due = time.monotonic() + interval_seconds
            reason = behind(settings, tables)
            if reason is None:
                if (
                    idle_timeout_seconds is not None
                    and time.monotonic() - idle_since > idle_timeout_seconds
                ):
                    break
                time.sleep(min(FILE_POLL_SECONDS, interval_seconds))
                continue
            logger.info("refreshing: %s", reason)
            if not refresh():
                logger.warning("the refresh failed; the previous lists stay served")
                time.sleep(interval_seconds)  # do not spin on a batch that keeps failing
            runs += 1
            idle_since = time.monotonic()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return runs
