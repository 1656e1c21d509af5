"""Hand freed heap memory back to the operating system after a large one-off pass.

Why: glibc's malloc keeps the pages of freed small and medium allocations for reuse, so a
process that once held many of them keeps their resident memory. The trunk pass over 50,000
images left the app's heap at about 717 MB that it never used again (issue 17, where the whole
path must stay under 8 GB). ``malloc_trim(0)`` returns the free pages, at the top of the heap and
inside it. Elsewhere (Windows, macOS, musl) there is no such call and nothing happens.
"""

from __future__ import annotations

import ctypes
import sys
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _glibc() -> Any:
    """glibc's handle, or None where the C library is another or has no ``malloc_trim``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols, glibc's among them (no ldconfig run)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return libc


def release_free_heap() -> bool:
    """Return the heap's free pages to the system; True when there was something to return
    (glibc says so), False when nothing was or the platform has no such call."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
