"""Keep freed memory in the process, so that a training step's large CPU tensors reuse it.

glibc hands every allocation above ``M_MMAP_THRESHOLD`` (at most 32 MB) its own fresh ``mmap``
and gives it back to the kernel on ``free``. A paper-size training step allocates and frees
hundreds of such tensors (a 64 x 128 x 112 x 112 activation is 411 MB), so each step the kernel
maps, faults in and zeroes gigabytes of pages again. That time lands in whichever operator first
touches the new memory: profiled on this project's 2-core machine, a ``fill_`` of StemConv2d's
padding took 316 ms and the first batch norm 465 ms; with the memory kept, 25 ms and 122 ms,
and the whole ``paper``/pixels step went from about 10.9 s to 9.5 s (see docs/performance.md).

:func:`retain_freed_memory` asks glibc, through ``mallopt``, to serve large blocks from its heap
(``M_MMAP_MAX = 0``) and never to trim freed memory back to the kernel (``M_TRIM_THRESHOLD =
-1``, which glibc documents as "disables trimming completely"). After a warm-up step or two a
``paper`` pixel step then takes no page faults and almost no system time (measured with
``getrusage``: 0 minor faults and 0.01 s of system time, against about 23,000 faults and 3.0 s).
The process's resident size then stays at its peak (about 1.4x higher on the ``paper`` pixel
step: 5.3 GB instead of 3.7 GB), which is the price. The Trainer calls it when it
trains on the CPU (``TrainConfig.retain_memory``); elsewhere it is a no-op returning False.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

__all__ = ["retain_freed_memory"]

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4          # glibc's mallopt parameter numbers (malloc.h)
_applied = False


def retain_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse; True if the setting is (already) in force.
    ``FILMLIB_RETAIN_MEMORY=0`` in the environment opts out."""
    global _applied
    if _applied:
        return True
    if os.environ.get("FILMLIB_RETAIN_MEMORY", "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success, 0 on error
    _applied = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, -1))
    return _applied
