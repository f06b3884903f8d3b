"""The serving state: the champion's pipeline as the last full scoring fitted it, kept on disk.

A refresh ranks only the users a batch touched. Reloading the model from MLflow, reading every
event and refitting every candidate source costs what the whole history costs, so every full
scoring (a build's publish, the nightly schedule, a champion change) saves its fitted pipeline
here, and a refresh reuses it with the touched users' newest events, read by user from the
marts. Their lists follow their fresh behaviour; item statistics (popularity, co-visitation, the
item-kNN and EASE matrices) stay as the last full scoring counted them until the next one.

The state is used only while it describes what serving would fit now: the same registered
version is champion and the catalog (items, availability, text vectors) is unchanged. Anything
else (a promotion, new or withdrawn items, new vectors) sends the refresh down the full path,
which saves a new state. Saving is atomic (a temporary file renamed over the old one); a state
that cannot be read is ignored with a warning, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb
import pandas as pd

from ml.pipeline.pipeline import RankingPipeline
from orchestration.settings import Settings
from orchestration.warehouse.reads import catalog_stamp

logger = logging.getLogger("freshrank.serving_state")

STATE_FORMAT = 2  # 2: the cold-start list is kept too


@dataclass(frozen=True)
class ServingState:
    """A fitted pipeline with what it was fitted for."""

    champion: str | None  # the registered version it serves; None: no champion (popularity)
    label: str  # the model_version its rows carry
    catalog: str  # catalog_stamp of the marts it was fitted on
    pipeline: RankingPipeline
    # The pipeline's cold_start_list() (the same for every refresh of this state); None: not
    # kept, a refresh computes it
    cold_start: pd.DataFrame | None = None
    stamp: str = ""  # of the file it was read from (read_state sets it; saved with none)


DEFAULT_STATE = "pipeline"  # the champion's; an experiment keeps one per variant beside it


def state_path(settings: Settings, name: str = DEFAULT_STATE) -> Path:
    return settings.home / "cache" / "serving" / f"{name}.pkl"


def save_state(settings: Settings, state: ServingState, name: str = DEFAULT_STATE) -> Path:
    """Write the state atomically; returns its path."""
    path = state_path(settings, name)
    _write_atomically(path, pickle.dumps((STATE_FORMAT, state), protocol=pickle.HIGHEST_PROTOCOL))
    return path


def remembered_champion(settings: Settings, stamp: str) -> tuple[bool, str | None]:
    """(whether a champion was remembered for this registry ``stamp``, that champion)."""
    record = _read_record(
        _champion_path(settings), registry=_digest(settings.mlflow_tracking_uri), stamp=stamp
    )
    return record is not None, None if record is None else record.get("champion")


def remember_champion(settings: Settings, stamp: str, champion: str | None) -> None:
    """Keep the registry's answer beside the state, with the registry's stamp when asked."""
    registry = _digest(settings.mlflow_tracking_uri)
    _write_record(_champion_path(settings), registry=registry, stamp=stamp, champion=champion)


def _champion_path(settings: Settings) -> Path:
    return state_path(settings).with_name("champion.json")


def remember_served_champion(settings: Settings, champion: str | None) -> None:
    """Record which registered version ranked every served list (a full publish's)."""
    store = _digest(settings.serving_url)
    _write_record(_served_path(settings), serving_store=store, champion=champion)


def served_champion(settings: Settings) -> tuple[bool, str | None]:
    """(whether the last full publish into this serving store is known, the registered
    version that ranked it: None for popularity, before any champion)."""
    record = _read_record(_served_path(settings), serving_store=_digest(settings.serving_url))
    return record is not None, None if record is None else record.get("champion")


def _served_path(settings: Settings) -> Path:
    return state_path(settings).with_name("served.json")


def _digest(url: str) -> str:
    """A store's URL as kept in these records: a PostgreSQL URL may carry a password."""
    return hashlib.sha256(url.encode()).hexdigest()


def _write_record(path: Path, **record: object) -> None:
    _write_atomically(path, json.dumps(record).encode())


def _read_record(path: Path, **expected: object) -> dict | None:
    """The JSON record at ``path`` if it holds every ``expected`` value; None when it is
    missing, torn, or about another store or stamp."""
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    matches = all(record.get(key) == value for key, value in expected.items())
    return record if matches else None


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file renamed over ``path``: readers see old or new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def read_state(path: Path) -> ServingState:
    """The state saved at ``path``, stamped with the file it was read from (its change time
    and size, taken from the open file: a state saved meanwhile cannot borrow the stamp).
    Raises when the file is missing, unreadable or of another format."""
    with path.open("rb") as handle:
        stamp = _file_stamp(os.fstat(handle.fileno()))
        version, state = pickle.load(handle)
    if version != STATE_FORMAT or not isinstance(state, ServingState):
        raise ValueError(f"serving state {path} has another format")
    return replace(state, stamp=stamp)


def _file_stamp(status: os.stat_result) -> str:
    return f"{status.st_mtime_ns}:{status.st_size}"


def serving_pipeline(path: str) -> tuple[str, RankingPipeline]:
    """(the stamp, the pipeline) of the state at ``path``: what a ranking worker started
    ahead of a refresh loads (ml.pipeline.parallel.WarmPool.preload)."""
    state = read_state(Path(path))
    return state.stamp, state.pipeline


# A warm process (`freshrank refresh --watch`) keeps the last state it read: (path, state).
_memo: tuple[Path, ServingState] | None = None


def load_state(
    settings: Settings,
    champion: str | None,
    connection: duckdb.DuckDBPyConnection,
    name: str = DEFAULT_STATE,
) -> ServingState | None:
    """The saved state if it serves ``champion`` on the warehouse's current catalog, else None
    (and why, in the log)."""
    global _memo
    path = state_path(settings, name)
    try:
        stamp = _file_stamp(path.stat())
    except FileNotFoundError:
        logger.info("no serving state yet: the refresh fits the pipeline on every event")
        return None
    if _memo is not None and _memo[0] == path and _memo[1].stamp == stamp:
        state = _memo[1]
    else:
        try:
            state = read_state(path)
        except Exception as error:  # a torn, foreign or outdated file: refit instead
            logger.warning("serving state %s is unreadable (%s): refitting", path, error)
            return None
        _memo = (path, state)
    if state.champion != champion:
        logger.info(
            "serving state was fitted for champion %s, now %s: refitting", state.champion, champion
        )
        return None
    if state.catalog != catalog_stamp(connection):
        logger.info("the catalog or its text vectors changed since the serving state: refitting")
        return None
    return state
