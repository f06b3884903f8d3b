"""What an ingest adds to the serving store's recent events, so that reads reflect a load
before the refresh that follows it publishes.

Events that came through POST /events are already there (recorded by the API with their landing
file): the load only marks them loaded. Events from other files are appended, the newest few
per user, already marked loaded. A publish deletes the loaded events its lists reflect, so the
table holds only what the published lists have not caught up with.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from ml.constants import EVENT_TYPE, ITEM_ID, OCCURRED_AT, USER_ID, VALUE
from orchestration.ingest.landing import BATCH_ID, LOADED_AT
from orchestration.ingest.rules import SOURCE_ROW
from orchestration.serving.store import RECEIVED_AT, SOURCE_FILE, ServingStore
from orchestration.settings import Settings
from orchestration.warehouse.guard import open_warehouse

logger = logging.getLogger("freshrank.recent_events")

# A load touching more users than this is a backfill (a first load, a replay): the build or
# refresh that follows publishes it, and copying it row by row would only slow the ingest.
MAX_USERS_PER_LOAD = 10_000


def remember_loaded_events(settings: Settings, batch_id: str) -> int:
    """Mark or append the events the ingest run ``batch_id`` loaded; returns how many rows of
    the recent events it appended or marked. A serving store that cannot be reached is logged,
    not raised: the refresh publishes the events anyway."""
    with open_warehouse(settings.warehouse_path, read_only=True) as connection:
        loads = connection.execute(
            f"select {SOURCE_FILE}, max({LOADED_AT}) from raw.events "
            f"where {BATCH_ID} = ? group by {SOURCE_FILE}",
            [batch_id],
        ).fetchall()
        if not loads:
            return 0
        store = ServingStore(settings.serving_url)
        try:
            marked = store.mark_loaded(dict(loads))
            others = sorted(source_file for source_file, _ in loads if source_file not in marked)
            rows = _newest_per_user(connection, batch_id, others, settings.recent_events_per_user)
            appended = store.append_recent_events(rows, settings.recent_events_per_user)
        except (sa.exc.SQLAlchemyError, OSError) as error:
            logger.warning("recent events not updated for ingest %s: %s", batch_id, error)
            return 0
        finally:
            store.dispose()
    return sum(marked.values()) + appended


def _newest_per_user(connection, batch_id: str, files: list[str], per_user: int) -> list[dict]:
    """The newest ``per_user`` events of each user in ``files`` of the load, as recent-event
    rows already loaded; none when the load is a backfill (MAX_USERS_PER_LOAD)."""
    if not files:
        return []
    placeholders = ", ".join("?" for _ in files)
    chosen = f"{BATCH_ID} = ? and {SOURCE_FILE} in ({placeholders})"
    (users,) = connection.execute(
        f"select count(distinct {USER_ID}) from raw.events where {chosen}", [batch_id, *files]
    ).fetchone()
    if users > MAX_USERS_PER_LOAD:
        logger.info(
            "ingest %s touched %d users (over %d): a backfill, left to the next publish",
            batch_id,
            users,
            MAX_USERS_PER_LOAD,
        )
        return []
    columns = (USER_ID, ITEM_ID, EVENT_TYPE, VALUE, OCCURRED_AT, LOADED_AT, SOURCE_FILE)
    found = connection.execute(
        f"select {', '.join(columns)} from ("
        f"  select *, row_number() over (partition by {USER_ID} "
        f"    order by {OCCURRED_AT} desc, {SOURCE_ROW} desc) as place"
        f"  from raw.events where {chosen}"
        f") where place <= ? order by {USER_ID}, {OCCURRED_AT}, {SOURCE_ROW}",
        [batch_id, *files, per_user],
    ).fetchall()
    return [
        {**dict(zip(columns, row, strict=True)), RECEIVED_AT: row[columns.index(LOADED_AT)]}
        for row in found
    ]
