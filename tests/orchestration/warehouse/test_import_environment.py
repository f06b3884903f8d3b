"""Loading the code location reads no deployment into the environment: the settings decide."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Loads the definitions (the dbt assets among them), then moves to another deployment.
PROBE = """
import os, sys
import orchestration.definitions
from orchestration.settings import Settings
print(os.environ.get("FRESHRANK_WAREHOUSE_PATH", "unset"))
os.environ["FRESHRANK_HOME"] = sys.argv[1]
print(Settings.from_env().warehouse_path)
"""


def test_loading_the_definitions_leaves_the_warehouse_path_to_the_settings(tmp_path: Path) -> None:
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in ("FRESHRANK_WAREHOUSE_PATH", "DAGSTER_HOME")
    }
    environment["FRESHRANK_HOME"] = str(tmp_path / "first")
    shown = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "second")],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert shown[0] == "unset"
    # Had the import set the variable, the second deployment would open the first's warehouse.
    assert shown[1] == str(tmp_path / "second" / "warehouse.duckdb")
