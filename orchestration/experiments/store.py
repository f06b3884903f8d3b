"""Experiments in the serving store: their definitions, each variant's lists, and the exposures.

``experiments`` holds one row per experiment (its variants as JSON, its status: ``starting``
until the first publish has written every variant's lists, then ``running``, then
``stopped``). ``experiment_lists`` holds each enrolled user's list from their variant's model;
``exposures`` one row per list served to an enrolled user (who, which variant, the items in
order, when). Experiment names are never reused: a user's variant follows from the name.
``experiment_lists`` is versioned as the champion's lists are (orchestration.serving.versions):
a publish for everyone writes a new version in chunks and switches to it in one transaction.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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
from ml.experiments.assignment import ExperimentDesign, Variant
from orchestration.serving.store import REASON_LENGTH, fitted_texts
from orchestration.serving.versions import (
    DEFAULT_CHUNK_ROWS,
    VERSION,
    NewVersion,
    bulk_insert,
    current_versions,
    prepare,
    served,
    version_column,
    with_version,
)

EXPERIMENT = "experiment"
VARIANT = "variant"
SERVED_AT = "served_at"
ITEMS = "items"
EXPOSURE_ID = "exposure_id"
STARTING, RUNNING, STOPPED = "starting", "running", "stopped"
LIST_COLUMNS = (EXPERIMENT, VARIANT, *SERVING_COLUMNS)
EXPOSURE_COLUMNS = (EXPOSURE_ID, EXPERIMENT, VARIANT, USER_ID, ITEMS, MODEL_VERSION, SERVED_AT)
# How long a reader trusts the running experiment it looked up: a start or a stop reaches a
# running API within this many seconds, and reads do not query the definition every time.
RUNNING_LOOKUP_SECONDS = 2.0
_DELETE_CHUNK = 500

_metadata = sa.MetaData()

experiments_table = sa.Table(
    "experiments",
    _metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("variants", sa.Text, nullable=False),  # JSON: [{name, share, model, version}]
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("stopped_at", sa.DateTime, nullable=True),
    sa.Column("promoted", sa.String(100), nullable=True),  # the variant promoted at the stop
    sa.Column("verdict", sa.Text, nullable=True),  # the newest analysis, in words
    sa.Column("analysed_at", sa.DateTime, nullable=True),
)
experiment_lists_table = sa.Table(
    "experiment_lists",
    _metadata,
    version_column(),
    sa.Column(EXPERIMENT, sa.String(100), primary_key=True),
    sa.Column(USER_ID, sa.String(255), primary_key=True),
    sa.Column(RANK, sa.Integer, primary_key=True),
    sa.Column(VARIANT, sa.String(100), nullable=False),
    sa.Column(ITEM_ID, sa.String(255), nullable=False),
    sa.Column(SCORE, sa.Float, nullable=False),
    sa.Column(REASON, sa.String(REASON_LENGTH), nullable=False),
    sa.Column(MODEL_VERSION, sa.String(255), nullable=False),
    sa.Column(GENERATED_AT, sa.DateTime, nullable=False),
)
exposures_table = sa.Table(
    "exposures",
    _metadata,
    sa.Column(EXPOSURE_ID, sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(EXPERIMENT, sa.String(100), nullable=False, index=True),
    sa.Column(VARIANT, sa.String(100), nullable=False),
    sa.Column(USER_ID, sa.String(255), nullable=False),
    sa.Column(ITEMS, sa.Text, nullable=False),  # JSON array of item ids, best first
    sa.Column(MODEL_VERSION, sa.String(255), nullable=False),
    sa.Column(SERVED_AT, sa.DateTime, nullable=False),  # naive UTC
)


# Built once and bound per read: building a statement costs more than running it.
_INSERT_EXPOSURE = exposures_table.insert()
_VARIANT_LIST_QUERY = (
    sa.select(*(experiment_lists_table.c[column] for column in SERVING_COLUMNS))
    .where(
        served(experiment_lists_table),
        experiment_lists_table.c[EXPERIMENT] == sa.bindparam(EXPERIMENT),
        experiment_lists_table.c[USER_ID] == sa.bindparam(USER_ID),
    )
    .order_by(experiment_lists_table.c[RANK])
)


@dataclass(frozen=True)
class ExperimentRecord:
    """An experiment as stored: its design and where it stands."""

    design: ExperimentDesign
    status: str
    started_at: datetime
    stopped_at: datetime | None = None
    promoted: str | None = None
    verdict: str | None = None
    analysed_at: datetime | None = None

    @property
    def name(self) -> str:
        return self.design.name


@dataclass(frozen=True)
class Assignment:
    """An enrolled user's experiment and variant."""

    experiment: str
    variant: Variant


