"""The serving store: the `recommendations` table that applications read.

SQLite in WAL mode by default (readers never block on a publish and never see half a list),
any SQLAlchemy URL (PostgreSQL in production). Every publish is one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import pandas as pd
import sqlalchemy as sa

from ml.constants import (
    GENERATED_AT,
    ITEM_ID,
    MODEL_VERSION,
    RANK,
    REASON,
    SCORE,
    SERVING_COLUMNS,
    USER_ID,
)

TABLE_NAME = "recommendations"
_DELETE_CHUNK = 500

_metadata = sa.MetaData()
recommendations_table = sa.Table(
    TABLE_NAME,
    _metadata,
    sa.Column(USER_ID, sa.String(255), primary_key=True),
    sa.Column(RANK, sa.Integer, primary_key=True),
    sa.Column(ITEM_ID, sa.String(255), nullable=False),
    sa.Column(SCORE, sa.Float, nullable=False),
    sa.Column(REASON, sa.String(500), nullable=False),
    sa.Column(MODEL_VERSION, sa.String(255), nullable=False),
    sa.Column(GENERATED_AT, sa.DateTime, nullable=False),
)


def _enable_sqlite_wal(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class ServingStore:
    """Publish and read ranked top-K lists."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _enable_sqlite_wal)
        _metadata.create_all(self.engine)

    def publish(self, lists: pd.DataFrame, users: Iterable[str] | None = None) -> int:
        """Replace lists in one transaction: all of them, or only those of ``users``.

        With ``users`` given, every listed user's old rows are removed, also when the new lists
        hold nothing for them. Returns the number of rows written.
        """
        missing = [column for column in SERVING_COLUMNS if column not in lists.columns]
        if missing:
            raise ValueError(f"lists to publish lack column(s): {', '.join(missing)}")
        rows = _to_records(lists)
        with self.engine.begin() as connection:
            if users is None:
                connection.execute(recommendations_table.delete())
            else:
                affected = sorted(set(map(str, users)) | set(lists[USER_ID].astype(str)))
                for start in range(0, len(affected), _DELETE_CHUNK):
                    chunk = affected[start : start + _DELETE_CHUNK]
                    connection.execute(
                        recommendations_table.delete().where(
                            recommendations_table.c[USER_ID].in_(chunk)
                        )
                    )
            if rows:
                connection.execute(recommendations_table.insert(), rows)
        return len(rows)

    def recommendations(self, user_id: str, k: int | None = None) -> pd.DataFrame:
        """One user's published list, best first (empty when the user has none)."""
        query = (
            sa.select(recommendations_table)
            .where(recommendations_table.c[USER_ID] == str(user_id))
            .order_by(recommendations_table.c[RANK])
        )
        if k is not None:
            query = query.limit(k)
        with self.engine.connect() as connection:
            return pd.DataFrame(connection.execute(query).mappings().all(), columns=SERVING_COLUMNS)

    def all_lists(self) -> pd.DataFrame:
        """Every published row, ordered by user and rank."""
        query = sa.select(recommendations_table).order_by(
            recommendations_table.c[USER_ID], recommendations_table.c[RANK]
        )
        with self.engine.connect() as connection:
            return pd.DataFrame(connection.execute(query).mappings().all(), columns=SERVING_COLUMNS)

    def summary(self) -> dict[str, object]:
        """Row and user counts, and the newest publish time."""
        table = recommendations_table
        query = sa.select(
            sa.func.count(),
            sa.func.count(sa.distinct(table.c[USER_ID])),
            sa.func.max(table.c[GENERATED_AT]),
        )
        with self.engine.connect() as connection:
            rows, users, newest = connection.execute(query).one()
        return {"rows": rows, "users": users, "generated_at": newest}

    def dispose(self) -> None:
        self.engine.dispose()


def _to_records(lists: pd.DataFrame) -> list[dict[str, object]]:
    frame = lists.loc[:, list(SERVING_COLUMNS)]
    records = []
    for user_id, rank, item_id, score, reason, model_version, generated_at in frame.itertuples(
        index=False, name=None
    ):
        records.append(
            {
                USER_ID: str(user_id),
                RANK: int(rank),
                ITEM_ID: str(item_id),
                SCORE: float(score),
                REASON: str(reason),
                MODEL_VERSION: str(model_version),
                GENERATED_AT: pd.Timestamp(generated_at).to_pydatetime()
                if not isinstance(generated_at, datetime)
                else generated_at,
            }
        )
    return records
