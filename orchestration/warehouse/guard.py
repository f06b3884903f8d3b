"""One writer at a time: a lock file beside the DuckDB warehouse.

DuckDB admits one process per database file, and Dagster's run-queue limits do not cover runs
started in-process (the CLI, tests). Every step that opens the warehouse for writing takes this
lock, whichever way its run was started, so a typed `freshrank refresh` and a sensor-triggered run
wait for each other instead of failing with "Could not set lock on file".

The lock file is not enough on its own: a run killed in the middle of `dbt build` leaves its dbt
process writing (the lock died with its parent), so a writer also waits until DuckDB's own lock
on the file is free.

A process that runs many short steps against the warehouse (the warm refresher) may hold it for
a block (`warehouse_held`): the lock file, and one open database that every connection of the
block shares, since opening the file anew reads its catalog each time.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

logger = logging.getLogger("freshrank.warehouse")


class WarehouseBusy(TimeoutError):
    """Another run held the warehouse for longer than we were willing to wait."""


# Warehouses this process holds (warehouse_held): absolute path -> the connection that keeps
# the database open.
_held: dict[str, duckdb.DuckDBPyConnection] = {}


def _key(warehouse_path: Path) -> str:
    return os.path.abspath(warehouse_path)


@contextmanager
def warehouse_held(warehouse_path: Path, timeout_s: float = 600.0) -> Iterator[None]:
    """Hold the warehouse for this process during the block: its lock file for the whole block,
    and one open database that every connection made meanwhile shares (open_warehouse's, and
    dbt-duckdb's, whose plain connect DuckDB answers from the open database) instead of opening
    the file again: 16-19 ms each on the MovieLens warehouse, about a dozen times in a refresh.
    A read-only open_warehouse inside the block gets a connection of that writable database
    (DuckDB admits one configuration per file and process). Other processes wait for the block
    as for any writer; it must not be held across a wait for another process's work. Does
    nothing when the warehouse does not exist yet or is held already."""
    key = _key(warehouse_path)
    if key in _held or not warehouse_path.exists():
        yield
        return
    with _writer_lock(warehouse_path, timeout_s) as deadline:
        _held[key] = _connect_when_free(warehouse_path, deadline, timeout_s)
        try:
            yield
        finally:
            _held.pop(key).close()


def lock_path_for(warehouse_path: Path) -> Path:
    return warehouse_path.with_name(warehouse_path.name + ".lock")


@contextmanager
def warehouse_writer(warehouse_path: Path, timeout_s: float = 600.0) -> Iterator[None]:
    """Hold the warehouse's writer lock for the duration of the block."""
    with _writer_lock(warehouse_path, timeout_s) as deadline:
        if warehouse_path.exists():
            _connect_when_free(warehouse_path, deadline, timeout_s).close()
        yield


@contextmanager
def open_warehouse(
    warehouse_path: Path, read_only: bool = False, timeout_s: float = 600.0
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived DuckDB connection, opened under the writer lock and closed on exit (in a
    warehouse_held block, a connection of the held database)."""
    with _writer_lock(warehouse_path, timeout_s) as deadline:
        held = _held.get(_key(warehouse_path))
        if held is not None:
            connection = held.cursor()
        else:
            # The connection itself waits for DuckDB's lock: no probe connection first.
            connection = _connect_when_free(warehouse_path, deadline, timeout_s, read_only)
        with connection:
            yield connection


@contextmanager
def _writer_lock(warehouse_path: Path, timeout_s: float) -> Iterator[float]:
    """Hold the lock file; yields the deadline for whatever else the writer waits for. In a
    warehouse_held block this process holds it already (a second lock on the file from this
    process would wait for the first)."""
    if _key(warehouse_path) in _held:
        yield time.monotonic() + timeout_s
        return
    lock_file = lock_path_for(warehouse_path)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+") as handle:
        deadline = time.monotonic() + timeout_s
        announced = False
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not announced:
                    logger.info("waiting for another run to release %s", lock_file)
                    announced = True
                if time.monotonic() > deadline:
                    raise WarehouseBusy(
                        f"the warehouse {warehouse_path} stayed locked by another run for "
                        f"{timeout_s:.0f} s (lock file {lock_file})"
                    ) from None
                time.sleep(0.1)
        try:
            yield deadline
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _connect_when_free(
    warehouse_path: Path, deadline: float, timeout_s: float, read_only: bool = False
) -> duckdb.DuckDBPyConnection:
    """A connection, once no other process holds DuckDB's lock on the file (say, an orphaned
    dbt build)."""
    announced = False
    while True:
        try:
            return duckdb.connect(str(warehouse_path), read_only=read_only)
        except duckdb.IOException as error:
            if "lock" not in str(error).lower():
                raise
            if not announced:
                logger.info("waiting for another process to release %s: %s", warehouse_path, error)
                announced = True
            if time.monotonic() > deadline:
                raise WarehouseBusy(
                    f"the warehouse {warehouse_path} stayed open in another process for "
                    f"{timeout_s:.0f} s: {error}"
                ) from None
            time.sleep(0.2)
