"""The serving store: the tables that applications read.

``recommendations`` holds one ranked list per known user; ``trending_items`` holds the one list
served to users without their own, and ``context_trending_items`` one such list per value of a
context field (e.g. per hour), served first when the request's context has one;
``related_items`` holds each item's related items (co-visited, then text neighbours). What
request-time personalisation reads sits beside them: ``candidate_pools`` (each user's
best-scored candidates, more than the list holds, packed in one row; see
orchestration.serving.pools), ``withdrawn_items`` (items taken out of the catalog since the
pools were ranked, left out of them as they are read), ``item_titles`` (for reasons that name
an item) and ``recent_events`` (events received since they were last published; see
append_recent_events).
SQLite in WAL mode by default, any SQLAlchemy URL (PostgreSQL in production). Times are stored
as naive UTC.

The large tables (lists, candidates, related items, titles) are versioned (see
orchestration.serving.versions): a full publish writes a new version in chunks, each its own
short transaction, then one short transaction switches readers to it and replaces the small
trending tables; every read is one statement, so it sees the old publish or the new one, never
half of one. A publish for some users (a refresh) replaces their rows in the served version in
one transaction. Tables made before versions are upgraded when a store opens them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from ml.constants import (
    CONTEXT_KEY,
    CONTEXT_VALUE,
    EVENT_TYPE,
    GENERATED_AT,
    ITEM_ID,
    MAX_ID_LENGTH,
    MODEL_VERSION,
    OCCURRED_AT,
    RANK,
    REASON,
    SCORE,
    SERVING_COLUMNS,
    TITLE,
    USER_ID,
    VALUE,
)
from orchestration.serving.pools import POOL, POOL_COLUMNS, pack_pools, unpack_pool
from orchestration.serving.versions import (
    DEFAULT_CHUNK_ROWS,
    VERSION,
    NewVersion,
    bulk_insert,
    current_versions,
    prepare,
    served,
    served_version,
    unversioned_columns,
    version_column,
    with_version,
)

TABLE_NAME = "recommendations"
TRENDING_TABLE_NAME = "trending_items"
TRENDING_COLUMNS = (RANK, ITEM_ID, SCORE, REASON, MODEL_VERSION, GENERATED_AT)
CONTEXT_TRENDING_TABLE_NAME = "context_trending_items"
CONTEXT_TRENDING_COLUMNS = (CONTEXT_KEY, CONTEXT_VALUE, *TRENDING_COLUMNS)
RELATED_TABLE_NAME = "related_items"
RELATED_ITEM_ID = "related_item_id"  # as ml.pipeline.pipeline names it (not imported: it is heavy)
RELATED_COLUMNS = (ITEM_ID, RANK, RELATED_ITEM_ID, SCORE, REASON, MODEL_VERSION, GENERATED_AT)
CANDIDATES_TABLE_NAME = "candidate_pools"
WITHDRAWN_TABLE_NAME = "withdrawn_items"
TITLES_TABLE_NAME = "item_titles"
TITLE_COLUMNS = (ITEM_ID, TITLE)
RECENT_EVENTS_TABLE_NAME = "recent_events"
RECEIVED_AT = "received_at"
SOURCE_FILE = "source_file"
LOADED_AT = "loaded_at"
RECENT_EVENT_COLUMNS = (USER_ID, ITEM_ID, EVENT_TYPE, VALUE, OCCURRED_AT, RECEIVED_AT, SOURCE_FILE)
_IDS_PER_STATEMENT = 500  # ids in one statement's IN list (deletes, look-ups)

_metadata = sa.MetaData()
# Display text (a reason quotes a title, and a catalog's title may be any length) is cut to
# its column with an ellipsis as it is written, and loses any NUL: PostgreSQL refuses both a
# longer value and a NUL, and with them the whole publish.
REASON_LENGTH, TITLE_LENGTH = 500, 1000
ELLIPSIS = "\u2026"


def _ranked_columns() -> list[sa.Column]:
    """The columns every served list shares after its key: rank, item, score, reason, origin."""
    return [
        sa.Column(RANK, sa.Integer, primary_key=True),
        sa.Column(ITEM_ID, sa.String(MAX_ID_LENGTH), nullable=False),
        sa.Column(SCORE, sa.Float, nullable=False),
        sa.Column(REASON, sa.String(REASON_LENGTH), nullable=False),
        sa.Column(MODEL_VERSION, sa.String(255), nullable=False),
        sa.Column(GENERATED_AT, sa.DateTime, nullable=False),
    ]


recommendations_table = sa.Table(
    TABLE_NAME,
    _metadata,
    version_column(),
    sa.Column(USER_ID, sa.String(MAX_ID_LENGTH), primary_key=True),
    *_ranked_columns(),
)
trending_table = sa.Table(TRENDING_TABLE_NAME, _metadata, *_ranked_columns())
context_trending_table = sa.Table(
    CONTEXT_TRENDING_TABLE_NAME,
    _metadata,
    sa.Column(CONTEXT_KEY, sa.String(255), primary_key=True),
    sa.Column(CONTEXT_VALUE, sa.String(MAX_ID_LENGTH), primary_key=True),
    *_ranked_columns(),
)

related_table = sa.Table(
    RELATED_TABLE_NAME,
    _metadata,
    version_column(),
    sa.Column(ITEM_ID, sa.String(MAX_ID_LENGTH), primary_key=True),
    sa.Column(RANK, sa.Integer, primary_key=True),
    sa.Column(RELATED_ITEM_ID, sa.String(MAX_ID_LENGTH), nullable=False),
    sa.Column(SCORE, sa.Float, nullable=False),
    sa.Column(REASON, sa.String(REASON_LENGTH), nullable=False),
    sa.Column(MODEL_VERSION, sa.String(255), nullable=False),
    sa.Column(GENERATED_AT, sa.DateTime, nullable=False),
)


# One row a user: their pool packed as orchestration.serving.pools packs it.
candidates_table = sa.Table(
    CANDIDATES_TABLE_NAME,
    _metadata,
    version_column(),
    sa.Column(USER_ID, sa.String(MAX_ID_LENGTH), primary_key=True),
    sa.Column(POOL, sa.Text, nullable=False),
    sa.Column(MODEL_VERSION, sa.String(255), nullable=False),
    sa.Column(GENERATED_AT, sa.DateTime, nullable=False),
)
CANDIDATE_COLUMNS = (*POOL_COLUMNS, MODEL_VERSION, GENERATED_AT)
# The table of a row a candidate that stores before candidate pools were packed kept.
_UNPACKED_CANDIDATES_TABLE_NAME = "candidates"
titles_table = sa.Table(
    TITLES_TABLE_NAME,
    _metadata,
    version_column(),
    sa.Column(ITEM_ID, sa.String(MAX_ID_LENGTH), primary_key=True),
    sa.Column(TITLE, sa.String(TITLE_LENGTH), nullable=False),
)
# Per version of the lists: their row and user counts and newest time, kept by every publish
# (the summary is read by /health and each publish's metadata; counting millions of rows there
# cost seconds, and grew with the store rather than with the refresh).
SUMMARY_TABLE_NAME = "serving_summary"
LIST_ROWS, LIST_USERS = "list_rows", "list_users"
summary_table = sa.Table(
    SUMMARY_TABLE_NAME,
    _metadata,
    sa.Column(VERSION, sa.Integer, primary_key=True, autoincrement=False),  # the lists' version
    sa.Column(LIST_ROWS, sa.BigInteger, nullable=False),
    sa.Column(LIST_USERS, sa.BigInteger, nullable=False),
    sa.Column(GENERATED_AT, sa.DateTime, nullable=True),  # newest list row's (None: no rows)
)
# Written as versions by a full publish (the per-user tables always, the per-item ones when given).
_PER_USER_TABLES = (recommendations_table, candidates_table)
_VERSIONED_TABLES = (*_PER_USER_TABLES, related_table, titles_table)
# Items withdrawn from the catalog after the served candidate pools were ranked: request-time
# personalisation leaves them out of a pool. Kept beside the pools rather than rewriting every
# pool that holds one (a popular item sits in most of them: seconds per ten thousand users);
# emptied by a full publish, whose pools were ranked without them.
withdrawn_table = sa.Table(
    WITHDRAWN_TABLE_NAME,
    _metadata,
    sa.Column(ITEM_ID, sa.String(MAX_ID_LENGTH), primary_key=True),
)
# Appended by POST /events and by ingestion, read per user, trimmed by every publish.
recent_events_table = sa.Table(
    RECENT_EVENTS_TABLE_NAME,
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(USER_ID, sa.String(MAX_ID_LENGTH), nullable=False, index=True),
    sa.Column(ITEM_ID, sa.String(MAX_ID_LENGTH), nullable=False),
    sa.Column(EVENT_TYPE, sa.String(255), nullable=False),
    sa.Column(VALUE, sa.Float, nullable=True),
    sa.Column(OCCURRED_AT, sa.DateTime, nullable=True),  # event time, naive UTC
    sa.Column(RECEIVED_AT, sa.DateTime, nullable=False),  # wall clock, naive UTC
    sa.Column(SOURCE_FILE, sa.String(255), nullable=True, index=True),  # the landing file
    sa.Column(LOADED_AT, sa.DateTime, nullable=True),  # when ingestion loaded it; None: not yet
)


def _served_rows(table: sa.Table) -> list[sa.ColumnElement[bool]]:
    """The condition that keeps a read to the served version (none for unversioned tables)."""
    return [served(table)] if VERSION in table.c else []


def _ranked_query(table: sa.Table, *keys: str) -> sa.Select:
    """A ranked table's served rows whose ``keys`` equal bound values, best first."""
    return (
        sa.select(*unversioned_columns(table))
        .where(*_served_rows(table), *(table.c[key] == sa.bindparam(key) for key in keys))
        .order_by(table.c[RANK])
    )


