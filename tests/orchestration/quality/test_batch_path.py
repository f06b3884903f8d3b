"""A batch's path to the warehouse does not start Great Expectations (seconds of import), yet
its contract checks run and judge what it loaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SNIPPET = """
import sys
from pathlib import Path
from orchestration.ingest.commands import ingest_files
from orchestration.instance import open_instance
from orchestration.settings import get_settings

settings = get_settings()
(result,) = ingest_files(settings, {"events": [Path(sys.argv[1])]})
with open_instance(settings) as instance:
    (run,) = instance.get_runs(limit=1)
    checks = [
        record.dagster_event.event_specific_data
        for record in instance.all_logs(run.run_id)
        if record.dagster_event is not None
        and record.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
events_check = [check for check in checks if check.check_name == "check_raw_events_batch"]
print("loaded", result.rows_loaded)
print("check", events_check[0].passed, events_check[0].metadata["rows_validated"].value)
print("gx imported", "great_expectations" in sys.modules)
"""


def test_ingest_checks_the_batch_without_great_expectations(tmp_path: Path) -> None:
    events = tmp_path / "events.csv"
    events.write_text(
        "user_id,item_id,event_type,timestamp\n"
        "u1,i1,view,2024-01-01T00:00:00Z\nu2,i2,click,2024-01-02T00:00:00Z\n"
    )
    # Only this home: other tests in this process may have set FRESHRANK_* paths (the
    # warehouse's, say), and a file already loaded there would be a duplicate here.
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("FRESHRANK_") and name != "DAGSTER_HOME"
    }
    environment["FRESHRANK_HOME"] = str(tmp_path / "home")
    completed = subprocess.run(
        [sys.executable, "-c", SNIPPET, str(events)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.splitlines()
    assert "loaded 2" in lines
    assert "check True 2" in lines
    assert "gx imported False" in lines
