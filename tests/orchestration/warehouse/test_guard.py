from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestration.warehouse.guard import (
    WarehouseBusy,
    lock_path_for,
    open_warehouse,
    warehouse_held,
    warehouse_writer,
)

HOLD_LOCK = """
import sys, time
from pathlib import Path
from orchestration.warehouse.guard import warehouse_writer
with warehouse_writer(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_second_process_waits_for_the_first(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(warehouse), "1.5"], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    with warehouse_writer(warehouse, timeout_s=30):
        waited = time.monotonic() - started
    holder.wait(timeout=30)
    assert waited > 0.5
    assert lock_path_for(warehouse).exists()


def test_gives_up_with_a_clear_error(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(warehouse), "5"], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    try:
        with (
            pytest.raises(WarehouseBusy, match="stayed locked"),
            warehouse_writer(warehouse, timeout_s=0.3),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()


def test_lock_is_released_after_an_error(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    with pytest.raises(RuntimeError), warehouse_writer(warehouse):
        raise RuntimeError("boom")
    with warehouse_writer(warehouse, timeout_s=0.5):
        pass


ORPHAN = """
import sys, time, duckdb
connection = duckdb.connect(sys.argv[1])  # holds DuckDB's lock, not freshrank's lock file
print("open", flush=True)
time.sleep(float(sys.argv[2]))
connection.close()
"""


def test_a_writer_waits_for_a_process_that_holds_the_file_without_the_lock(
    tmp_path: Path,
) -> None:
    """What a refresh killed mid-dbt leaves: its dbt process still writing, the lock file free."""
    import duckdb

    warehouse = tmp_path / "warehouse.duckdb"
    duckdb.connect(str(warehouse)).close()
    orphan = subprocess.Popen(
        [sys.executable, "-c", ORPHAN, str(warehouse), "3"], stdout=subprocess.PIPE, text=True
    )
    assert orphan.stdout.readline().strip() == "open"
    started = time.monotonic()
    with warehouse_writer(warehouse, timeout_s=60), duckdb.connect(str(warehouse)) as connection:
        connection.execute("create table written as select 1 as x")
    assert orphan.wait(timeout=60) == 0
    assert time.monotonic() - started > 1.0  # it waited for the other process to let go

    holder = subprocess.Popen(
        [sys.executable, "-c", ORPHAN, str(warehouse), "30"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with (
            pytest.raises(WarehouseBusy, match="stayed open in another process"),
            warehouse_writer(warehouse, timeout_s=1),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("read_only", [False, True])
def test_an_opened_connection_waits_for_a_process_that_holds_the_file(
    tmp_path: Path, read_only: bool
) -> None:
    """open_warehouse's own connection waits out DuckDB's lock, read-only or not."""
    import duckdb

    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as connection:
        connection.execute("create table kept as select 7 as x")
    orphan = subprocess.Popen(
        [sys.executable, "-c", ORPHAN, str(warehouse), "2"], stdout=subprocess.PIPE, text=True
    )
    assert orphan.stdout.readline().strip() == "open"
    started = time.monotonic()
    with open_warehouse(warehouse, read_only=read_only, timeout_s=60) as connection:
        assert connection.execute("select x from kept").fetchall() == [(7,)]
    assert orphan.wait(timeout=60) == 0
    assert time.monotonic() - started > 0.5  # it waited for the other process to let go


OPEN_OR_FAIL = """
import sys
from pathlib import Path
from orchestration.warehouse.guard import WarehouseBusy, open_warehouse
try:
    with open_warehouse(Path(sys.argv[1]), read_only=True, timeout_s=0.3) as connection:
        print(connection.execute("select count(*) from t").fetchone()[0])
except WarehouseBusy:
    print("busy")
"""


def test_a_held_warehouse_is_one_open_database_for_this_process_only(tmp_path: Path) -> None:
    import duckdb

    warehouse = tmp_path / "warehouse.duckdb"
    with open_warehouse(warehouse) as connection:
        connection.execute("create table t (x integer)")

    def other_process() -> str:
        command = [sys.executable, "-c", OPEN_OR_FAIL, str(warehouse)]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()

    with warehouse_held(warehouse):
        # Every connection of the block shares the held database: a read-only open (which
        # DuckDB would refuse beside a writable one), a writer, and a plain connect as
        # dbt-duckdb makes it, each seeing what the others wrote.
        with open_warehouse(warehouse) as connection:
            connection.execute("insert into t values (1)")
        with open_warehouse(warehouse, read_only=True) as connection:
            assert connection.execute("select count(*) from t").fetchone() == (1,)
        with warehouse_writer(warehouse, timeout_s=0.5), duckdb.connect(str(warehouse)) as plain:
            plain.execute("insert into t values (2)")
        with warehouse_held(warehouse), open_warehouse(warehouse) as connection:  # nested: no-op
            assert connection.execute("select count(*) from t").fetchone() == (2,)
        assert other_process() == "busy"  # another process waits for the whole block
    assert other_process() == "2"  # released, with what the block wrote
