"""Giving freed memory back to the system between the steps of an analysis (glibc only).

An analysis of a big capture allocates and frees arrays of hundreds of megabytes step after step.
glibc's malloc raises its mmap threshold each time such a block is freed (up to 32 MiB), so the next
big arrays come from the heap, whose freed pages stay in the process: the peak RSS then counts the
garbage of earlier steps (~300 MB of the 10 M-record benchmark's). A fixed threshold keeps big
blocks in their own mappings, returned when freed; `release()` trims what the heap keeps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc

import pyarrow as pa

_M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
MMAP_THRESHOLD = 128 << 10  # blocks this big or bigger get their own mapping (glibc's initial value)


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


@functools.lru_cache(maxsize=1)
def give_back_freed_memory() -> bool:
    """Stop glibc from raising its mmap threshold, and let Arrow allocate through it too (its default
    pool, mimalloc, keeps freed pages for reuse); once per process, False where there is no glibc."""
    libc = _libc()
    if libc is None or not libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD):
        return False
    pa.set_memory_pool(pa.system_memory_pool())
    return True


def release() -> None:
    """Collect garbage and hand the heap's free pages back to the system."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
