"""Per-stage peak memory: the sampler sees an allocation inside a window and not outside it."""

from __future__ import annotations

import time

import numpy as np
import pytest

from orchestration.app.memory import MemorySampler, lifetime_peak_bytes, resident_bytes

pytestmark = pytest.mark.skipif(resident_bytes() is None, reason="needs /proc (Linux)")


def test_the_peak_of_a_window_holds_what_was_allocated_in_it() -> None:
    with MemorySampler(interval=0.02) as memory:
        time.sleep(0.1)
        before_end = time.time()
        block_start = time.time()
        block = np.ones(200 * 2**20 // 8)  # 200 MB, touched
        time.sleep(0.15)
        block_end = time.time()
        del block
        time.sleep(0.1)
    quiet = memory.peak_between(block_start - 0.1, before_end)
    busy = memory.peak_between(block_start, block_end)
    assert quiet is not None and busy is not None
    assert busy - quiet > 150 * 2**20
    assert memory.peak_between(None, block_end) is None
    assert memory.peak_between(block_end + 60, block_end + 61) is None
    assert lifetime_peak_bytes() > 150 * 2**20
