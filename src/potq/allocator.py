"""Keep freed memory in the process for reuse (glibc): potq's hot loops allocate tensors of tens of MB.

By default glibc serves every block above its mmap threshold (at most 32 MB, adjusted as it goes) from
fresh pages that the kernel zero-fills on first touch, and returns them on free: each batch of an
evaluation or a training step then pays page faults for memory it had a moment ago. Raising the mmap
and trim thresholds lets freed blocks be reused. Measured on the 2-core machine, in one process each way
(benchmarks/RESULTS.md, section 8): `seed`'s FP32 test-set evaluation about 30% faster, verify about
20%, a training step 10-15%. The cost: the process keeps its peak memory until it exits, which a
command-line run does soon anyway. Elsewhere (another C library, another system) this does nothing.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD_BYTES = 1 << 30  # blocks below 1 GiB come from the reusable heap
TRIM_THRESHOLD_BYTES = (1 << 31) - 1  # never hand the heap's free top back to the kernel


def retain_freed_memory() -> bool:
    """Set glibc's thresholds for this process; whether it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