# The reads of every request, built once: building a statement costs more than running it.
_LIST_QUERY = _ranked_query(recommendations_table, USER_ID)
_TRENDING_QUERY = _ranked_query(trending_table)
_CONTEXT_TRENDING_QUERY = _ranked_query(context_trending_table, CONTEXT_KEY, CONTEXT_VALUE)
_RELATED_QUERY = _ranked_query(related_table, ITEM_ID)
# Only what re-ranking uses: times and versions cost a parse per row.
_CANDIDATE_POOL_QUERY = sa.select(candidates_table.c[POOL]).where(
    served(candidates_table), candidates_table.c[USER_ID] == sa.bindparam(USER_ID)
)
_RELATED_OF_ITEMS_QUERY = (
    sa.select(*(related_table.c[column] for column in (ITEM_ID, RELATED_ITEM_ID, SCORE)))
    .where(
        served(related_table),
        related_table.c[ITEM_ID].in_(sa.bindparam("items", expanding=True)),
        related_table.c[RANK] <= sa.bindparam("per_item"),
    )
    .order_by(related_table.c[ITEM_ID], related_table.c[RANK])
)
_TITLES_QUERY = sa.select(titles_table.c[ITEM_ID], titles_table.c[TITLE]).where(
    served(titles_table), titles_table.c[ITEM_ID].in_(sa.bindparam("items", expanding=True))
)
# A request reads the withdrawn items whole while they are few (usually none: a few us); when
# there are more, only those among the user's pool, so a catalog purge costs a read one
# bounded look-up instead of a row per item withdrawn (benchmarks/README.md, session 25).
_WITHDRAWN_READ_WHOLE = 50
_WITHDRAWN_QUERY = sa.select(withdrawn_table.c[ITEM_ID]).limit(_WITHDRAWN_READ_WHOLE)
_WITHDRAWN_AMONG_QUERY = sa.select(withdrawn_table.c[ITEM_ID]).where(
    withdrawn_table.c[ITEM_ID].in_(sa.bindparam("items", expanding=True))
)
_RECENT_EVENTS_QUERY = (
    sa.select(*(recent_events_table.c[column] for column in RECENT_EVENT_COLUMNS))
    .where(recent_events_table.c[USER_ID] == sa.bindparam(USER_ID))
    .order_by(recent_events_table.c["id"])
)


