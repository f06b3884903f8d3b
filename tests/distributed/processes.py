"""Which processes a test left running: this process's descendants, read from /proc (Linux)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def descendants(root: int | None = None) -> dict[int, str]:
    """{pid: command name} of every live descendant of ``root`` (this process by default)."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # the process ended while we looked
        name_end = text.rindex(")")
        fields = text[name_end + 2 :].split()
        if fields[0] == "Z":
            continue  # exited, waiting to be reaped: not running
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        names[pid] = text[text.index("(") + 1 : name_end]
    found: dict[int, str] = {}
    frontier = [root or os.getpid()]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = names[pid]
                frontier.append(pid)
    return found


def wait_until_gone(before: dict[int, str], seconds: float = 20.0) -> dict[int, str]:
    """Descendants not in ``before`` still alive after waiting up to ``seconds`` for them."""
    deadline = time.monotonic() + seconds
    while True:
        left = {pid: name for pid, name in descendants().items() if pid not in before}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)
