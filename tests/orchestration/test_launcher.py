"""The console script's quick exit keeps statuses, output and exit handlers; the GC thresholds."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import orchestration
from orchestration import launcher


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *command], capture_output=True, text=True, timeout=120, check=False
    )


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return _run("-c", textwrap.dedent(code))


def test_the_console_script_flushes_piped_output_and_keeps_click_statuses() -> None:
    shown = _run("-m", "orchestration.launcher", "--help")
    assert shown.returncode == 0, shown.stderr
    assert "freshrank: batch-plus-refresh" in shown.stdout  # block-buffered into a pipe
    misused = _run("-m", "orchestration.launcher", "ingest")
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


def test_run_exits_with_the_commands_status(monkeypatch: pytest.MonkeyPatch) -> None:
    exits: list[object] = []
    monkeypatch.setattr(launcher, "exit_now", exits.append)
    monkeypatch.setattr(sys, "argv", ["freshrank", "ingest"])
    launcher.run()
    assert exits == [2]  # a usage error, as click's own exit would give


def test_importing_the_package_raises_the_collection_threshold() -> None:
    shown = _python("import gc, orchestration; print(*gc.get_threshold())")
    assert shown.returncode == 0, shown.stderr
    assert tuple(map(int, shown.stdout.split())) == orchestration.GC_THRESHOLDS != (700, 10, 10)