class ExperimentStore:
    """Start, stop and read experiments; publish variants' lists; log and read exposures."""

    def __init__(self, engine: sa.Engine, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
        self.engine = engine
        self.chunk_rows = chunk_rows  # rows per transaction of a publish for everyone
        prepare(engine, _metadata, [experiment_lists_table])
        self._running: ExperimentRecord | None = None
        self._running_read_at = -float("inf")

    # --- definitions ---------------------------------------------------------------------
    def start(self, design: ExperimentDesign, started_at: datetime | None = None) -> None:
        """Record a new experiment as starting; its lists come with the next publish."""
        if any(variant.version is None for variant in design.variants):
            raise ValueError(f"experiment {design.name!r}: every variant needs a resolved version")
        with self.engine.begin() as connection:
            existing = connection.execute(
                sa.select(experiments_table.c.name, experiments_table.c.status)
            ).all()
            if design.name in {name for name, _ in existing}:
                raise ValueError(
                    f"an experiment called {design.name!r} already exists; names are not reused "
                    "(a user's variant follows from the name): choose another"
                )
            active = [name for name, status in existing if status != STOPPED]
            if active:
                raise ValueError(
                    f"experiment {active[0]!r} is still running: stop it first "
                    f"(`freshrank experiment stop {active[0]}`); one experiment runs at a time"
                )
            connection.execute(
                experiments_table.insert().values(
                    name=design.name,
                    status=STARTING,
                    variants=json.dumps([_variant_json(variant) for variant in design.variants]),
                    started_at=naive_utc(started_at or datetime.now(UTC)),
                )
            )

    def stop(
        self, name: str, promoted: str | None = None, stopped_at: datetime | None = None
    ) -> None:
        """Stop an experiment and drop its lists (its exposures stay, for the analysis)."""
        record = self.get(name)
        if record.status == STOPPED:
            raise ValueError(f"experiment {name!r} was already stopped at {record.stopped_at}")
        if promoted is not None:
            record.design.variant(promoted)  # a clear error for an unknown variant
        with self.engine.begin() as connection:
            connection.execute(
                experiments_table.update()
                .where(experiments_table.c.name == name)
                .values(
                    status=STOPPED,
                    stopped_at=naive_utc(stopped_at or datetime.now(UTC)),
                    promoted=promoted,
                )
            )
            connection.execute(
                experiment_lists_table.delete().where(experiment_lists_table.c[EXPERIMENT] == name)
            )
        self._running_read_at = -float("inf")

    def get(self, name: str) -> ExperimentRecord:
        """One experiment; a ValueError naming the experiments there are when it is unknown."""
        for record in self.all():
            if record.name == name:
                return record
        known = ", ".join(record.name for record in self.all()) or "none yet"
        raise ValueError(f"no experiment called {name!r} (experiments: {known})")

    def all(self) -> list[ExperimentRecord]:
        """Every experiment, newest first."""
        query = sa.select(experiments_table).order_by(experiments_table.c.started_at.desc())
        with self.engine.connect() as connection:
            return [_record(row) for row in connection.execute(query).mappings()]

    def active(self) -> ExperimentRecord | None:
        """The experiment that is starting or running, if any (at most one is)."""
        return next((record for record in self.all() if record.status != STOPPED), None)

    def record_verdict(self, name: str, verdict: str, analysed_at: datetime | None = None) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                experiments_table.update()
                .where(experiments_table.c.name == name)
                .values(verdict=verdict, analysed_at=naive_utc(analysed_at or datetime.now(UTC)))
            )

    # --- the variants' lists -------------------------------------------------------------
    def publish_lists(
        self, name: str, lists: pd.DataFrame, users: Iterable[str] | None = None
    ) -> int:
        """Replace an experiment's lists at once: all (as a new version), or those of ``users``
        (in one transaction).

        ``lists`` has the serving columns plus ``variant``. A starting experiment becomes
        running in the transaction that serves the lists, so no user is served before their
        variant's list exists. Returns the rows written.
        """
        missing = [column for column in (VARIANT, *SERVING_COLUMNS) if column not in lists]
        if missing:
            raise ValueError(f"experiment lists to publish lack column(s): {', '.join(missing)}")
        if users is None:
            self._publish_version(name, lists)
        else:
            self._publish_users(name, lists, users)
        self._running_read_at = -float("inf")
        return len(lists)

    def _publish_version(self, name: str, lists: pd.DataFrame) -> None:
        """Every enrolled user's list as a new version, a chunk per transaction, then served."""
        table = experiment_lists_table
        version = NewVersion.begin(self.engine, [table], self.chunk_rows)
        try:
            for start in range(0, len(lists), self.chunk_rows):
                chunk = lists.iloc[start : start + self.chunk_rows]
                version.insert(table, _list_columns(name, chunk))
            with self.engine.begin() as connection:
                version.switch(connection)
                connection.execute(_mark_running(name))
        except BaseException:
            version.discard()
            raise
        version.drop_replaced()

    def _publish_users(self, name: str, lists: pd.DataFrame, users: Iterable[str]) -> None:
        """Some users' lists replaced in the served version, in one transaction."""
        table = experiment_lists_table
        affected = sorted(set(map(str, users)) | set(lists[USER_ID].astype(str)))
        with self.engine.begin() as connection:
            (served_version,) = current_versions(connection, [table]).values()
            mine = sa.and_(table.c[VERSION] == served_version, table.c[EXPERIMENT] == name)
            for start in range(0, len(affected), _DELETE_CHUNK):
                chunk = affected[start : start + _DELETE_CHUNK]
                connection.execute(table.delete().where(mine, table.c[USER_ID].in_(chunk)))
            bulk_insert(connection, table, with_version(_list_columns(name, lists), served_version))
            connection.execute(_mark_running(name))

    def lists(self, name: str) -> pd.DataFrame:
        """Every published list of an experiment, by user and rank."""
        table = experiment_lists_table
        query = (
            sa.select(*(table.c[column] for column in LIST_COLUMNS))
            .where(served(table), table.c[EXPERIMENT] == name)
            .order_by(table.c[USER_ID], table.c[RANK])
        )
        with self.engine.connect() as connection:
            return pd.DataFrame(connection.execute(query).all(), columns=list(LIST_COLUMNS))

    # --- serving -------------------------------------------------------------------------
    def assigned(self, user_id: str) -> Assignment | None:
        """The running experiment's variant for a user; None when none runs or not enrolled."""
        running = self._running_experiment()
        if running is None:
            return None
        name = running.design.assign(user_id)
        return None if name is None else Assignment(running.name, running.design.variant(name))

    def list_rows(self, assignment: Assignment, user_id: str, k: int) -> list[dict[str, Any]]:
        """An enrolled user's list from their variant's model, best first, as plain dicts."""
        values = {EXPERIMENT: assignment.experiment, USER_ID: str(user_id)}
        with self.engine.connect() as connection:
            return [
                dict(row) for row in connection.execute(_VARIANT_LIST_QUERY, values).mappings()
            ][:k]

    def recommendations(self, assignment: Assignment, user_id: str, k: int) -> pd.DataFrame:
        """list_rows as a frame (empty when the user has no list)."""
        return pd.DataFrame(self.list_rows(assignment, user_id, k), columns=list(SERVING_COLUMNS))

    def log_exposure(
        self,
        assignment: Assignment,
        user_id: str,
        item_ids: Sequence[str],
        model_version: str,
        served_at: datetime | None = None,
    ) -> None:
        """Record one served list (its items best first): one insert, in the read path."""
        row = {
            EXPERIMENT: assignment.experiment,
            VARIANT: assignment.variant.name,
            USER_ID: str(user_id),
            ITEMS: json.dumps([str(item) for item in item_ids]),
            MODEL_VERSION: str(model_version),
            SERVED_AT: datetime.now(UTC).replace(tzinfo=None)
            if served_at is None
            else naive_utc(served_at),
        }
        with self.engine.begin() as connection:
            connection.execute(_INSERT_EXPOSURE, row)

    def exposures(self, name: str) -> pd.DataFrame:
        """An experiment's exposures, oldest first; ``items`` as lists of item ids."""
        table = exposures_table
        query = (
            sa.select(*(table.c[column] for column in EXPOSURE_COLUMNS))
            .where(table.c[EXPERIMENT] == name)
            .order_by(table.c[SERVED_AT], table.c[EXPOSURE_ID])
        )
        with self.engine.connect() as connection:
            frame = pd.DataFrame(connection.execute(query).all(), columns=list(EXPOSURE_COLUMNS))
        frame[ITEMS] = frame[ITEMS].map(json.loads)
        frame[SERVED_AT] = pd.to_datetime(frame[SERVED_AT])
        return frame

    def exposure_counts(self, name: str) -> pd.DataFrame:
        """Exposures and distinct exposed users per variant (variants with none left out)."""
        table = exposures_table
        query = (
            sa.select(
                table.c[VARIANT],
                sa.func.count().label("exposures"),
                sa.func.count(sa.distinct(table.c[USER_ID])).label("users"),
            )
            .where(table.c[EXPERIMENT] == name)
            .group_by(table.c[VARIANT])
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return pd.DataFrame(rows, columns=[VARIANT, "exposures", "users"])

    def _running_experiment(self) -> ExperimentRecord | None:
        now = time.monotonic()
        if now - self._running_read_at > RUNNING_LOOKUP_SECONDS:
            query = sa.select(experiments_table).where(experiments_table.c.status == RUNNING)
            with self.engine.connect() as connection:
                row = connection.execute(query).mappings().first()
            self._running = None if row is None else _record(row)
            self._running_read_at = now
        return self._running


def naive_utc(moment: datetime | pd.Timestamp) -> datetime:
    """A time as naive UTC (how the serving store keeps times); naive input is UTC already."""
    stamp = pd.Timestamp(moment)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert(UTC).tz_localize(None)
    return stamp.to_pydatetime()


def _mark_running(name: str) -> sa.Update:
    """Make a starting experiment running (its lists are served from now on)."""
    return (
        experiments_table.update()
        .where(experiments_table.c.name == name, experiments_table.c.status == STARTING)
        .values(status=RUNNING)
    )


def _variant_json(variant: Variant) -> dict[str, object]:
    return {
        "name": variant.name,
        "share": variant.share,
        "model": variant.model,
        "version": variant.version,
    }


def _record(row) -> ExperimentRecord:
    variants = tuple(Variant(**variant) for variant in json.loads(row["variants"]))
    return ExperimentRecord(
        design=ExperimentDesign(row["name"], variants),
        status=row["status"],
        started_at=row["started_at"],
        stopped_at=row["stopped_at"],
        promoted=row["promoted"],
        verdict=row["verdict"],
        analysed_at=row["analysed_at"],
    )


def _list_columns(name: str, lists: pd.DataFrame) -> dict[str, list]:
    """List rows column by column as plain values of the table's types (ids as text, times as
    naive UTC), as bulk_insert takes them."""
    frame = lists.loc[:, [VARIANT, *SERVING_COLUMNS]].astype(
        {VARIANT: str, USER_ID: str, ITEM_ID: str, RANK: int, SCORE: float, REASON: str}
    )
    frame[GENERATED_AT] = [naive_utc(moment) for moment in frame[GENERATED_AT]]
    frame[REASON] = fitted_texts(frame[REASON], REASON_LENGTH)  # a reason may quote any title
    frame.insert(0, EXPERIMENT, name)
    return {column: frame[column].tolist() for column in frame.columns}
