"""The `freshrank` console script: the command line, ended as a short-lived process should be.

Tearing the interpreter down at exit, freeing every module and object one by one, took 0.6 s
after a `freshrank ingest` and 1.3 s after a `freshrank refresh`: on the refresh path (issue #11)
more than a tenth of the wall time. The command's work is done and durable by then (each store
commits its own transactions), so once the exit handlers have run and the output is flushed,
the process ends at once. When another thread is still running (a server), the ordinary shutdown
runs instead, so nothing is cut short. Daemon threads (tqdm's monitor, left by the embedding
job's progress bar) do not count, as the interpreter never waits for them either: counting them
had sent every first build through the teardown, where DuckDB's bindings printed some forty
lines of nanobind "leaked instance" warnings. (The other start-up cost, garbage collection
during the imports, is the package's: see orchestration/__init__.py.)
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading


def run() -> None:
    """Run the `freshrank` command line, then exit with its status without the teardown."""
    from orchestration.app.cli import main

    try:
        main(standalone_mode=True)  # click ends every command with SystemExit
        code: object = 0
    except SystemExit as stop:
        code = stop.code
    except KeyboardInterrupt:
        code = 130
    exit_now(code)


def yield_cpu_to_serving(niceness: int) -> None:
    """Run this process (and the processes it starts) ``niceness`` steps below the default CPU
    priority: batch work (ingest, refresh, builds, the daemon's runs) then takes the cores only
    when `freshrank serve` does not need them. On a 2-core machine a refresh beside the API
    had pushed the reads' p99 from 6.7 ms to 22 ms; at niceness 10 they kept 9 ms, and the
    refresh took as long (benchmarks/README.md, session 19). 0 changes nothing."""
    if niceness > 0:
        os.nice(niceness)


def exit_now(code: object) -> None:
    """End the process with ``code`` as `sys.exit` would: its exit handlers run and the output
    is flushed, the interpreter's teardown is skipped (unless another thread is running)."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): the message goes to stderr, the status is 1
        sys.stderr.write(f"{code}\n")
        status = 1
    if _running_threads():
        sys.exit(status)
    atexit._run_exitfuncs()  # noqa: SLF001 - the handlers the skipped teardown would have run
    for stream in (sys.stdout, sys.stderr):
        # A closed pipe or stream: nothing more can be written anyway.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


def _running_threads() -> bool:
    """Whether a thread the interpreter's shutdown would wait for is still running."""
    main = threading.main_thread()
    return any(thread is not main and not thread.daemon for thread in threading.enumerate())


if __name__ == "__main__":
    run()
