"""The console script's start and exit: statuses, output and exit handlers survive the quick exit."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestration import launcher


def _python(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


def test_the_console_script_flushes_piped_output_and_keeps_click_statuses() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "orchestration.launcher", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "freshrank: batch-plus-refresh" in shown.stdout  # block-buffered into a pipe
    misused = subprocess.run(
        [sys.executable, "-m", "orchestration.launcher", "ingest"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert misused.returncode == 2  # click's usage error
    assert "give at least one --events or --items file" in misused.stderr


def test_exit_now_runs_exit_handlers_after_the_buffered_output() -> None:
    finished = _python(
        """
        import atexit
        from orchestration.launcher import exit_now
        atexit.register(lambda: print("handler ran"))
        print("buffered,", end=" ")
        exit_now(3)
        print("never")
        """
    )
    assert finished.returncode == 3
    assert finished.stdout == "buffered, handler ran\n"


def test_exit_now_with_a_message_prints_it_and_exits_1() -> None:
    finished = _python("from orchestration.launcher import exit_now; exit_now('it broke')")
    assert finished.returncode == 1
    assert finished.stderr.strip() == "it broke"


def test_exit_now_waits_for_a_running_thread(tmp_path: Path) -> None:
    done = tmp_path / "done"
    finished = _python(
        f"""
        import threading, time
        from pathlib import Path
        from orchestration.launcher import exit_now
        def work():
            time.sleep(0.5)
            Path({str(done)!r}).write_text("finished")
        threading.Thread(target=work).start()
        exit_now(0)
        """
    )
    assert finished.returncode == 0, finished.stderr
    assert done.read_text() == "finished"  # the ordinary shutdown joined the thread


def test_run_raises_the_collection_threshold_before_the_commands_import(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exits: list[object] = []
    monkeypatch.setattr(launcher, "exit_now", exits.append)
    monkeypatch.setattr(sys, "argv", ["freshrank", "--help"])
    before = gc.get_threshold()
    try:
        launcher.run()
        assert gc.get_threshold() == launcher.GC_THRESHOLDS
    finally:
        gc.set_threshold(*before)
    assert exits == [0]
