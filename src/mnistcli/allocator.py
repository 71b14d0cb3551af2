"""Freed memory kept for reuse: glibc's malloc told not to hand a command's working memory back to the kernel.

PyTorch's CPU tensors come from malloc. glibc serves a block above its mmap threshold with fresh pages from the
kernel and unmaps it when it is freed, and hands the top of its heap back once more than the trim threshold is free
there; by its own rule both thresholds start low (128 KiB) and only rise as large blocks come and go. A training
step's activations and gradients are blocks of a few MB, freed and asked for again step after step, and each time
they come back as new pages, which the kernel zeroes and maps one fault at a time. `mnist train cnn-fast
--target-accuracy 0.99` took 397,000 page faults and 1.03 s of system time (5.39 s in all); with blocks up to 32 MiB
(glibc's most) served from the heap and the heap never trimmed, 117,000 and 0.41 s (4.68 s): docs/benchmarks.md,
benchmarks/variants.py. PyTorch's CPU performance guide makes the same point when it suggests jemalloc or
tcmalloc; this is glibc's own switch (`mallopt`), with nothing to install. Every thread shares that one heap:
glibc gives a thread of its own an arena of its own, whose pages fault in anew, and with one data/prefetch.py's
reader gained nothing measurable (docs/benchmarks.md).

What it costs: the process keeps its largest working set until it ends, which for a command is soon. Only where
the C library is glibc (Linux); elsewhere, or if glibc refuses, nothing changes. No torch here.
"""

from __future__ import annotations

import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # mallopt's parameters (glibc's malloc.h)
MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts on a 64-bit machine; larger blocks (the dataset) are mapped
NEVER = -1  # as M_TRIM_THRESHOLD: never trim the heap
ARENAS = 1  # every thread allocates from the one heap kept above (a thread's own arena would fault its pages anew)


def keep_freed_memory() -> bool:
    """Tell glibc to serve blocks up to `MMAP_THRESHOLD` from its heap, never trim it, and give every thread that one
    heap (`ARENAS`); whether it took all three."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)  # the process's own C library
        if not hasattr(libc, "gnu_get_libc_version"):  # musl, say: its mallopt does nothing
            return False
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    taken = [mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD), mallopt(M_TRIM_THRESHOLD, NEVER), mallopt(M_ARENA_MAX, ARENAS)]
    return all(taken)