def _enable_sqlite_wal(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class ServingStore:
    """Publish and read ranked top-K lists and the trending lists."""

    def __init__(self, url: str, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
        self.url = url
        self.chunk_rows = chunk_rows  # rows per transaction of a full publish
        self.engine = sa.create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _enable_sqlite_wal)
            database = self.engine.url.database
            if database and database != ":memory:" and not database.startswith("file:"):
                # A fresh FRESHRANK_HOME has no folder yet; SQLite would only say "unable to open".
                Path(database).parent.mkdir(parents=True, exist_ok=True)
        prepare(self.engine, _metadata, _VERSIONED_TABLES)
        self._prepared: dict[int, _PreparedRead] = {}  # by id() of the module's prebuilt queries
        with self.engine.begin() as connection:  # unread since pools were packed
            unpacked = sa.Table(_UNPACKED_CANDIDATES_TABLE_NAME, sa.MetaData())
            unpacked.drop(connection, checkfirst=True)

    def publish(
        self,
        lists: pd.DataFrame,
        users: Iterable[str] | None = None,
        trending: pd.DataFrame | None = None,
        context_trending: pd.DataFrame | None = None,
        related: pd.DataFrame | None = None,
        candidates: pd.DataFrame | None = None,
        titles: pd.DataFrame | None = None,
        events_loaded_through: datetime | None = None,
        withdrawn: Sequence[str] = (),
        restored: Sequence[str] = (),
    ) -> int:
        """Replace lists at once: all of them (as a new version), or only those of ``users``.

        With ``users`` given, every listed user's old rows are removed, also when the new lists
        hold nothing for them, in one transaction. With ``trending`` given, the trending list
        is replaced whole at the same moment, so readers see both old or both new; likewise
        every context trending list with ``context_trending``, and every item's related items
        with ``related`` (None keeps the published ones: a refresh of some users does not
        recompute them). Returns the number of list rows written (trending and related rows
        not counted).

        A replaced user's candidate pool is replaced with theirs in ``candidates`` (packed
        pools, pools.pack_pools's with model_version and generated_at, or candidate rows in the
        lists' columns, packed here; none when it is None); ``titles``
        replaces every item title (None keeps them). With ``events_loaded_through``, the
        replaced users' recent events that ingestion loaded at or before it are deleted: the
        new lists already reflect them. ``withdrawn`` items (taken out of the catalog since
        the related items and pools were ranked) leave every item's related items, when
        ``related`` does not replace them all, and every user's candidate pool as request time
        reads it, in the same transaction: personalisation reads both and must not serve them.
        A full publish ranked every pool anew, so it forgets them. ``restored`` items (withdrawn
        before, available again) are forgotten as withdrawn: the pools that still hold them
        offer them again (related items get them back with the next full publish).
        """
        # Every frame is checked before anything is written: a refused publish writes nothing.
        _require_columns(lists, SERVING_COLUMNS, "lists")
        candidates = _packed(candidates)
        for frame, columns, what in (
            (candidates, CANDIDATE_COLUMNS, "candidate pools"),
            (titles, TITLE_COLUMNS, "item titles"),
            (trending, TRENDING_COLUMNS, "trending rows"),
            (context_trending, CONTEXT_TRENDING_COLUMNS, "context trending rows"),
            (related, RELATED_COLUMNS, "related items"),
        ):
            if frame is not None:
                _require_columns(frame, columns, what)
        if users is not None:
            self._publish_users(
                lists,
                users,
                candidates,
                related,
                titles,
                trending,
                context_trending,
                events_loaded_through,
                withdrawn,
                restored,
            )
            return len(lists)
        with self.begin_version(related=related is not None, titles=titles is not None) as version:
            version.write(lists, candidates)
            if related is not None:
                version.write_related(related)
            if titles is not None:
                version.write_titles(titles)
            version.commit(trending, context_trending, events_loaded_through)
        return len(lists)

    def begin_version(self, related: bool = False, titles: bool = False) -> ServingVersion:
        """A new version of every user's list and candidates (and, when asked, of every item's
        related items or titles), to write in parts (e.g. a shard at a time) and commit."""
        tables = [*_PER_USER_TABLES]
        tables += [related_table] if related else []
        tables += [titles_table] if titles else []
        return ServingVersion(self, NewVersion.begin(self.engine, tables, self.chunk_rows))

    def resume_version(self, number: int) -> ServingVersion:
        """A version begun earlier, maybe by another process (scoring), to commit or abort."""
        version = NewVersion.resume(self.engine, number, _VERSIONED_TABLES, self.chunk_rows)
        return ServingVersion(self, version)

    def _publish_users(
        self,
        lists: pd.DataFrame,
        users: Iterable[str],
        candidates: pd.DataFrame | None,
        related: pd.DataFrame | None,
        titles: pd.DataFrame | None,
        trending: pd.DataFrame | None,
        context_trending: pd.DataFrame | None,
        events_loaded_through: datetime | None,
        withdrawn: Sequence[str] = (),
        restored: Sequence[str] = (),
    ) -> None:
        """publish() for some users: their rows replaced in the served version, in one
        transaction (a refresh's users are few)."""
        affected = set(map(str, users)) | set(lists[USER_ID].astype(str))
        if candidates is not None:
            affected |= set(candidates[USER_ID].astype(str))
        affected_users = sorted(affected)
        with self.engine.begin() as connection:
            versions = current_versions(connection, _VERSIONED_TABLES)
            lists_version = versions[recommendations_table.name]
            removed_rows = removed_users = 0
            for start in range(0, len(affected_users), _IDS_PER_STATEMENT):
                chunk = affected_users[start : start + _IDS_PER_STATEMENT]
                rows, users_before, _ = _count_lists(connection, lists_version, chunk)
                removed_rows, removed_users = removed_rows + rows, removed_users + users_before
                for table in _PER_USER_TABLES:
                    connection.execute(
                        table.delete().where(
                            table.c[VERSION] == versions[table.name], table.c[USER_ID].in_(chunk)
                        )
                    )
                _delete_reflected_events(connection, events_loaded_through, chunk)
            for table, frame, columns in (
                (recommendations_table, lists, SERVING_COLUMNS),
                (candidates_table, candidates, CANDIDATE_COLUMNS),
            ):
                if frame is not None:
                    _insert(connection, table, _to_columns(frame, columns), versions[table.name])
            for table, frame, columns in (
                (related_table, related, RELATED_COLUMNS),
                (titles_table, titles, TITLE_COLUMNS),
            ):
                if frame is not None:
                    _replace(connection, table, _to_columns(frame, columns), versions[table.name])
            gone = sorted(set(map(str, withdrawn)))
            if related is None:
                _delete_related_to(connection, gone, versions)
            _add_withdrawn(connection, gone)
            _forget_withdrawn(connection, sorted(set(map(str, restored)) - set(gone)))
            _replace_trending(connection, trending, context_trending)
            stamps = pd.to_datetime(lists[GENERATED_AT], utc=True)
            _adjust_summary(
                connection,
                lists_version,
                len(lists) - removed_rows,
                int(lists[USER_ID].nunique()) - removed_users,
                None if stamps.isna().all() else _naive_utc(stamps.max()),
            )

    def recommendations(self, user_id: str, k: int | None = None) -> pd.DataFrame:
        """One user's published list, best first (empty when the user has none)."""
        table = recommendations_table
        return self._ranked(table, SERVING_COLUMNS, k, table.c[USER_ID] == str(user_id))

    def trending(self, k: int | None = None) -> pd.DataFrame:
        """The trending list served to users without their own, best first (empty if none)."""
        return self._ranked(trending_table, TRENDING_COLUMNS, k)

    def context_trending(
        self, context_key: str, context_value: str, k: int | None = None
    ) -> pd.DataFrame:
        """The trending list for one context value, best first (empty if none was published).

        ``context_value`` must be normalised as ml.rules.context_value normalises it ("9", not
        "09"): the store compares text.
        """
        table = context_trending_table
        return self._ranked(
            table,
            CONTEXT_TRENDING_COLUMNS,
            k,
            table.c[CONTEXT_KEY] == str(context_key),
            table.c[CONTEXT_VALUE] == str(context_value),
        )

    def related(self, item_id: str, k: int | None = None) -> pd.DataFrame:
        """One item's published related items, best first (empty when it has none)."""
        table = related_table
        return self._ranked(table, RELATED_COLUMNS, k, table.c[ITEM_ID] == str(item_id))

    def _ranked(
        self, table: sa.Table, columns: tuple[str, ...], k: int | None, *conditions
    ) -> pd.DataFrame:
        """A published ranked list's rows that meet ``conditions``, best first, at most k."""
        return pd.DataFrame(self._ranked_rows(table, k, *conditions), columns=columns)

    def _ranked_rows(self, table: sa.Table, k: int | None, *conditions) -> list[dict[str, Any]]:
        """_ranked as plain dicts: what the API reads per request (no DataFrame to build)."""
        query = (
            sa.select(*unversioned_columns(table))
            .where(*_served_rows(table), *conditions)
            .order_by(table.c[RANK])
        )
        if k is not None:
            query = query.limit(k)
        with self.engine.connect() as connection:
            return [dict(row) for row in connection.execute(query).mappings()]

    def withdrawn_items(self) -> list[str]:
        """The items held as withdrawn since the served pools were ranked, sorted (a few, or
        none: a full publish forgets them)."""
        with self.engine.connect() as connection:
            return sorted(connection.execute(sa.select(withdrawn_table.c[ITEM_ID])).scalars())

    def users_listing(self, item_ids: Sequence[str]) -> list[str]:
        """The users whose served list holds any of ``item_ids`` (a scan of the lists: asked
        only when items were withdrawn)."""
        table = recommendations_table
        found: set[str] = set()
        items = sorted({str(item) for item in item_ids})
        with self.engine.connect() as connection:
            for start in range(0, len(items), _IDS_PER_STATEMENT):
                query = (
                    sa.select(table.c[USER_ID])
                    .distinct()
                    .where(
                        *_served_rows(table),
                        table.c[ITEM_ID].in_(items[start : start + _IDS_PER_STATEMENT]),
                    )
                )
                found.update(connection.execute(query).scalars())
        return sorted(found)

    def list_rows(self, user_id: str) -> list[dict[str, Any]]:
        """recommendations() as plain dicts."""
        return self._rows(_LIST_QUERY, {USER_ID: str(user_id)})

    def trending_rows(self, k: int | None = None) -> list[dict[str, Any]]:
        """trending() as plain dicts."""
        return self._rows(_TRENDING_QUERY, {})[:k]

    def context_trending_rows(
        self, context_key: str, context_value: str, k: int | None = None
    ) -> list[dict[str, Any]]:
        """context_trending() as plain dicts."""
        values = {CONTEXT_KEY: str(context_key), CONTEXT_VALUE: str(context_value)}
        return self._rows(_CONTEXT_TRENDING_QUERY, values)[:k]

    def related_rows(self, item_id: str, k: int | None = None) -> list[dict[str, Any]]:
        """related() as plain dicts."""
        return self._rows(_RELATED_QUERY, {ITEM_ID: str(item_id)})[:k]

    def personalisation_inputs(
        self, user_id: str, item_ids: list[str], related_per_item: int
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]:
        """(the user's candidates: item_id, score, reason, less any item withdrawn since they
        were ranked; the related items of ``item_ids``: item_id, related_item_id, score; their
        titles), read in one connection: what re-ranking a user's list for their recent events
        needs."""
        wanted = sorted(set(map(str, item_ids)))
        connection = self.engine.raw_connection()  # from the pool; close() returns it
        try:
            pools, withdrawn, related_rows, titles = self._read_on(
                connection,
                (_CANDIDATE_POOL_QUERY, {USER_ID: str(user_id)}),
                (_WITHDRAWN_QUERY, {}),
                (_RELATED_OF_ITEMS_QUERY, {"items": wanted, "per_item": related_per_item}),
                (_TITLES_QUERY, {"items": wanted}),
            )
            pool = unpack_pool(pools[0][POOL]) if pools else []
            if pool and len(withdrawn) == _WITHDRAWN_READ_WHOLE:  # more: ask about the pool's
                among = {"items": [row[ITEM_ID] for row in pool]}
                (withdrawn,) = self._read_on(connection, (_WITHDRAWN_AMONG_QUERY, among))
        finally:
            connection.close()
        if withdrawn:
            gone = {row[ITEM_ID] for row in withdrawn}
            pool = [row for row in pool if row[ITEM_ID] not in gone]
        return pool, related_rows, {row[ITEM_ID]: row[TITLE] for row in titles}

    def _rows(self, query: sa.Select, values: dict[str, object]) -> list[dict[str, Any]]:
        """A prebuilt query's rows as dicts."""
        return self._reads((query, values))[0]

    def _reads(self, *reads: tuple[sa.Select, dict[str, object]]) -> list[list[dict[str, Any]]]:
        """Prebuilt queries' rows as dicts, one list per (query, values), read in one pooled
        connection, each query run as a _PreparedRead (compiled once per store)."""
        connection = self.engine.raw_connection()  # from the pool; close() returns it
        try:
            return self._read_on(connection, *reads)
        finally:
            connection.close()

    def _read_on(
        self, connection: Any, *reads: tuple[sa.Select, dict[str, object]]
    ) -> list[list[dict[str, Any]]]:
        """_reads on a DBAPI connection the caller holds."""
        return [self._prepared_read(query).rows(connection, values) for query, values in reads]

    def _prepared_read(self, query: sa.Select) -> _PreparedRead:
        prepared = self._prepared.get(id(query))
        if prepared is None:
            prepared = self._prepared[id(query)] = _PreparedRead(query, self.engine.dialect)
        return prepared

    def recent_events(self, user_id: str) -> list[dict[str, Any]]:
        """The user's recent events not yet reflected by a publish, in the order received."""
        return self._rows(_RECENT_EVENTS_QUERY, {USER_ID: str(user_id)})

    def append_recent_events(self, events: list[dict[str, Any]], per_user: int) -> int:
        """Append events (RECENT_EVENT_COLUMNS; times naive UTC) and keep each of their users'
        ``per_user`` newest received; returns the number appended.

        Only the newest few matter: a request re-ranks a list of candidates with them, and a
        publish that reflects them deletes them, so the table stays small.
        """
        if per_user < 1:
            raise ValueError(f"per_user must be at least 1; got {per_user}")
        if not events:
            return 0
        missing = sorted(set(RECENT_EVENT_COLUMNS) - set(events[0]))
        if missing:
            raise ValueError(f"recent events lack column(s): {', '.join(missing)}")
        table = recent_events_table
        users = sorted({str(event[USER_ID]) for event in events})
        with self.engine.begin() as connection:
            connection.execute(table.insert(), events)
            for start in range(0, len(users), _IDS_PER_STATEMENT):
                chunk = users[start : start + _IDS_PER_STATEMENT]
                place = (
                    sa.func.row_number()
                    .over(partition_by=table.c[USER_ID], order_by=table.c["id"].desc())
                    .label("place")
                )
                placed = (
                    sa.select(table.c["id"], place).where(table.c[USER_ID].in_(chunk)).subquery()
                )
                beyond = sa.select(placed.c["id"]).where(placed.c["place"] > per_user)
                connection.execute(table.delete().where(table.c["id"].in_(beyond)))
        return len(events)

    def mark_loaded(self, loaded_at_by_file: dict[str, datetime]) -> dict[str, int]:
        """Record when ingestion loaded the recent events that came in each landing file;
        returns the events marked per file, for the files that have any (API files)."""
        table = recent_events_table
        marked = {}
        with self.engine.begin() as connection:
            for source_file, loaded_at in loaded_at_by_file.items():
                result = connection.execute(
                    table.update()
                    .where(table.c[SOURCE_FILE] == source_file)
                    .values({LOADED_AT: _naive_utc(loaded_at)})
                )
                if result.rowcount:
                    marked[source_file] = result.rowcount
        return marked

    def all_lists(self) -> pd.DataFrame:
        """Every published row, ordered by user and rank."""
        lists = recommendations_table
        query = (
            sa.select(*unversioned_columns(lists))
            .where(served(lists))
            .order_by(lists.c[USER_ID], lists.c[RANK])
        )
        with self.engine.connect() as connection:
            return pd.DataFrame(connection.execute(query).mappings().all(), columns=SERVING_COLUMNS)

    def served_table(self, name: str) -> pd.DataFrame:
        """Every row readers get of one serving table (its served version, without the
        version column), ordered by its key."""
        table = _metadata.tables[name]
        columns = unversioned_columns(table)
        query = (
            sa.select(*columns)
            .where(*_served_rows(table))
            .order_by(*(column for column in columns if column.primary_key))
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return pd.DataFrame(rows, columns=[column.name for column in columns])

    def summary(self) -> dict[str, object]:
        """List row and user counts, the newest publish time, and the trending row count."""
        lists = recommendations_table
        kept = summary_table.c
        version = served_version(lists)

        def figure(column: sa.Column) -> sa.ScalarSelect:
            return sa.select(column).where(kept[VERSION] == version).scalar_subquery()

        # One statement, so every figure comes from the same snapshot even during a publish.
        query = sa.select(
            figure(kept[LIST_ROWS]),
            figure(kept[LIST_USERS]),
            figure(kept[GENERATED_AT]),
            sa.select(sa.func.count()).select_from(trending_table).scalar_subquery(),
            # One served row by the primary key: the lists table itself must answer too.
            sa.select(lists.c[USER_ID]).where(served(lists)).limit(1).scalar_subquery(),
        )
        with self.engine.connect() as connection:
            rows, users, newest, trending_rows, _ = connection.execute(query).one()
            if rows is None:  # lists published before the summary was kept: counted here
                rows, users, newest = _count_lists(connection, version)
        return {"rows": rows, "users": users, "generated_at": newest, "trending": trending_rows}

    def dispose(self) -> None:
        self.engine.dispose()


class ServingVersion:
    """A new version of every user's list and candidates (and maybe of every item's related
    items or titles) while it is written: in any number of parts, e.g. one per scoring shard,
    each a chunk of rows per transaction. Readers get it once committed. Used as a context
    manager, it is aborted when its block raises."""

    def __init__(self, store: ServingStore, version: NewVersion) -> None:
        self._store = store
        self._version = version

    @property
    def number(self) -> int:
        """The version number, by which another process resumes it (ServingStore.resume_version)."""
        return self._version.number

    @property
    def replaces_related(self) -> bool:
        """Whether serving this version replaces every item's related items."""
        return self._version.replaces(related_table)

    def write(self, lists: pd.DataFrame, candidates: pd.DataFrame | None = None) -> None:
        """Add some users' lists and candidates (e.g. one scoring shard's; candidates as
        publish() takes them)."""
        _require_columns(lists, SERVING_COLUMNS, "lists")
        candidates = _packed(candidates)
        if candidates is not None:
            _require_columns(candidates, CANDIDATE_COLUMNS, "candidate pools")
        self._insert(recommendations_table, lists, SERVING_COLUMNS)
        if candidates is not None:
            self._insert(candidates_table, candidates, CANDIDATE_COLUMNS)

    def write_related(self, related: pd.DataFrame) -> None:
        """Add items' related items (the version must replace them: begin_version(related=True))."""
        _require_columns(related, RELATED_COLUMNS, "related items")
        self._insert(related_table, related, RELATED_COLUMNS)

    def write_titles(self, titles: pd.DataFrame) -> None:
        """Add items' titles (the version must replace them: begin_version(titles=True))."""
        _require_columns(titles, TITLE_COLUMNS, "item titles")
        self._insert(titles_table, titles, TITLE_COLUMNS)

    def _insert(self, table: sa.Table, frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
        for chunk in _column_chunks(frame, columns, self._version.chunk_rows):
            self._version.insert(table, chunk)

    def commit(
        self,
        trending: pd.DataFrame | None = None,
        context_trending: pd.DataFrame | None = None,
        events_loaded_through: datetime | None = None,
    ) -> None:
        """Serve this version. One short transaction switches readers to it, replaces the
        trending and context trending lists (None keeps them) and deletes the recent events
        loaded at or before ``events_loaded_through`` (the new lists reflect them); then the
        replaced version's rows are deleted, a chunk per transaction."""
        if trending is not None:
            _require_columns(trending, TRENDING_COLUMNS, "trending rows")
        if context_trending is not None:
            _require_columns(context_trending, CONTEXT_TRENDING_COLUMNS, "context trending rows")
        number = self._version.number
        with self._store.engine.connect() as connection:  # before the write lock is taken
            figures = _count_lists(connection, number)
        with self._store.engine.begin() as connection:
            self._version.switch(connection)
            _replace_trending(connection, trending, context_trending)
            _delete_reflected_events(connection, events_loaded_through)
            connection.execute(withdrawn_table.delete())  # every pool was ranked without them
            # This version's figures replace the older ones' with the switch itself.
            connection.execute(summary_table.delete().where(summary_table.c[VERSION] <= number))
            _insert_summary(connection, number, *figures)
        self._version.drop_replaced()

    def abort(self) -> None:
        """Delete what was written (nothing of it was served), unless it was committed."""
        self._version.discard()

    def __enter__(self) -> ServingVersion:
        return self

    def __exit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is not None:
            self.abort()


def _insert(
    connection: sa.Connection,
    table: sa.Table,
    columns: dict[str, list],
    version: int | None = None,
) -> None:
    """Insert rows given column by column (_to_columns), into ``version`` of a versioned table."""
    bulk_insert(connection, table, columns if version is None else with_version(columns, version))


def _replace(
    connection: sa.Connection,
    table: sa.Table,
    columns: dict[str, list],
    version: int | None = None,
) -> None:
    """Replace every row of a table (of ``version`` of a versioned one) with these rows."""
    delete = table.delete()
    if version is not None:
        delete = delete.where(table.c[VERSION] == version)
    connection.execute(delete)
    _insert(connection, table, columns, version)


def _delete_related_to(
    connection: sa.Connection, items: list[str], versions: dict[str, int]
) -> None:
    """Take ``items`` out of the served related items of every item."""
    table = related_table
    for start in range(0, len(items), _IDS_PER_STATEMENT):
        connection.execute(
            table.delete().where(
                table.c[VERSION] == versions[table.name],
                table.c[RELATED_ITEM_ID].in_(items[start : start + _IDS_PER_STATEMENT]),
            )
        )


def _forget_withdrawn(connection: sa.Connection, items: list[str]) -> None:
    """No longer hold ``items`` as withdrawn (they are available again)."""
    table = withdrawn_table
    for start in range(0, len(items), _IDS_PER_STATEMENT):
        chunk = items[start : start + _IDS_PER_STATEMENT]
        connection.execute(table.delete().where(table.c[ITEM_ID].in_(chunk)))


def _add_withdrawn(connection: sa.Connection, items: list[str]) -> None:
    """Record ``items`` (distinct) as withdrawn since the served pools were ranked; an item
    recorded already is replaced by itself."""
    table = withdrawn_table
    for start in range(0, len(items), _IDS_PER_STATEMENT):
        chunk = items[start : start + _IDS_PER_STATEMENT]
        connection.execute(table.delete().where(table.c[ITEM_ID].in_(chunk)))
        connection.execute(table.insert(), [{ITEM_ID: item} for item in chunk])


def _count_lists(
    connection: sa.Connection, version: int | sa.ScalarSelect, users: list[str] | None = None
) -> tuple[int, int, datetime | None]:
    """(rows, distinct users, newest generated_at) of a version of the lists, or of ``users``'
    rows in it (an index lookup per user)."""
    lists = recommendations_table
    conditions = [lists.c[VERSION] == version]
    if users is not None:
        conditions.append(lists.c[USER_ID].in_(users))
    query = sa.select(
        sa.func.count(),
        sa.func.count(sa.distinct(lists.c[USER_ID])),
        sa.func.max(lists.c[GENERATED_AT]),
    ).where(*conditions)
    rows, distinct, newest = connection.execute(query).one()
    return int(rows), int(distinct), newest


def _insert_summary(
    connection: sa.Connection, version: int, rows: int, users: int, newest: datetime | None
) -> None:
    connection.execute(
        summary_table.insert().values(
            {VERSION: version, LIST_ROWS: rows, LIST_USERS: users, GENERATED_AT: newest}
        )
    )


def _adjust_summary(
    connection: sa.Connection,
    version: int,
    rows: int,
    users: int,
    newest: datetime | None,
) -> None:
    """Add a scoped publish's change in rows and users to the served version's figures (and
    its newest time, when it wrote rows); count them whole where none were kept yet (a store
    from before the summary, once)."""
    kept = summary_table.c
    current = connection.execute(
        sa.select(kept[LIST_ROWS], kept[GENERATED_AT]).where(kept[VERSION] == version)
    ).one_or_none()
    if current is None:
        _insert_summary(connection, version, *_count_lists(connection, version))
        return
    total_rows, latest = current
    if not total_rows + rows:
        latest = None
    elif newest is not None and (latest is None or newest > latest):
        latest = newest
    connection.execute(
        summary_table.update()
        .where(kept[VERSION] == version)
        .values(
            {
                LIST_ROWS: kept[LIST_ROWS] + rows,
                LIST_USERS: kept[LIST_USERS] + users,
                GENERATED_AT: latest,
            }
        )
    )


def _replace_trending(
    connection: sa.Connection,
    trending: pd.DataFrame | None,
    context_trending: pd.DataFrame | None,
) -> None:
    """Replace the trending and context trending lists whole (None keeps one): they are small
    enough to go in the transaction that switches the lists."""
    if trending is not None:
        _replace(connection, trending_table, _to_columns(trending, TRENDING_COLUMNS))
    if context_trending is not None:
        columns = _to_columns(context_trending, CONTEXT_TRENDING_COLUMNS)
        _replace(connection, context_trending_table, columns)


def _delete_reflected_events(
    connection: sa.Connection, loaded_through: datetime | None, users: list[str] | None = None
) -> None:
    """Delete the recent events (of ``users``; None: everyone's) that ingestion loaded at or
    before ``loaded_through``: lists published from those loads reflect them."""
    if loaded_through is None:
        return
    table = recent_events_table
    condition = table.c[LOADED_AT] <= _naive_utc(loaded_through)
    if users is not None:
        condition = sa.and_(condition, table.c[USER_ID].in_(users))
    connection.execute(table.delete().where(condition))


def _column_chunks(
    frame: pd.DataFrame, columns: tuple[str, ...], chunk_rows: int
) -> Iterator[dict[str, list]]:
    """The frame's rows as _to_columns gives them, ``chunk_rows`` at a time (converted chunk by
    chunk, so a large publish never holds every row as Python objects at once)."""
    for start in range(0, len(frame), chunk_rows):
        yield _to_columns(frame.iloc[start : start + chunk_rows], columns)


class _PreparedRead:
    """A prebuilt SELECT run straight on a pooled DBAPI connection: its SQL compiled once for
    the engine's dialect, and each column's result conversion (SQLite keeps times as text)
    looked up once. For the reads of every API request: SQLAlchemy's own execution costs about
    50 us a statement, where running it on the DBAPI connection costs about 13 us on SQLite.
    The SQL, the parameter order, the expansion of IN lists and the conversions are
    SQLAlchemy's, so the rows are the ones ``connection.execute(query)`` gives. Bound values
    go to the driver as they are: text and numbers, which need no conversion (checked here)."""

    def __init__(self, query: sa.Select, dialect: sa.Dialect) -> None:
        # Held, so that the id() the store caches this under is never another query's.
        self.query = query
        self._dialect = dialect
        self._compiled = query.compile(dialect=dialect)
        converted = [
            name
            for name, bound in self._compiled.binds.items()
            if bound.type.dialect_impl(dialect).bind_processor(dialect) is not None
        ]
        if converted:
            raise ValueError(
                f"parameters {converted} need conversion: run the query with SQLAlchemy"
            )
        self._sql = str(self._compiled)
        self._expands = bool(self._compiled.post_compile_params)  # IN lists: SQL per call
        self._types = [column.type.dialect_impl(dialect) for column in query.selected_columns]
        self._keys = tuple(column.name for column in query.selected_columns)
        # (column, conversion) of the columns that need one; a conversion may depend on the
        # type the driver reports, so they are looked up at the first execution.
        self._converters: list[tuple[str, Any]] | None = None

    def rows(self, connection: Any, values: dict[str, object]) -> list[dict[str, Any]]:
        """The query's rows for ``values`` (its bound parameters by name), as dicts."""
        positional = self._compiled.positional
        if self._expands:
            state = self._compiled.construct_expanded_state(values)
            sql = state.statement
            parameters: Any = state.positional_parameters if positional else state.parameters
        else:
            sql, parameters = self._sql, self._compiled.construct_params(values)
            if positional:
                parameters = tuple(parameters[name] for name in self._compiled.positiontup)
        cursor = connection.cursor()
        try:
            cursor.execute(sql, parameters)
            fetched = cursor.fetchall()
            if self._converters is None:
                self._converters = self._conversions(cursor.description)
        finally:
            cursor.close()
        rows = []
        for found in fetched:
            row = dict(zip(self._keys, found, strict=True))
            for key, convert in self._converters:
                row[key] = convert(row[key])
            rows.append(row)
        return rows

    def _conversions(self, description: Any) -> list[tuple[str, Any]]:
        found = [
            (key, kind.result_processor(self._dialect, field[1]))
            for key, kind, field in zip(self._keys, self._types, description, strict=True)
        ]
        return [(key, convert) for key, convert in found if convert is not None]


def _packed(candidates: pd.DataFrame | None) -> pd.DataFrame | None:
    """Candidates as the store keeps them: packed pools as they are; candidate rows (the
    lists' columns) packed a row a user, with the user's first row's version and time."""
    if candidates is None or POOL in candidates.columns:
        return candidates
    _require_columns(candidates, SERVING_COLUMNS, "candidates")
    stamps = candidates.drop_duplicates(USER_ID)[[USER_ID, MODEL_VERSION, GENERATED_AT]]
    packed = pack_pools(candidates).merge(stamps.astype({USER_ID: str}), on=USER_ID)
    return packed[list(CANDIDATE_COLUMNS)]


def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{what} to publish lack column(s): {', '.join(missing)}")


def _to_columns(frame: pd.DataFrame, columns: tuple[str, ...]) -> dict[str, list]:
    """The frame's ``columns`` as plain Python values of the table's types ({column: values}):
    ids as text, times as naive UTC. Each column is converted at once (a time once per
    distinct value): a full publish converts millions of rows, and a conversion per value, or
    a dict per row, was most of it (see bulk_insert)."""
    return {column: _column_values(frame[column], column) for column in columns}


def _column_values(series: pd.Series, column: str) -> list:
    """One column's values as the Python type its table column stores."""
    if column == GENERATED_AT:
        codes, distinct = pd.factorize(series)
        # Code -1 (a missing time) takes the None appended last.
        converted = np.array([*(_naive_utc(value) for value in distinct), None], dtype=object)
        return converted[codes].tolist()
    if column == RANK:
        return series.astype("int64").tolist()
    if column == SCORE:
        return series.astype(float).tolist()
    if column in _DISPLAY_TEXT_LENGTHS:
        return fitted_texts(series.astype(str), _DISPLAY_TEXT_LENGTHS[column])
    if column in _TEXT_COLUMNS:
        return series.astype(str).tolist()
    raise ValueError(f"no conversion for column {column!r}")


def fitted_texts(texts: pd.Series, length: int) -> list[str]:
    """The texts without NUL and at most ``length`` characters long (a cut one ends in an
    ellipsis). Mended per distinct text: a publish's millions of reasons hold far fewer."""
    codes, distinct = pd.factorize(texts)
    mended = [fitted_text(text, length) for text in distinct]
    return np.array(mended, dtype=object)[codes].tolist()


def fitted_text(text: str, length: int) -> str:
    """``text`` without NUL, cut to ``length`` characters with an ellipsis when longer."""
    text = text.replace("\x00", "")
    return text if len(text) <= length else text[: length - 1] + ELLIPSIS


_TEXT_COLUMNS = frozenset(
    {
        CONTEXT_KEY,
        CONTEXT_VALUE,
        USER_ID,
        RELATED_ITEM_ID,
        ITEM_ID,
        REASON,
        TITLE,
        MODEL_VERSION,
        POOL,
    }
)


_DISPLAY_TEXT_LENGTHS = {REASON: REASON_LENGTH, TITLE: TITLE_LENGTH}


def _naive_utc(value: object) -> datetime:
    """A time as naive UTC; a naive one is taken to be UTC already."""
    moment = value if isinstance(value, datetime) else pd.Timestamp(value).to_pydatetime()
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment
