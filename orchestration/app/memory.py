"""Resident memory of this process over a run, so every stage can say what it peaked at.

A run's stages execute one after another in the CLI's process (the in-process executor), so the
peak of a stage is the highest resident size sampled between its start and end. Sampling reads
/proc (Linux); elsewhere only the process's lifetime peak is known and stages show none.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from pathlib import Path
from types import TracebackType

_STATM = Path("/proc/self/statm")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int | None:
    """This process's resident memory now (None where /proc is not there)."""
    try:
        return int(_STATM.read_text().split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return None


def lifetime_peak_bytes() -> int:
    """The highest resident memory this process has had (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class MemorySampler:
    """Samples resident memory every `interval` seconds on a daemon thread while in use."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.samples: list[tuple[float, int]] = []  # (wall-clock seconds, bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            value = resident_bytes()
            if value is not None:
                self.samples.append((time.time(), value))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def peak_between(self, start: float | None, end: float | None) -> int | None:
        """The highest sample taken between two wall-clock times (None: no sample there)."""
        if start is None or end is None:
            return None
        inside = [value for moment, value in self.samples if start <= moment <= end]
        return max(inside) if inside else None
