"""Keep the memory a labeling call frees for the next call, instead of handing it back to the OS.

A labeling call builds about a hundred arrays the size of its batch (50,000 rows) or of its
candles (265,000 rows): 0.4-2 MB each. glibc's malloc serves such sizes with mmap, or from the
top of the heap which it trims when more than a few MB lie free there, so a call can hand that
memory back and the next one fault each page in again. Repeated calls on the data of
benchmarks/bench_labeling.py (50,000 insights, 265,000 candles) took 2,700 to 11,800 page
faults each, depending on what the process had allocated before, and up to ~40 ms of system
time (a quarter of the call). Raising the mmap and trim thresholds keeps those pages in the
process: from the second call on, almost no faults, for ~55 MB more resident memory.

The setting is process-wide (malloc is shared), made once, on glibc only, and turned off with
AUTOPSY_KEEP_FREED_MEMORY=0.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# blocks up to 32 MB come from the heap (glibc's own ceiling for its adaptive threshold), and
# the heap is trimmed only when 128 MB lie free at its top
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 128 * 2**20

_done = False


def keep_freed_memory() -> bool:
    """Set the thresholds once per process; True when they are (or were already) set."""
    global _done
    if _done:
        return True
    if os.environ.get("AUTOPSY_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith(
        "linux"
    ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    return _done
