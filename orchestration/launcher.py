"""The `freshrank` console script: the command line, started and ended for a short-lived process.

Two costs of a Python process are not the command's work, and on the refresh path (`freshrank
ingest` + `freshrank refresh`, issue #11) they were about a fifth of the wall time:

- Garbage collection during start-up. Importing Dagster, dbt and pandas creates hundreds of
  thousands of long-lived objects, and with CPython's default thresholds (700, 10, 10) each full
  collection walks all of them again: a cold refresh spent 1.1 s collecting, most of it in 7 full
  collections. With the youngest generation's threshold at 10,000 it spent 0.3-0.4 s. Arrays,
  frames and query results live outside the collector, so memory does not follow the threshold.
- Tearing the interpreter down at exit: freeing every module and object one by one took 0.6 s
  after an ingest and 1.3 s after a refresh. The command's work is done and durable by then
  (each store commits its own transactions), so once the exit handlers have run and the output is
  flushed, the process ends at once. When another thread is still running (a server), the
  ordinary shutdown runs instead, so nothing is cut short.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import threading

GC_THRESHOLDS = (10_000, 10, 10)  # CPython's default is (700, 10, 10)


def run() -> None:
    """Run the `freshrank` command line, then exit with its status without the teardown."""
    gc.set_threshold(*GC_THRESHOLDS)
    from orchestration.cli import main  # after the thresholds: its imports are the start-up

    try:
        main(standalone_mode=True)  # click ends every command with SystemExit
        code: object = 0
    except SystemExit as stop:
        code = stop.code
    except KeyboardInterrupt:
        code = 130
    exit_now(code)


def exit_now(code: object) -> None:
    """End the process with ``code`` as `sys.exit` would: its exit handlers run and the output
    is flushed, the interpreter's teardown is skipped (unless another thread is running)."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): the message goes to stderr, the status is 1
        print(code, file=sys.stderr)
        status = 1
    if threading.active_count() > 1:
        sys.exit(status)
    atexit._run_exitfuncs()  # noqa: SLF001 - the handlers the skipped teardown would have run
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be written
            pass
    os._exit(status)


if __name__ == "__main__":
    run()
