"""Under `dagster dev`, a process re-parses the dbt project only if it changed since its parse."""

from __future__ import annotations

import os
from pathlib import Path

from orchestration.warehouse.dbt import manifest_is_current


def _touch(path: Path, mtime: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")
    os.utime(path, (mtime, mtime))


def test_a_manifest_is_current_until_a_project_file_changes(tmp_path: Path) -> None:
    manifest = tmp_path / "target" / "manifest.json"
    assert not manifest_is_current(tmp_path, manifest)  # never parsed
    _touch(tmp_path / "dbt_project.yml", 1_000)
    _touch(tmp_path / "models" / "marts" / "users.sql", 1_000)
    _touch(manifest, 2_000)
    assert manifest_is_current(tmp_path, manifest)
    # Build output and logs written after the parse are not sources of it.
    _touch(tmp_path / "target" / "run_results.json", 3_000)
    _touch(tmp_path / "logs" / "dbt.log", 3_000)
    assert manifest_is_current(tmp_path, manifest)
    _touch(tmp_path / "models" / "marts" / "users.sql", 3_000)  # an edited model
    assert not manifest_is_current(tmp_path, manifest)
