"""The console script's quick exit keeps statuses, output and exit handlers; the GC thresholds."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import orchestration
from orchestration.app import launcher


def _run(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return _run("-c", textwrap.dedent(code))


def test_the_console_script_flushes_piped_output_and_keeps_click_statuses() -> None:
    shown = _run("-m", "orchestration.app.launcher", "--help")
    assert shown.returncode == 0, shown.stderr
    assert "freshrank: batch-plus-refresh" in shown.stdout  # block-buffered into a pipe
    misused = _run("-m", "orchestration.app.launcher", "ingest")
    assert misused.returncode == 2  # click's usage error
    assert "give at least one --events or --items file" in misused.stderr


def test_exit_now_runs_exit_handlers_after_the_buffered_output() -> None:
    finished = _python(
        """
        import atexit
        from orchestration.app.launcher import exit_now
        atexit.register(lambda: print("handler ran"))
        print("buffered,", end=" ")
        exit_now(3)
        print("never")
        """
    )
    assert finished.returncode == 3
    assert finished.stdout == "buffered, handler ran\n"


def test_exit_now_with_a_message_prints_it_and_exits_1() -> None:
    finished = _python("from orchestration.app.launcher import exit_now; exit_now('it broke')")
    assert finished.returncode == 1
    assert finished.stderr.strip() == "it broke"


def test_exit_now_waits_for_a_running_thread(tmp_path: Path) -> None:
    done = tmp_path / "done"
    finished = _python(
        f"""
        import threading, time
        from pathlib import Path
        from orchestration.app.launcher import exit_now
        def work():
            time.sleep(0.5)
            Path({str(done)!r}).write_text("finished")
        threading.Thread(target=work).start()
        exit_now(0)
        """
    )
    assert finished.returncode == 0, finished.stderr
    assert done.read_text() == "finished"  # the ordinary shutdown joined the thread


def test_exit_now_skips_the_teardown_beside_a_daemon_thread() -> None:
    """A daemon thread (tqdm's monitor) is left behind, not waited for: the teardown, where an
    object's finaliser would print, never runs."""
    finished = _python(
        """
        import threading, time
        from orchestration.app.launcher import exit_now
        class Noisy:
            def __del__(self):
                print("teardown ran")
        kept = Noisy()
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
        print("before exit")
        exit_now(4)
        """
    )
    assert finished.returncode == 4
    assert finished.stdout == "before exit\n"


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


NICENESS_AFTER = """
    import os, sys
    from click.testing import CliRunner
    from orchestration.app.cli import main
    before = os.nice(0)
    result = CliRunner().invoke(main, [sys.argv[1], "--help"])
    print(os.nice(0) - before, result.exit_code, result.output.strip().splitlines()[-1])
"""


def _niceness_after(command: str, setting: str) -> subprocess.CompletedProcess[str]:
    """`freshrank COMMAND --help` in a child process with FRESHRANK_BATCH_NICE=setting."""
    script = textwrap.dedent(NICENESS_AFTER)
    return _run("-c", script, command, env={**os.environ, "FRESHRANK_BATCH_NICE": setting})


@pytest.mark.parametrize(
    ("command", "setting", "lowered"),
    [("ingest", "7", 7), ("refresh", "", 10), ("serve", "7", 0), ("ingest", "0", 0)],
)
def test_batch_commands_give_way_to_the_api(command: str, setting: str, lowered: int) -> None:
    """Every command but serve lowers its CPU priority by FRESHRANK_BATCH_NICE (default 10)."""
    finished = _niceness_after(command, setting)
    assert finished.returncode == 0, finished.stderr
    change, status, _last_line = finished.stdout.split(maxsplit=2)
    assert (int(change), int(status)) == (lowered, 0)


def test_a_bad_batch_niceness_is_a_clear_error() -> None:
    finished = _niceness_after("ingest", "high")
    change, status, message = finished.stdout.split(maxsplit=2)
    assert (int(change), int(status)) == (0, 1)
    assert "FRESHRANK_BATCH_NICE='high' must be a whole number from 0 to 19" in message
