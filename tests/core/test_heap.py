"""``release_free_heap``: freed heap pages go back to the system (glibc), a no-op elsewhere."""

import sys

import numpy as np
import pytest

from game.core.heap import release_free_heap


def _resident_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_heap_pages_inside_the_heap_go_back_to_the_system():
    # 32 KB arrays live in the heap (below glibc's mmap threshold); every other one stays, so the
    # freed ones lie inside the heap, where free() alone returns nothing.
    blocks = [np.ones(4_000, np.float64) for _ in range(4_000)]  # 128 MB
    kept = blocks[::2]
    del blocks
    before = _resident_mb()
    assert release_free_heap()
    after = _resident_mb()
    assert before - after > 40, (before, after)  # about 64 MB of freed arrays
    assert all(float(b[0]) == 1.0 for b in kept)  # what is still in use is untouched
