"""Which processes a test left running."""

from __future__ import annotations

import time

from ml.distributed.session import descendant_processes


def wait_until_gone(before: dict[int, str], seconds: float = 20.0) -> dict[int, str]:
    """Descendants not in ``before`` still alive after waiting up to ``seconds`` for them."""
    deadline = time.monotonic() + seconds
    while True:
        left = {pid: name for pid, name in descendant_processes().items() if pid not in before}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)
